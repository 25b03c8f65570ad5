package presence

// This file holds the exported Go callbacks, so its preamble may only
// declare (cgo copies it into _cgo_export.c); the C trampolines that the
// library calls are in sink.c.

/*
#include <stdint.h>
#include <stddef.h>
*/
import "C"

import (
	"fmt"
	"runtime/cgo"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Sink receives every batch of a push subscriber: an encoded
// presence.v1.DiffBatch (DecodeDiffBatch reads it). batch is a copy that the
// sink may keep.
//
// It runs on the goroutine that calls Engine.Tick (or Fanout.Resume), one
// batch at a time per subscriber, in sequence order. It may call any method
// of the engine and the fan-out, Unsubscribe of its own subscriber
// included, except Engine.Tick (FailedPrecondition) and Fanout.Close. It
// must not panic: a panic cannot cross the C library (c.h convention 12),
// so it is recovered, the batch counts as delivered, and the engine's next
// Tick (or the fan-out's next Resume) returns it as an Internal error.
//
// The sink is held (through a cgo.Handle) until its subscriber is closed by
// Unsubscribe or Fanout.Close; a sink that refers to its Fanout keeps the
// Fanout reachable, so its finalizer never runs: close it explicitly.
type Sink func(subscriber SubscriberID, batch []byte)

// sinkEntry is what the cgo.Handle passed as sink_payload refers to.
type sinkEntry struct {
	fn     Sink
	panics *sinkPanics
}

// sinkPanics holds the panics recovered in push sinks until Tick reports them.
type sinkPanics struct {
	mu    sync.Mutex
	first error
	count int
}

func (s *sinkPanics) record(sub SubscriberID, v any) {
	s.add(fmt.Sprintf("the push sink of subscriber %d panicked: %v", sub, v))
}

func (s *sinkPanics) recordProbe(probeID uint64, v any) {
	s.add(fmt.Sprintf("the prober panicked on probe %d: %v", probeID, v))
}

func (s *sinkPanics) add(message string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.count++
	if s.first == nil {
		s.first = &Error{Code: Internal, Message: message}
	}
}

func (s *sinkPanics) take() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err, n := s.first, s.count
	s.first, s.count = nil, 0
	if n > 1 {
		e := err.(*Error)
		return &Error{Code: e.Code, Message: fmt.Sprintf("%s (and %d more sink panics)", e.Message, n-1)}
	}
	return err
}

//export presenceGoSink
func presenceGoSink(subscriber C.uint64_t, batch *C.char, n C.size_t, payload C.uintptr_t) {
	entry := cgo.Handle(payload).Value().(*sinkEntry)
	data := C.GoBytes(unsafe.Pointer(batch), C.int(n))
	defer func() {
		if r := recover(); r != nil {
			entry.panics.record(SubscriberID(subscriber), r)
		}
	}()
	entry.fn(SubscriberID(subscriber), data)
}

// Probe is what the engine asks the host to check (docs/design.md rule 9):
// ping device DeviceID of user UserID in session SessionID, and report the
// answer with Engine.AnswerProbe(ProbeID). The answer counts as a signal of
// Source.
type Probe struct {
	UserID    string
	DeviceID  string
	SessionID uint64
	ProbeID   uint64 // never 0
	Source    Source
	Attempt   int    // 1 for the first probe of a silence, 2 for the first retry, ...
	Gateway   string // that carried the device's last signal; "" when none
}

// Prober sends a probe. It runs on the goroutine that calls Engine.Tick,
// after the tick's work, one probe at a time, and must not block for long.
// It may call any method of the engine (AnswerProbe included) except Tick
// (FailedPrecondition) and Close. A panic is recovered and returned by that
// Tick as an Internal error, as a push sink's.
type Prober func(p Probe)

type proberEntry struct {
	fn     Prober
	panics *sinkPanics
}

//export presenceGoProbe
func presenceGoProbe(user *C.char, userLen C.size_t, device *C.char, deviceLen C.size_t,
	session, id C.uint64_t, source, attempt C.int32_t, gateway *C.char, gatewayLen C.size_t,
	payload C.uintptr_t) {
	entry := cgo.Handle(payload).Value().(*proberEntry)
	p := Probe{
		UserID:    C.GoStringN(user, C.int(userLen)),
		DeviceID:  C.GoStringN(device, C.int(deviceLen)),
		SessionID: uint64(session),
		ProbeID:   uint64(id),
		Source:    Source(source),
		Attempt:   int(attempt),
		Gateway:   C.GoStringN(gateway, C.int(gatewayLen)),
	}
	defer func() {
		if r := recover(); r != nil {
			entry.panics.recordProbe(p.ProbeID, r)
		}
	}()
	entry.fn(p)
}

//export presenceGoPayloadFree
func presenceGoPayloadFree(payload C.uintptr_t) {
	cgo.Handle(payload).Delete()
	liveSinks.Add(-1)
}

// liveSinks counts the sinks whose cgo.Handle is held (for the tests: every
// one is released by Unsubscribe, Fanout.Close, or a failed Subscribe).
var liveSinks atomic.Int64

func newSinkHandle(fn Sink, panics *sinkPanics) cgo.Handle {
	liveSinks.Add(1)
	return cgo.NewHandle(&sinkEntry{fn: fn, panics: panics})
}

func deleteSinkHandle(h cgo.Handle) {
	h.Delete()
	liveSinks.Add(-1)
}
