package presence

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The engine options of version 2, the file store and the history and
// operator calls, on the manual clock.

func TestEngineOptionsV2(t *testing.T) {
	d := DefaultEngineOptions()
	if d.MaxSignalsPerDevicePerSec != 20 || d.MemoryBudgetBytes != 0 || d.FileDir != "" ||
		d.FileSync != FileSyncEveryWrite || d.FileSyncIntervalMs != 100 {
		t.Fatalf("defaults %+v", d)
	}
	clock, err := NewManualClock(start)
	must(t, err)
	defer clock.Close()

	// Flood limit: 3 per device per second.
	o := DefaultEngineOptions()
	o.Clock = clock
	o.MaxSignalsPerDevicePerSec = 3
	e, err := NewEngine(&o)
	must(t, err)
	h, err := e.Connect(sig("alice", "pc", 1))
	must(t, err)
	must(t, e.Beat(h, ActivityActive, SourceApp))
	must(t, e.Beat(h, ActivityActive, SourceApp))
	wantErr(t, e.Beat(h, ActivityActive, SourceApp), ResourceExhausted)
	must(t, clock.Advance(1000))
	must(t, e.Beat(h, ActivityActive, SourceApp))
	e.Close()

	// Memory budget: one user with one device.
	o = DefaultEngineOptions()
	o.Clock = clock
	o.MemoryBudgetBytes = 192
	e, err = NewEngine(&o)
	must(t, err)
	defer e.Close()
	must(t, e.Signal(sig("alice", "pc", 1)))
	wantErr(t, e.Signal(sig("bob", "pc", 1)), ResourceExhausted, "memory budget")
	must(t, e.Signal(sig("alice", "pc", 1)))

	// Values out of range.
	for name, change := range map[string]func(*EngineOptions){
		"flood":    func(o *EngineOptions) { o.MaxSignalsPerDevicePerSec = 70000 },
		"budget":   func(o *EngineOptions) { o.MemoryBudgetBytes = -1 },
		"sync":     func(o *EngineOptions) { o.FileSync = 0 },
		"sync4":    func(o *EngineOptions) { o.FileSync = 4 },
		"nul":      func(o *EngineOptions) { o.FileDir = "/tmp/a\x00b" },
		"interval": func(o *EngineOptions) { o.FileDir, o.FileSync, o.FileSyncIntervalMs = "/tmp/x", FileSyncInterval, 0 },
	} {
		o := DefaultEngineOptions()
		change(&o)
		if _, err := NewEngine(&o); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: got %v, want InvalidArgument", name, err)
		}
	}
}

func fileEngine(t *testing.T, clock *ManualClock, dir string) (*Engine, error) {
	t.Helper()
	o := DefaultEngineOptions()
	o.Clock = clock
	o.MinDwellMs = 0
	o.FileDir = dir
	return NewEngine(&o)
}

// newFileWorld is a world whose engine has a file store in a fresh folder,
// closed when the test ends.
func newFileWorld(t *testing.T) *world {
	t.Helper()
	clock, err := NewManualClock(start)
	must(t, err)
	t.Cleanup(func() { clock.Close() })
	w := &world{t: t, clock: clock}
	w.engine, err = fileEngine(t, clock, t.TempDir())
	must(t, err)
	t.Cleanup(func() { w.engine.Close() })
	return w
}

func TestFileStoreRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	clock, err := NewManualClock(start)
	must(t, err)
	defer clock.Close()
	w := &world{t: t, clock: clock}
	w.engine, err = fileEngine(t, clock, dir)
	must(t, err)
	_, err = w.engine.Connect(sig("alice", "laptop", 1))
	must(t, err)
	if n := w.step(100); n != 1 {
		t.Fatalf("published %d", n)
	}
	// The folder is held: a second engine gets a clear error.
	_, err = fileEngine(t, clock, dir)
	wantErr(t, err, FailedPrecondition, "cannot open the file store in "+dir, "locked")
	text, err := w.engine.Metrics()
	must(t, err)
	if !strings.Contains(text, "presence_file_store_") {
		t.Error("no file store metrics")
	}
	w.engine.Close()

	must(t, clock.Advance(100))
	w.engine, err = fileEngine(t, clock, dir)
	must(t, err)
	defer w.engine.Close()
	if p := w.get("alice", ""); !p.Known || p.State != StateOnline || p.LastSeenMs != start {
		t.Errorf("after a restart: %+v", p)
	}
	got, err := w.engine.History("alice", 0, math.MaxInt64, "alice")
	must(t, err)
	if len(got) != 1 || got[0].State != StateOnline || got[0].Cause != CauseSignal {
		t.Errorf("history %+v", got)
	}

	// A path that is a file is no folder.
	file := filepath.Join(filepath.Dir(dir), "file")
	must(t, os.WriteFile(file, nil, 0o600))
	_, err = fileEngine(t, clock, file)
	wantErr(t, err, FailedPrecondition, file, "not a directory")
}

func TestHistoryAndOperations(t *testing.T) {
	w := newFileWorld(t)
	e := w.engine

	s := sig("alice", "pc", 1)
	s.TraceID = 77
	h, err := e.Connect(s)
	must(t, err)
	w.step(100)
	w.step(1900)
	must(t, e.Beat(h, ActivityIdle, SourceApp))
	w.step(100)
	w.step(1900)
	must(t, e.Disconnect(h, DisconnectClean))
	w.step(100)
	w.step(1000) // now start + 5100

	tr, err := e.History("alice", 0, math.MaxInt64, "alice")
	must(t, err)
	if len(tr) != 3 || tr[0].State != StateOnline || tr[1].State != StateAway ||
		tr[2].State != StateOffline || tr[0].Previous != StateOffline ||
		tr[0].Cause != CauseSignal || tr[0].TraceID != 77 || tr[0].AtMs != start+100 ||
		tr[2].Cause != CauseDisconnect {
		t.Fatalf("history %+v", tr)
	}
	tr, err = e.History("alice", start+1000, start+3000, "alice")
	must(t, err)
	if len(tr) != 1 || tr[0].State != StateAway {
		t.Errorf("window %+v", tr)
	}
	if tr, err := e.History("nobody", 0, 1, "nobody"); err != nil || tr != nil {
		t.Errorf("nobody: %v %v", tr, err)
	}
	d, err := e.TimeInStates("alice", start, start+6100, "alice")
	must(t, err)
	if d != (StateDurations{OnlineMs: 2000, AwayMs: 2000, OfflineMs: 1100}) {
		t.Errorf("time in states %+v", d)
	}
	_, err = e.TimeInStates("alice", 10, 1, "alice")
	wantErr(t, err, InvalidArgument, "from_ms is after to_ms")
	if last, err := e.LastSeen("alice", "alice"); err != nil || last != start+2000 {
		t.Errorf("last seen %d %v", last, err)
	}
	_, err = e.LastSeen("nobody", "nobody")
	wantErr(t, err, NotFound)

	for _, u := range []string{"g1", "g2", "g3"} {
		s := sig(u, "pc", 1)
		s.Gateway = "gw-a"
		must(t, e.Signal(s))
	}
	w.step(100)
	for _, want := range []int{2, 1, 0} {
		if n, err := e.DrainGateway("gw-a", 2); err != nil || n != want {
			t.Errorf("drain: %d %v, want %d", n, err, want)
		}
	}
	_, err = e.DrainGateway("gw-b", 2)
	wantErr(t, err, NotFound)
	_, err = e.DrainGateway("gw-a", 0)
	wantErr(t, err, InvalidArgument, "max_devices")
	_, err = e.DrainGateway("gw-a", -1)
	wantErr(t, err, InvalidArgument)

	_, err = e.Connect(sig("carol", "pc", 1))
	must(t, err)
	w.step(100)
	must(t, e.Rebuild())
	if w.get("carol", "").State != StateOnline {
		t.Error("carol after a rebuild")
	}
	must(t, e.Erase("carol"))
	if w.get("carol", "").Known {
		t.Error("carol after erase")
	}
	_, err = e.LastSeen("carol", "carol")
	wantErr(t, err, NotFound)
	w.step(100)
	must(t, e.Rebuild())
	if w.get("carol", "").Known {
		t.Error("carol came back")
	}
}

func TestDeviceHistory(t *testing.T) {
	w := newFileWorld(t)
	e := w.engine

	// Connects at start, disconnects abruptly at start+100 (the grace
	// begins), and its grace of 1500 ms ends without a reconnect: the tick at
	// start+1700 finds it dead.
	s := sig("alice", "pc", 3)
	s.Platform = PlatformMobile
	h, err := e.Connect(s)
	must(t, err)
	w.step(100)
	must(t, e.Disconnect(h, DisconnectAbrupt))
	w.step(100)
	w.step(1500)
	got, err := e.DeviceHistory("alice", "pc", 0, math.MaxInt64, "alice")
	must(t, err)
	want := []DeviceTransition{{start, 3, DeviceConnect, PlatformMobile},
		{start + 100, 3, DeviceGrace, PlatformMobile},
		{start + 1700, 3, DeviceDeadAfterGrace, PlatformMobile}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("device history %+v, want %+v", got, want)
	}
	if got[2].Event.String() != "dead_after_grace" {
		t.Errorf("event name %q", got[2].Event.String())
	}
	got, err = e.DeviceHistory("alice", "pc", start+1, start+100, "alice")
	must(t, err)
	if len(got) != 1 || got[0].Event != DeviceGrace {
		t.Errorf("window %+v", got)
	}
	if got, err := e.DeviceHistory("alice", "phone", 0, 1, "alice"); err != nil || got != nil {
		t.Errorf("unknown device: %v %v", got, err)
	}
	// Only alice reads it; anyone else, or no viewer, is refused alike
	// whether or not the user exists.
	for _, viewer := range []string{"", "bob"} {
		for _, user := range []string{"alice", "nobody"} {
			got, err := e.DeviceHistory(user, "pc", 0, math.MaxInt64, viewer)
			wantErr(t, err, PermissionDenied, "only its user's own")
			if got != nil {
				t.Errorf("%s read by %q: %+v", user, viewer, got)
			}
		}
	}
	_, err = e.DeviceHistory("alice", "", 0, 1, "alice")
	wantErr(t, err, InvalidArgument)
	_, err = e.DeviceHistory("alice", "pc", 10, 1, "alice")
	wantErr(t, err, InvalidArgument, "from_ms is after to_ms")
	// Erase takes it with the user.
	must(t, e.Erase("alice"))
	if got, err := e.DeviceHistory("alice", "pc", 0, math.MaxInt64, "alice"); err != nil || got != nil {
		t.Errorf("after erase: %v %v", got, err)
	}
}

func TestMemoryEngineHasNoHistory(t *testing.T) {
	w := newWorld(t)
	e := w.engine
	must(t, e.Signal(sig("alice", "pc", 1)))
	w.step(100)
	_, err := e.History("alice", 0, math.MaxInt64, "alice")
	wantErr(t, err, FailedPrecondition, "no history store")
	_, err = e.DeviceHistory("alice", "pc", 0, math.MaxInt64, "alice")
	wantErr(t, err, FailedPrecondition, "no history store")
	_, err = e.TimeInStates("alice", 0, 1, "alice")
	wantErr(t, err, FailedPrecondition)
	if last, err := e.LastSeen("alice", "alice"); err != nil || last != start {
		t.Errorf("last seen %d %v", last, err)
	}
	must(t, e.Rebuild())
	if w.get("alice", "").Known {
		t.Error("a memory engine rebuilt from nothing still knows alice")
	}

	// Bad ids.
	long := strings.Repeat("u", MaxUserIDBytes+1)
	for _, bad := range []string{"", long} {
		_, err = e.History(bad, 0, 1, "")
		wantErr(t, err, InvalidArgument)
		_, err = e.TimeInStates(bad, 0, 1, "")
		wantErr(t, err, InvalidArgument)
		_, err = e.LastSeen(bad, "")
		wantErr(t, err, InvalidArgument)
		wantErr(t, e.Erase(bad), InvalidArgument)
		_, err = e.DrainGateway(bad, 1)
		wantErr(t, err, InvalidArgument)
	}

	// Closed.
	e.Close()
	_, err = e.History("alice", 0, 1, "alice")
	if !errors.Is(err, ErrClosed) {
		t.Errorf("history after close: %v", err)
	}
	if err := e.Rebuild(); !errors.Is(err, ErrClosed) {
		t.Errorf("rebuild after close: %v", err)
	}
}

func TestEveryStatusCodeHasASentinel(t *testing.T) {
	for code, sentinel := range map[Code]*Error{
		Cancelled: ErrCancelled, Unknown: ErrUnknown, InvalidArgument: ErrInvalidArgument,
		DeadlineExceeded: ErrDeadlineExceeded, NotFound: ErrNotFound,
		AlreadyExists: ErrAlreadyExists, PermissionDenied: ErrPermissionDenied,
		ResourceExhausted: ErrResourceExhausted, FailedPrecondition: ErrFailedPrecondition,
		Aborted: ErrAborted, OutOfRange: ErrOutOfRange, Unimplemented: ErrUnimplemented,
		Internal: ErrInternal, Unavailable: ErrUnavailable, DataLoss: ErrDataLoss,
		Unauthenticated: ErrUnauthenticated,
	} {
		err := &Error{Code: code, Message: "m"}
		if !errors.Is(err, sentinel) || sentinel.Code != code {
			t.Errorf("%v: sentinel %v", code, sentinel)
		}
		if code.String() == "UNKNOWN" && code != Unknown {
			t.Errorf("code %d has no name", int(code))
		}
	}
	if Unavailable != 14 || DataLoss != 15 || PermissionDenied != 7 || Unavailable.String() != "UNAVAILABLE" ||
		DataLoss.String() != "DATA_LOSS" {
		t.Error("codes are absl's numbers and names")
	}
}
