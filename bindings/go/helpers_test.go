package presence

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

const start = int64(1_000_000)

// world is an engine on a manual clock with no dwell, so that every change
// publishes at the next tick.
type world struct {
	t      *testing.T
	clock  *ManualClock
	engine *Engine
}

func newWorld(t *testing.T) *world { return newWorldWith(t, nil) }

// newWorldWith is newWorld with its engine options changed by tune first.
func newWorldWith(t *testing.T, tune func(*EngineOptions)) *world {
	t.Helper()
	clock, err := NewManualClock(start)
	if err != nil {
		t.Fatal(err)
	}
	o := DefaultEngineOptions()
	o.Clock = clock
	o.MinDwellMs = 0
	if tune != nil {
		tune(&o)
	}
	e, err := NewEngine(&o)
	if err != nil {
		clock.Close()
		t.Fatal(err)
	}
	w := &world{t: t, clock: clock, engine: e}
	t.Cleanup(func() {
		e.Close()
		clock.Close()
	})
	return w
}

// step advances the clock and ticks; it returns the changes published.
func (w *world) step(ms int64) int {
	w.t.Helper()
	if err := w.clock.Advance(ms); err != nil {
		w.t.Fatal(err)
	}
	n, err := w.engine.Tick()
	if err != nil {
		w.t.Fatal(err)
	}
	return n
}

func (w *world) get(user, viewer string) UserPresence {
	w.t.Helper()
	got, err := w.engine.Get([]string{user}, viewer)
	if err != nil {
		w.t.Fatal(err)
	}
	return got[0]
}

func sig(user, device string, session uint64) Signal {
	return Signal{UserID: user, DeviceID: device, SessionID: session, Platform: PlatformWeb}
}

// connectUsers connects one device of each of the users "user-0" to
// "user-<n-1>" and returns their handles, in that order.
func connectUsers(t *testing.T, e *Engine, n int, device string) []Handle {
	t.Helper()
	handles := make([]Handle, n)
	for i := range handles {
		h, err := e.Connect(sig(fmt.Sprintf("user-%d", i), device, 1))
		must(t, err)
		handles[i] = h
	}
	return handles
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// wantErr checks that err is an *Error with code and a message holding
// every part of contains.
func wantErr(t *testing.T, err error, code Code, contains ...string) {
	t.Helper()
	var pe *Error
	if !errors.As(err, &pe) {
		t.Fatalf("got %v (%T), want a *presence.Error with code %v", err, err, code)
	}
	if pe.Code != code {
		t.Fatalf("got %v, want code %v", err, code)
	}
	if pe.Message == "" {
		t.Fatalf("got %v: no message", err)
	}
	for _, c := range contains {
		if !strings.Contains(pe.Message, c) {
			t.Fatalf("got %q, want a message containing %q", pe.Message, c)
		}
	}
}

// stateIn is the state a batch carries for user in topic ("" for the list):
// 0 when absent, -1 when removed.
func stateIn(d *DiffBatch, user, topic string) State {
	users := d.Users
	if topic != "" {
		users = nil
		for _, t := range d.Topics {
			if t.Topic == topic {
				users = append(users, t.Users...)
			}
		}
	}
	for _, u := range users {
		if u.UserID == user {
			if u.Removed {
				return -1
			}
			return u.State
		}
	}
	return 0
}
