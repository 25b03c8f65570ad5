package presence

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"strings"
	"testing"
)

func TestVersionAndCodes(t *testing.T) {
	if Version() != HeaderVersion || VersionNumber() != HeaderVersionNumber {
		t.Fatalf("library %s (%d), headers %s (%d)", Version(), VersionNumber(), HeaderVersion, HeaderVersionNumber)
	}
	for code, name := range map[Code]string{OK: "OK", InvalidArgument: "INVALID_ARGUMENT",
		NotFound: "NOT_FOUND", ResourceExhausted: "RESOURCE_EXHAUSTED",
		FailedPrecondition: "FAILED_PRECONDITION", Internal: "INTERNAL", Code(12345): "UNKNOWN"} {
		if code.String() != name {
			t.Errorf("Code(%d).String() = %q, want %q", code, code.String(), name)
		}
	}
	err := error(&Error{Code: NotFound, Message: "device handle 7"})
	if !errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalidArgument) || errors.Is(err, ErrClosed) {
		t.Error("errors.Is does not follow the code")
	}
	if err.Error() != "presence: NOT_FOUND: device handle 7" {
		t.Errorf("Error() = %q", err.Error())
	}
}

func TestOptionsDefaults(t *testing.T) {
	o := DefaultEngineOptions()
	if o.AppIntervalMs != 1000 || o.AppOfflineAfterMs != 4000 || o.ReconnectGraceMs != 1500 ||
		o.MinDwellMs != 1000 || o.MaxDevicesPerUser != 64 || o.MaxOverridesPerUser != 16 ||
		o.InferredCanBeOnline || !o.OverrideRequiresLiveDevice || o.Clock != nil {
		t.Errorf("engine defaults: %+v", o)
	}
	f := DefaultFanoutOptions()
	if f.FlushIntervalMs != 100 || f.MaxBatch != 1024 || f.RatePerSec != 50 || f.ResumeWindow != 64 {
		t.Errorf("fan-out defaults: %+v", f)
	}
}

func TestClock(t *testing.T) {
	c, err := NewManualClock(5000)
	must(t, err)
	defer c.Close()
	must(t, c.Advance(250))
	if now, _ := c.Now(); now != 5250 {
		t.Fatalf("now %d", now)
	}
	must(t, c.Set(9000))
	wantErr(t, c.Set(8999), InvalidArgument, "never goes back")
	wantErr(t, c.Advance(-1), InvalidArgument)
	if now, _ := c.Now(); now != 9000 {
		t.Fatalf("failed calls moved the clock: %d", now)
	}
}

func TestEngineLifecycle(t *testing.T) {
	// nil options: the system clock.
	e, err := NewEngine(nil)
	must(t, err)
	now, err := e.Now()
	must(t, err)
	if now < 1_500_000_000_000 {
		t.Errorf("system clock reads %d", now)
	}
	must(t, e.Close())

	// Options out of range: a typed error and no engine.
	o := DefaultEngineOptions()
	o.AppIntervalMs = 0
	e, err = NewEngine(&o)
	wantErr(t, err, InvalidArgument, "interval_ms")
	if e != nil {
		t.Fatal("an engine came back with the error")
	}
	o = DefaultEngineOptions()
	o.Shards = 1000
	_, err = NewEngine(&o)
	wantErr(t, err, InvalidArgument, "shards")

	// The clock closed before the engine: the engine holds its own reference.
	c, err := NewManualClock(42000)
	must(t, err)
	o = DefaultEngineOptions()
	o.Clock = c
	e, err = NewEngine(&o)
	must(t, err)
	must(t, c.Advance(8000))
	must(t, c.Close())
	if now, err := e.Now(); err != nil || now != 50000 {
		t.Fatalf("now %d, %v", now, err)
	}
	must(t, e.Close())

	// A closed clock cannot make an engine.
	o.Clock = c
	_, err = NewEngine(&o)
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("engine over a closed clock: %v", err)
	}
}

func TestSignalsSingleAndBatch(t *testing.T) {
	w := newWorld(t)
	e := w.engine
	s := sig("alice", "laptop", 2)
	must(t, e.Signal(s))
	if n := w.step(100); n != 1 {
		t.Fatalf("published %d", n)
	}
	p := w.get("alice", "")
	if !p.Known || p.State != StateOnline || p.LiveDevices != 1 || p.Devices.Web != 1 {
		t.Fatalf("alice: %+v", p)
	}

	// Stale: an older session.
	s.SessionID = 1
	err := e.Signal(s)
	wantErr(t, err, FailedPrecondition)
	if !errors.Is(err, ErrFailedPrecondition) {
		t.Fatal("errors.Is(stale, ErrFailedPrecondition) is false")
	}
	// Idle makes alice away.
	s.SessionID, s.Activity = 2, ActivityIdle
	must(t, e.Signal(s))
	w.step(100)
	if st := w.get("alice", "").State; st != StateAway {
		t.Fatalf("alice %v", st)
	}

	// A batch, all applied, in one call; zero enums take the defaults.
	r, err := e.SignalBatch([]Signal{
		{UserID: "bob", DeviceID: "phone", SessionID: 1, Platform: PlatformMobile},
		{UserID: "carol", DeviceID: "desk", SessionID: 1, Platform: PlatformDesktop, Gateway: "gw-1", TraceID: 77},
		sig("alice", "laptop", 2),
		{UserID: "dan", DeviceID: "box", SessionID: 1}, // platform other, app, active
	})
	must(t, err)
	if r != (BatchResult{Applied: 4}) {
		t.Fatalf("batch %+v", r)
	}
	if n := w.step(100); n != 4 {
		t.Fatalf("published %d", n)
	}
	if p := w.get("bob", ""); p.Devices.Mobile != 1 || p.State != StateOnline {
		t.Fatalf("bob %+v", p)
	}
	if p := w.get("dan", ""); p.Devices.Other != 1 || p.State != StateOnline {
		t.Fatalf("dan %+v", p)
	}

	// Bad signals among good ones: good ones applied, first failure answered.
	r, err = e.SignalBatch([]Signal{
		sig("dave", "tv", 1),
		{UserID: "erin", DeviceID: "tab", SessionID: 1, Platform: 9}, // invalid enum
		{UserID: "", DeviceID: "pc", SessionID: 1},                   // empty id
		sig("alice", "laptop", 1),                                    // stale
		{UserID: "gina", DeviceID: "pc", SessionID: 1, Source: 1000},
		sig("ivan", "pc", 0), // session 0
		sig("judy", "pc", 1),
	})
	wantErr(t, err, InvalidArgument, "platform")
	if r != (BatchResult{Applied: 2, Stale: 1, Rejected: 4}) {
		t.Fatalf("batch %+v", r)
	}
	w.step(100)
	if w.get("dave", "").State != StateOnline || w.get("judy", "").State != StateOnline ||
		w.get("erin", "").Known || w.get("gina", "").Known {
		t.Fatal("the batch applied the wrong signals")
	}
	// Only stale ones.
	r, err = e.SignalBatch([]Signal{sig("alice", "laptop", 1)})
	wantErr(t, err, FailedPrecondition)
	if r.Stale != 1 {
		t.Fatalf("batch %+v", r)
	}
	// Empty batch.
	if r, err := e.SignalBatch(nil); err != nil || r != (BatchResult{}) {
		t.Fatalf("empty batch: %+v %v", r, err)
	}

	// Ids are bytes: a NUL inside is fine.
	must(t, e.Signal(sig("n\x00l", "pc", 1)))
	if p := w.get("n\x00l", ""); !p.Known || p.UserID != "n\x00l" {
		t.Fatalf("NUL id: %+v", p)
	}
	// From the future, beyond the skew.
	s = sig("nia", "pc", 1)
	s.TimestampMs = start + 10_000_000
	wantErr(t, e.Signal(s), InvalidArgument, "ahead")

	// Keyed disconnect.
	must(t, e.DisconnectDevice("bob", "phone", 0, DisconnectClean))
	w.step(100)
	if w.get("bob", "").State != StateOffline {
		t.Fatal("bob still online")
	}
	wantErr(t, e.DisconnectDevice("bob", "phone", 0, DisconnectClean), NotFound)
	wantErr(t, e.DisconnectDevice("carol", "desk", 0, 3), InvalidArgument, "disconnect kind")
}

func TestHandles(t *testing.T) {
	w := newWorld(t)
	e := w.engine
	h, err := e.Connect(sig("alice", "laptop", 1))
	must(t, err)
	if h == 0 {
		t.Fatal("handle 0")
	}
	w.step(100)
	for i := 0; i < 10; i++ { // beats keep it live past offline_after (4 s)
		must(t, e.Beat(h, ActivityActive, SourceApp))
		w.step(1000)
	}
	if w.get("alice", "").State != StateOnline {
		t.Fatal("alice not online")
	}
	must(t, e.Beat(h, ActivityIdle, SourceManual))
	w.step(100)
	if w.get("alice", "").State != StateAway {
		t.Fatal("alice not away")
	}
	must(t, e.Beat(h, ActivityActive, SourceManual))

	// Bad values on the hot path.
	wantErr(t, e.Beat(h, 0, SourceApp), InvalidArgument, "activity")
	wantErr(t, e.Beat(h, ActivityActive, 4), InvalidArgument, "source")
	wantErr(t, e.Beat(h, 257, SourceApp), InvalidArgument, "257")
	wantErr(t, e.Beat(h, ActivityActive, math.MinInt32), InvalidArgument)
	wantErr(t, e.Beat(0, ActivityActive, SourceApp), NotFound)
	wantErr(t, e.Beat(0xdeadbeefdeadbeef, ActivityActive, SourceApp), NotFound)

	// Abrupt disconnect, then a reconnect inside the grace: still online.
	must(t, e.Disconnect(h, DisconnectAbrupt))
	w.step(1000)
	if w.get("alice", "").State != StateOnline {
		t.Fatal("alice dropped inside the grace")
	}
	h2, err := e.Connect(sig("alice", "laptop", 2))
	must(t, err)
	w.step(2000)
	if w.get("alice", "").State != StateOnline {
		t.Fatal("alice offline after the reconnect")
	}
	wantErr(t, e.Beat(h, ActivityActive, SourceApp), NotFound) // the old handle
	wantErr(t, e.Disconnect(h2, 0), InvalidArgument)
	must(t, e.Disconnect(h2, DisconnectClean))
	wantErr(t, e.Disconnect(h2, DisconnectClean), NotFound)
	w.step(100)
	if p := w.get("alice", ""); p.State != StateOffline || p.LiveDevices != 0 || p.FreshnessMs < 100 {
		t.Fatalf("alice %+v", p)
	}
	// Connect on bad input answers like Signal, with handle 0.
	h, err = e.Connect(sig("alice", "laptop", 0))
	wantErr(t, err, InvalidArgument, "session_id")
	if h != 0 {
		t.Fatal("a handle with the error")
	}
}

func TestOverrides(t *testing.T) {
	w := newWorld(t)
	e := w.engine
	_, err := e.Connect(sig("alice", "laptop", 1))
	must(t, err)
	w.step(100)
	now, err := e.Now()
	must(t, err)

	dnd, err := e.SetOverride("alice", OverrideDND, 0, 7)
	must(t, err)
	// Get is exact at once; GetPublished follows the ticks.
	if w.get("alice", "").State != StateDND {
		t.Fatal("Get does not see DND")
	}
	pub, err := e.GetPublished([]string{"alice"}, "")
	must(t, err)
	if pub[0].State != StateOnline {
		t.Fatalf("published %v before the tick", pub[0].State)
	}
	w.step(100)
	pub, _ = e.GetPublished([]string{"alice"}, "")
	if pub[0].State != StateDND || pub[0].Version == 0 {
		t.Fatalf("published %+v", pub[0])
	}

	// Invisible, timed: others see offline, alice sees herself.
	inv, err := e.SetOverride("alice", OverrideInvisible, now+60000, 0)
	must(t, err)
	w.step(100)
	if p := w.get("alice", "bob"); p.State != StateOffline || p.HasOverride || p.LiveDevices != 0 {
		t.Fatalf("bob sees %+v", p)
	}
	if p := w.get("alice", "alice"); p.State == StateOffline || p.OverrideState != OverrideInvisible ||
		p.OverrideUntilMs != now+60000 {
		t.Fatalf("alice sees %+v", p)
	}
	list, err := e.ListOverrides("alice")
	must(t, err)
	if len(list) != 2 || list[0].ID != dnd || list[0].State != OverrideDND || list[1].ID != inv ||
		list[1].UntilMs != now+60000 || list[1].SetAtMs < now {
		t.Fatalf("overrides %+v", list)
	}

	must(t, e.RevokeOverride("alice", inv))
	wantErr(t, e.RevokeOverride("alice", inv), NotFound)
	w.step(100)
	if w.get("alice", "bob").State != StateDND {
		t.Fatal("DND does not show again")
	}
	n, err := e.ClearOverrides("alice")
	must(t, err)
	if n != 1 {
		t.Fatalf("cleared %d", n)
	}
	_, err = e.SetOverride("alice", OverrideAway, 0, 0)
	must(t, err)
	_, err = e.SetOverride("bob", OverrideOnline, 0, 0)
	must(t, err)
	n, err = e.RevokeOverridesSetBetween(0, math.MaxInt64)
	must(t, err)
	if n != 2 {
		t.Fatalf("bulk revoked %d", n)
	}
	if list, err := e.ListOverrides("alice"); err != nil || list != nil {
		t.Fatalf("overrides left: %+v %v", list, err)
	}

	// Bad input.
	_, err = e.SetOverride("alice", 0, 0, 0)
	wantErr(t, err, InvalidArgument)
	id, err := e.SetOverride("alice", 5, 0, 0)
	wantErr(t, err, InvalidArgument, "override state")
	if id != 0 {
		t.Fatal("an id with the error")
	}
	_, err = e.SetOverride("alice", OverrideDND, 1, 0) // ends in the past
	wantErr(t, err, InvalidArgument)
	_, err = e.SetOverride("", OverrideDND, 0, 0)
	wantErr(t, err, InvalidArgument)
}

func TestGet(t *testing.T) {
	w := newWorld(t)
	e := w.engine
	_, err := e.Connect(sig("alice", "laptop", 1))
	must(t, err)
	_, err = e.Connect(Signal{UserID: "bob", DeviceID: "phone", SessionID: 1, Platform: PlatformMobile, Activity: ActivityIdle})
	must(t, err)
	w.step(100)

	got, err := e.Get([]string{"bob", "nobody", "", strings.Repeat("x", MaxUserIDBytes+1), "alice"}, "")
	must(t, err)
	if len(got) != 5 {
		t.Fatalf("%d answers", len(got))
	}
	if b := got[0]; b.UserID != "bob" || !b.Known || b.State != StateAway || b.Devices.Mobile != 1 ||
		b.LiveDevices != 1 || b.Version == 0 || b.LastSeenMs != start || b.FreshnessMs != 100 {
		t.Errorf("bob %+v", b)
	}
	if n := got[1]; n.Known || n.State != StateOffline || n.UserID != "nobody" {
		t.Errorf("nobody %+v", n)
	}
	if got[2].Known || got[2].UserID != "" || got[3].Known || got[3].UserID != "" {
		t.Errorf("invalid ids: %+v %+v", got[2], got[3])
	}
	if a := got[4]; !a.Known || a.State != StateOnline || a.UserID != "alice" || a.HasOverride || a.OverrideState != 0 {
		t.Errorf("alice %+v", a)
	}
	if got, err := e.Get(nil, ""); err != nil || len(got) != 0 {
		t.Errorf("no ids: %v %v", got, err)
	}
	// A viewer id longer than MaxUserIDBytes is bad input, like any id.
	_, err = e.Get([]string{"alice"}, strings.Repeat("v", MaxUserIDBytes+1))
	wantErr(t, err, InvalidArgument, "viewer_user_id is 129 bytes")
}

func TestTickOnManualClock(t *testing.T) {
	w := newWorld(t)
	e := w.engine
	_, err := e.Connect(sig("alice", "laptop", 1))
	must(t, err)
	if n := w.step(0); n != 1 {
		t.Fatalf("published %d", n)
	}
	if n := w.step(100); n != 0 {
		t.Fatalf("published %d with nothing new", n)
	}
	// No beats: the app source lapses after 4 s, and alice goes offline.
	w.step(3800)
	if w.get("alice", "").State != StateOnline {
		t.Fatal("alice offline too soon")
	}
	total := 0
	for i := 0; i < 20; i++ {
		total += w.step(100)
	}
	if total != 1 || w.get("alice", "").State != StateOffline {
		t.Fatalf("published %d, alice %v", total, w.get("alice", "").State)
	}
	// Now follows the clock.
	now, _ := e.Now()
	cnow, _ := w.clock.Now()
	if now != cnow || now != start+3900+2000 {
		t.Fatalf("engine now %d, clock %d", now, cnow)
	}
}

func TestBeatMany(t *testing.T) {
	w := newWorld(t)
	e := w.engine
	hs := connectUsers(t, e, 600, "web")
	w.step(100)
	for i := 0; i < 6; i++ { // past offline_after: only the batches keep them live
		r, err := e.BeatMany(hs, ActivityActive, SourceApp)
		must(t, err)
		if r != (BatchResult{Applied: 600}) {
			t.Fatalf("BeatMany: %+v", r)
		}
		w.step(1000)
	}
	if w.get("user-599", "").State != StateOnline {
		t.Fatal("user-599 not online")
	}
	_, err := e.BeatMany(hs[:2], ActivityIdle, SourceManual)
	must(t, err)
	w.step(100)
	if w.get("user-1", "").State != StateAway {
		t.Fatal("user-1 not away")
	}
	must(t, e.Disconnect(hs[0], DisconnectClean))
	r, err := e.BeatMany([]Handle{hs[1], hs[0], 0, hs[2]}, ActivityActive, SourceApp)
	wantErr(t, err, NotFound)
	if r != (BatchResult{Applied: 2, Rejected: 2}) {
		t.Fatalf("BeatMany with closed handles: %+v", r)
	}
	r, err = e.BeatMany(hs[1:3], 9, SourceApp)
	wantErr(t, err, InvalidArgument, "activity")
	if r != (BatchResult{Rejected: 2}) {
		t.Fatalf("BeatMany with an unknown activity: %+v", r)
	}
	r, err = e.BeatMany(nil, ActivityActive, SourceApp)
	if err != nil || r != (BatchResult{}) {
		t.Fatalf("BeatMany(nil): %+v %v", r, err)
	}
	e.Close()
	_, err = e.BeatMany(hs, ActivityActive, SourceApp)
	if err == nil {
		t.Fatal("BeatMany on a closed engine succeeded")
	}
}

func TestBeatAllocatesNothing(t *testing.T) {
	w := newWorld(t)
	var handles []Handle
	for i := 0; i < 101; i++ {
		h, err := w.engine.Connect(sig(fmt.Sprintf("u%d", i), "pc", 1))
		must(t, err)
		handles = append(handles, h)
	}
	next := 0
	allocs := testing.AllocsPerRun(100, func() {
		if err := w.engine.Beat(handles[next], ActivityActive, SourceApp); err != nil {
			t.Fatal(err)
		}
		next++
	})
	if allocs != 0 {
		t.Fatalf("Beat allocates %.1f times per call", allocs)
	}
}

func TestSignalRateLimit(t *testing.T) {
	// The default flood limit (20 signals per device per second) applies
	// to beats too; TestEngineOptionsV2 sets another.
	w := newWorld(t)
	h, err := w.engine.Connect(sig("alice", "laptop", 1))
	must(t, err)
	var last error
	for i := 0; i < 25 && last == nil; i++ {
		last = w.engine.Beat(h, ActivityActive, SourceApp)
	}
	wantErr(t, last, ResourceExhausted, "signals-per-second")
	if !errors.Is(last, ErrResourceExhausted) {
		t.Fatal("errors.Is(ErrResourceExhausted)")
	}
	w.step(1000) // a new second on the engine's clock
	must(t, w.engine.Beat(h, ActivityActive, SourceApp))
}

func TestMetrics(t *testing.T) {
	w := newWorld(t)
	_, err := w.engine.Connect(sig("alice", "laptop", 1))
	must(t, err)
	w.step(100)
	m, err := w.engine.Metrics()
	must(t, err)
	if !strings.Contains(m, "# TYPE") || !strings.Contains(m, "presence_") {
		t.Fatalf("engine metrics:\n%.500s", m)
	}
	f, err := NewFanout(w.engine, nil)
	must(t, err)
	defer f.Close()
	fm, err := f.Metrics()
	must(t, err)
	if !strings.Contains(fm, "# TYPE") {
		t.Fatalf("fan-out metrics:\n%.500s", fm)
	}
}

func TestClosedHandles(t *testing.T) {
	c, err := NewManualClock(start)
	must(t, err)
	o := DefaultEngineOptions()
	o.Clock = c
	e, err := NewEngine(&o)
	must(t, err)
	f, err := NewFanout(e, nil)
	must(t, err)
	sub, err := f.Subscribe(nil)
	must(t, err)
	h, err := e.Connect(sig("alice", "laptop", 1))
	must(t, err)

	// Close in an odd order, twice each: idempotent, never a crash.
	for i := 0; i < 2; i++ {
		must(t, e.Close())
		must(t, c.Close())
	}
	// The fan-out still holds the C engine.
	must(t, f.AddUsers(sub, "alice"))
	must(t, f.Close())
	must(t, f.Close())

	closed := []error{
		e.Beat(h, ActivityActive, SourceApp),
		e.Signal(sig("a", "b", 1)),
		e.Disconnect(h, DisconnectClean),
		e.DisconnectDevice("a", "b", 0, DisconnectClean),
		e.RevokeOverride("a", 1),
		c.Advance(1),
		c.Set(start + 1),
		f.AddUsers(sub, "alice"),
		f.Join(sub, "t"),
		f.Unsubscribe(sub),
		f.Resume(sub, 0),
	}
	_, err = e.Connect(sig("a", "b", 1))
	closed = append(closed, err)
	_, err = e.SignalBatch([]Signal{sig("a", "b", 1)})
	closed = append(closed, err)
	_, err = e.Tick()
	closed = append(closed, err)
	_, err = e.Get([]string{"a"}, "")
	closed = append(closed, err)
	_, err = e.SetOverride("a", OverrideDND, 0, 0)
	closed = append(closed, err)
	_, err = e.ListOverrides("a")
	closed = append(closed, err)
	_, err = e.Metrics()
	closed = append(closed, err)
	_, err = e.Now()
	closed = append(closed, err)
	_, err = c.Now()
	closed = append(closed, err)
	_, err = f.Poll(sub)
	closed = append(closed, err)
	_, err = f.Subscribe(nil)
	closed = append(closed, err)
	_, err = f.Metrics()
	closed = append(closed, err)
	_, err = NewFanout(e, nil)
	closed = append(closed, err)
	for i, err := range closed {
		if !errors.Is(err, ErrClosed) || !errors.Is(err, ErrFailedPrecondition) {
			t.Errorf("call %d on a closed handle: %v", i, err)
		}
		wantErr(t, err, FailedPrecondition, "closed")
	}
}

func TestBadInput(t *testing.T) {
	w := newWorld(t)
	e := w.engine
	wantErr(t, e.Signal(Signal{DeviceID: "pc", SessionID: 1}), InvalidArgument, "user_id")
	wantErr(t, e.Signal(Signal{UserID: "a", SessionID: 1}), InvalidArgument, "device_id")
	wantErr(t, e.Signal(Signal{UserID: strings.Repeat("u", MaxUserIDBytes+1), DeviceID: "pc", SessionID: 1}), InvalidArgument)
	wantErr(t, e.Signal(Signal{UserID: "a", DeviceID: "pc", SessionID: 1, Gateway: strings.Repeat("g", MaxGatewayBytes+1)}), InvalidArgument)
	wantErr(t, e.Signal(Signal{UserID: "a", DeviceID: "pc", SessionID: 1, Platform: -1}), InvalidArgument, "platform")
	wantErr(t, e.Signal(Signal{UserID: "a", DeviceID: "pc", SessionID: 1, Activity: 3}), InvalidArgument)
	wantErr(t, e.Signal(Signal{UserID: "a", DeviceID: "pc", SessionID: 1, Source: math.MaxInt32}), InvalidArgument)
	_, err := e.SetOverride("a", OverrideDND, 0, 0)
	must(t, err)
	wantErr(t, e.RevokeOverride("", 1), InvalidArgument)
	_, err = e.ClearOverrides("")
	wantErr(t, err, InvalidArgument)
	_, err = e.ListOverrides(strings.Repeat("u", MaxUserIDBytes+1))
	wantErr(t, err, InvalidArgument)
	wantErr(t, e.DisconnectDevice("", "", 0, DisconnectClean), InvalidArgument)
	// Fan-out options out of range.
	fo := DefaultFanoutOptions()
	fo.MaxBatch = 0
	_, err = NewFanout(e, &fo)
	wantErr(t, err, InvalidArgument, "max_batch")
	fo.MaxBatch = -1
	_, err = NewFanout(e, &fo)
	wantErr(t, err, InvalidArgument, "negative")
	// A finalizer only as a safety net: an engine dropped without Close is
	// released by the collector, with no crash.
	for i := 0; i < 10; i++ {
		c, _ := NewManualClock(start)
		o := DefaultEngineOptions()
		o.Clock = c
		x, err := NewEngine(&o)
		must(t, err)
		f, err := NewFanout(x, nil)
		must(t, err)
		_, err = f.Subscribe(&SubscriberOptions{Sink: func(SubscriberID, []byte) {}})
		must(t, err)
	}
	runtime.GC()
	runtime.GC()
}
