package presence

/*
#include "presence/c.h"
*/
import "C"

import (
	"runtime"
	"sync/atomic"
)

// ManualClock is a clock that moves only when the host moves it
// (presence_clock_t), for tests and simulations. An engine created without
// one uses the system clock.
//
// Every method may be called from any goroutine at once, except Close. An
// engine created with the clock holds its own reference, so the clock may be
// closed at any time.
type ManualClock struct {
	p atomic.Pointer[C.presence_clock_t]
}

// NewManualClock creates a manual clock that reads startMs.
func NewManualClock(startMs int64) (*ManualClock, error) {
	var p *C.presence_clock_t
	var msg *C.char
	if err := status(C.presence_clock_manual_new(&p, C.int64_t(startMs), &msg), msg); err != nil {
		return nil, err
	}
	c := &ManualClock{}
	c.p.Store(p)
	runtime.SetFinalizer(c, (*ManualClock).Close)
	return c, nil
}

// Close releases the clock. Idempotent; calls after it answer ErrClosed.
func (c *ManualClock) Close() error {
	if p := c.p.Swap(nil); p != nil {
		C.presence_clock_destroy(p)
		runtime.SetFinalizer(c, nil)
	}
	return nil
}

// Advance moves the clock forward by deltaMs (InvalidArgument when negative).
func (c *ManualClock) Advance(deltaMs int64) error {
	p := c.p.Load()
	if p == nil {
		return errClosed("clock")
	}
	var msg *C.char
	rc := C.presence_clock_advance(p, C.int64_t(deltaMs), &msg)
	keepAlive(c)
	return status(rc, msg)
}

// Set sets the clock to nowMs (InvalidArgument when it is before the
// clock's time: a clock never goes back).
func (c *ManualClock) Set(nowMs int64) error {
	p := c.p.Load()
	if p == nil {
		return errClosed("clock")
	}
	var msg *C.char
	rc := C.presence_clock_set(p, C.int64_t(nowMs), &msg)
	keepAlive(c)
	return status(rc, msg)
}

// Now is the clock's time in ms.
func (c *ManualClock) Now() (int64, error) {
	p := c.p.Load()
	if p == nil {
		return 0, errClosed("clock")
	}
	var now C.int64_t
	var msg *C.char
	rc := C.presence_clock_now(&now, p, &msg)
	keepAlive(c)
	return int64(now), status(rc, msg)
}
