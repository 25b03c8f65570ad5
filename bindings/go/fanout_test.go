package presence

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
)

func noThrottle() *FanoutOptions {
	o := DefaultFanoutOptions()
	o.RatePerSec = 0
	return &o
}

func TestFanoutPollTopicsResume(t *testing.T) {
	w := newWorld(t)
	e := w.engine
	f, err := NewFanout(e, noThrottle())
	must(t, err)
	defer f.Close()
	_, err = e.Connect(sig("alice", "laptop", 1))
	must(t, err)
	_, err = e.Connect(sig("carol", "desk", 1))
	must(t, err)
	w.step(100)

	sub, err := f.Subscribe(&SubscriberOptions{OwnerUserID: "bob"})
	must(t, err)
	must(t, f.AddUsers(sub, "alice", "dave"))
	if d, err := f.Poll(sub); err != nil || d != nil {
		t.Fatalf("a batch before any tick: %+v %v", d, err)
	}
	w.step(100)
	d, err := f.Poll(sub)
	must(t, err)
	if d == nil || !d.Snapshot || d.Sequence != 1 || d.SubscriberID != sub ||
		stateIn(d, "alice", "") != StateOnline || stateIn(d, "dave", "") != 0 {
		t.Fatalf("snapshot %+v (dave was never published: not in it)", d)
	}
	if len(d.Users) != 1 || d.Users[0].Devices.Web != 1 {
		t.Fatalf("users %+v", d.Users)
	}
	if d, _ := f.Poll(sub); d != nil {
		t.Fatalf("a second batch %+v", d)
	}

	// A topic.
	must(t, f.AddMembers("team-1", "alice", "carol", "erin"))
	must(t, f.Join(sub, "team-1"))
	w.step(100)
	d, err = f.Poll(sub)
	must(t, err)
	if d == nil || d.Snapshot || d.Sequence != 2 || len(d.Topics) != 1 || d.Topics[0].Topic != "team-1" ||
		!d.Topics[0].Full || stateIn(d, "carol", "team-1") != StateOnline || stateIn(d, "erin", "team-1") != 0 {
		t.Fatalf("topic batch %+v", d)
	}

	// A change: alice goes DND; the list and the topic both carry it.
	_, err = e.SetOverride("alice", OverrideDND, 0, 0)
	must(t, err)
	w.step(100)
	d, err = f.Poll(sub)
	must(t, err)
	if d == nil || d.Sequence != 3 || stateIn(d, "alice", "") != StateDND ||
		stateIn(d, "alice", "team-1") != StateDND || stateIn(d, "carol", "team-1") != 0 {
		t.Fatalf("diff %+v", d)
	}

	// Resume from cursor 1: batches 2 and 3 again, same numbers; raw bytes
	// decode the same.
	must(t, f.Resume(sub, 1))
	raw, err := f.PollRaw(sub)
	must(t, err)
	d2, err := DecodeDiffBatch(raw)
	must(t, err)
	if d2.Sequence != 2 {
		t.Fatalf("resumed %+v", d2)
	}
	d3, err := f.Poll(sub)
	must(t, err)
	if d3 == nil || d3.Sequence != 3 || stateIn(d3, "alice", "") != StateDND {
		t.Fatalf("resumed %+v", d3)
	}
	if raw, err := f.PollRaw(sub); raw != nil || err != nil {
		t.Fatalf("more after resume: %v %v", raw, err)
	}
	wantErr(t, f.Resume(sub, 99), InvalidArgument, "future")

	// Remove, replace, leave.
	must(t, f.RemoveUsers(sub, "dave"))
	must(t, f.ReplaceUsers(sub, "carol"))
	must(t, f.Leave(sub, "team-1"))
	wantErr(t, f.Leave(sub, "team-1"), NotFound)
	w.step(100)
	d, err = f.Poll(sub)
	must(t, err)
	if d == nil || stateIn(d, "carol", "") != StateOnline || stateIn(d, "alice", "") != -1 || stateIn(d, "dave", "") != -1 {
		t.Fatalf("after replace %+v", d)
	}
	left := false
	for _, s := range d.Topics {
		left = left || (s.Topic == "team-1" && s.Left)
	}
	if !left {
		t.Fatalf("no left section: %+v", d.Topics)
	}
	must(t, f.RemoveMembers("team-1", "erin"))
	must(t, f.ReplaceMembers("team-1", "alice"))
	wantErr(t, f.Join(sub, "team-9"), NotFound, "team-9")
	wantErr(t, f.RemoveMembers("team-9", "alice"), NotFound)

	// A plain subscriber sees the public view.
	sub2, err := f.Subscribe(nil)
	must(t, err)
	if sub2 == sub || sub2 == 0 {
		t.Fatalf("subscriber ids %d %d", sub, sub2)
	}
	must(t, f.AddUsers(sub2, "alice"))
	w.step(100)
	if d, _ := f.Poll(sub2); d == nil || !d.Snapshot || stateIn(d, "alice", "") != StateDND {
		t.Fatalf("plain subscriber %+v", d)
	}

	// Unsubscribe: gone.
	must(t, f.Unsubscribe(sub))
	wantErr(t, f.Unsubscribe(sub), NotFound)
	_, err = f.Poll(sub)
	wantErr(t, err, NotFound)
	wantErr(t, f.AddUsers(sub, "alice"), NotFound)
	wantErr(t, f.Resume(sub, 0), NotFound)

	// Limits.
	small := DefaultFanoutOptions()
	small.MaxSubscribers, small.MaxListUsers = 1, 1
	sf, err := NewFanout(e, &small)
	must(t, err)
	defer sf.Close()
	a, err := sf.Subscribe(nil)
	must(t, err)
	_, err = sf.Subscribe(nil)
	wantErr(t, err, ResourceExhausted)
	err = sf.AddUsers(a, "alice", "carol")
	wantErr(t, err, ResourceExhausted)
	if !errors.Is(err, ErrResourceExhausted) {
		t.Fatal("errors.Is(ErrResourceExhausted)")
	}
	// Bad ids in lists.
	wantErr(t, f.AddUsers(sub2, "alice", ""), InvalidArgument, "empty")
	wantErr(t, f.AddMembers("", "alice"), InvalidArgument)
	wantErr(t, f.Join(sub2, strings.Repeat("t", MaxTopicBytes+1)), InvalidArgument)
}

type recorder struct {
	mu      sync.Mutex
	batches []*DiffBatch
	subs    []SubscriberID
}

func (r *recorder) sink(t *testing.T) Sink {
	return func(sub SubscriberID, batch []byte) {
		d, err := DecodeDiffBatch(batch)
		if err != nil {
			t.Errorf("sink: %v", err)
			return
		}
		r.mu.Lock()
		r.batches = append(r.batches, d)
		r.subs = append(r.subs, sub)
		r.mu.Unlock()
	}
}

func (r *recorder) take() []*DiffBatch {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.batches
	r.batches = nil
	return b
}

func TestPushSink(t *testing.T) {
	w := newWorld(t)
	e := w.engine
	f, err := NewFanout(e, noThrottle())
	must(t, err)
	defer f.Close()
	_, err = e.Connect(sig("alice", "laptop", 1))
	must(t, err)
	w.step(100)

	var rec recorder
	sub, err := f.Subscribe(&SubscriberOptions{Sink: rec.sink(t)})
	must(t, err)
	must(t, f.AddUsers(sub, "alice", "bob"))
	w.step(100)
	got := rec.take()
	if len(got) != 1 || !got[0].Snapshot || got[0].Sequence != 1 || got[0].SubscriberID != sub ||
		stateIn(got[0], "alice", "") != StateOnline || stateIn(got[0], "bob", "") != 0 {
		t.Fatalf("push snapshot %+v", got)
	}
	if rec.subs[0] != sub {
		t.Fatalf("sink called for %d", rec.subs[0])
	}
	// Poll on a push subscriber is a precondition failure.
	_, err = f.Poll(sub)
	wantErr(t, err, FailedPrecondition)

	// Changes arrive in order.
	_, err = e.Connect(sig("bob", "phone", 1))
	must(t, err)
	w.step(100)
	_, err = e.SetOverride("alice", OverrideDND, 0, 0)
	must(t, err)
	w.step(100)
	got = rec.take()
	if len(got) != 2 || got[0].Sequence != 2 || stateIn(got[0], "bob", "") != StateOnline ||
		got[1].Sequence != 3 || stateIn(got[1], "alice", "") != StateDND {
		t.Fatalf("push diffs %+v", got)
	}
	// Resume delivers on this goroutine before returning.
	must(t, f.Resume(sub, 2))
	if got = rec.take(); len(got) != 1 || got[0].Sequence != 3 {
		t.Fatalf("resume %+v", got)
	}

	// Inside a sink: Tick answers FailedPrecondition; Unsubscribe of itself works.
	var tickErr, unsubErr error
	calls := 0
	self, err := f.Subscribe(&SubscriberOptions{Sink: func(s SubscriberID, _ []byte) {
		calls++
		_, tickErr = e.Tick()
		unsubErr = f.Unsubscribe(s)
	}})
	must(t, err)
	must(t, f.AddUsers(self, "alice"))
	w.step(100)
	if calls != 1 {
		t.Fatalf("%d calls", calls)
	}
	wantErr(t, tickErr, FailedPrecondition)
	must(t, unsubErr)
	_, err = e.SetOverride("alice", OverrideAway, 0, 0)
	must(t, err)
	w.step(100)
	if calls != 1 {
		t.Fatalf("a batch after unsubscribe: %d calls", calls)
	}
	wantErr(t, f.Unsubscribe(self), NotFound)

	// A panicking sink: recovered, and the next Tick says so.
	boom, err := f.Subscribe(&SubscriberOptions{Sink: func(SubscriberID, []byte) { panic("boom") }})
	must(t, err)
	must(t, f.AddUsers(boom, "alice"))
	must(t, w.clock.Advance(100))
	_, err = e.Tick()
	wantErr(t, err, Internal, "panicked", "boom")
	if n, err := e.Tick(); err != nil || n != 0 {
		t.Fatalf("the panic was reported twice: %d %v", n, err)
	}
	// The other subscriber was served all along: alice away, then online.
	must(t, f.Unsubscribe(boom))
	_, err = e.ClearOverrides("alice")
	must(t, err)
	w.step(100)
	got = rec.take()
	if len(got) != 2 || stateIn(got[0], "alice", "") != StateAway || stateIn(got[1], "alice", "") != StateOnline {
		t.Fatalf("the other subscriber got %+v", got)
	}
}

func TestPushSinkReleased(t *testing.T) {
	w := newWorld(t)
	base := liveSinks.Load()
	f, err := NewFanout(w.engine, nil)
	must(t, err)
	var subs []SubscriberID
	for i := 0; i < 5; i++ {
		sub, err := f.Subscribe(&SubscriberOptions{Sink: func(SubscriberID, []byte) {}})
		must(t, err)
		subs = append(subs, sub)
	}
	if n := liveSinks.Load() - base; n != 5 {
		t.Fatalf("%d sinks held", n)
	}
	must(t, f.Unsubscribe(subs[0])) // released at once
	if n := liveSinks.Load() - base; n != 4 {
		t.Fatalf("%d sinks held after unsubscribe", n)
	}
	// A failed subscribe releases its handle too.
	_, err = f.Subscribe(&SubscriberOptions{OwnerUserID: strings.Repeat("o", MaxUserIDBytes+1), Sink: func(SubscriberID, []byte) {}})
	wantErr(t, err, InvalidArgument, "owner_user_id")
	must(t, f.Close()) // releases the rest
	if n := liveSinks.Load() - base; n != 0 {
		t.Fatalf("%d sinks held after Close", n)
	}
	_, err = f.Subscribe(&SubscriberOptions{Sink: func(SubscriberID, []byte) {}})
	if !errors.Is(err, ErrClosed) {
		t.Fatal(err)
	}
	if n := liveSinks.Load() - base; n != 0 {
		t.Fatalf("%d sinks held after a subscribe on a closed fan-out", n)
	}
}

func TestConcurrentBeats(t *testing.T) {
	// Heartbeats from many goroutines at once on one engine, with ticks in
	// between. Each device beats below the flood limit (20 signals per
	// second of the engine's clock, the connect included).
	w := newWorld(t)
	e := w.engine
	handles := connectUsers(t, e, 8, "pc")
	for round := 0; round < 5; round++ {
		var wg sync.WaitGroup
		for _, h := range handles {
			wg.Add(1)
			go func(h Handle) {
				defer wg.Done()
				for i := 0; i < 15; i++ {
					if err := e.Beat(h, ActivityActive, SourceApp); err != nil {
						t.Error(err)
						return
					}
				}
			}(h)
		}
		wg.Wait()
		w.step(1000)
	}
	for i := range handles {
		if st := w.get(fmt.Sprintf("user-%d", i), "").State; st != StateOnline {
			t.Errorf("user-%d %v", i, st)
		}
	}
}
