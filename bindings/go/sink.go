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
	s.mu.Lock()
	defer s.mu.Unlock()
	s.count++
	if s.first == nil {
		s.first = &Error{Code: Internal, Message: fmt.Sprintf("the push sink of subscriber %d panicked: %v", sub, v)}
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
