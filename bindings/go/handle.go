package presence

/*
#include <stdint.h>
#include "presence/c.h"

// The heartbeat with no pointer argument: cgo checks every pointer argument
// by boxing it in an interface, and a pointer to an incomplete C type
// (presence_engine_t) is boxed on the heap, which would cost an allocation
// per heartbeat. No errmsg either, for the same reason (see Beat).
static int presence_go_beat(uintptr_t engine, uint64_t handle, int activity, int source) {
  return presence_engine_beat((presence_engine_t*)engine, handle, activity, source, NULL);
}
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// Handle is a device handle: the heartbeat fast path. The host keeps it
// beside its socket (0 is never a handle). It stops working when its device
// is disconnected, replaced by a newer session, or forgotten after
// DeadRetentionMs; calls on it then answer NotFound.
type Handle uint64

// Connect applies s as a connect and returns its device's handle.
// Connecting with a newer SessionID replaces the device's previous session,
// whose handle stops working.
func (e *Engine) Connect(s Signal) (Handle, error) {
	var h C.uint64_t
	err := e.signal(&s, &h)
	return Handle(h), err
}

// Beat is a heartbeat on the handle at the engine's current time: O(1), no
// allocation (in C or Go), no lock when only the time changes.
//
// To allocate nothing, Beat asks the library for its status code only (a
// Go pointer to an errmsg slot would be moved to the heap on every call), so
// its errors carry a message written here: NotFound for a handle that
// expired or was disconnected, InvalidArgument for an activity or source
// outside its enumeration, ResourceExhausted when the device passed the
// engine's signals-per-second limit.
func (e *Engine) Beat(h Handle, activity Activity, source Source) error {
	p, err := e.ptr()
	if err != nil {
		return err
	}
	rc := C.presence_go_beat(C.uintptr_t(uintptr(unsafe.Pointer(p))), C.uint64_t(h), C.int(activity), C.int(source))
	keepAlive(e)
	if rc == C.PRESENCE_OK {
		return nil
	}
	return beatError(Code(rc), h, activity, source)
}

// BeatMany is Beat on each handle in turn, with the same activity and source,
// in one C call that overlaps their memory accesses: several times cheaper
// per beat than Beat in a loop once the engine outgrows the CPU caches (an
// event loop's ready list is the natural batch). It returns nil when every
// beat was applied; otherwise the *Error of the first that was not (NotFound
// for a closed or unknown handle), and the beats after it are still applied.
// Either way the result counts the outcomes; an activity or source outside
// its enumeration rejects every beat.
func (e *Engine) BeatMany(handles []Handle, activity Activity, source Source) (BatchResult, error) {
	p, err := e.ptr()
	if err != nil {
		return BatchResult{}, err
	}
	if len(handles) == 0 {
		return BatchResult{}, nil
	}
	// A []Handle holds no Go pointers, so C may read it in place.
	var res C.presence_batch_result_t
	var msg *C.char
	rc := C.presence_engine_beat_many(&res, p, (*C.uint64_t)(unsafe.Pointer(&handles[0])),
		C.size_t(len(handles)), C.int(activity), C.int(source), &msg)
	keepAlive(e)
	r := BatchResult{Applied: int(res.applied), Stale: int(res.stale), Rejected: int(res.rejected)}
	return r, status(rc, msg)
}

func beatError(code Code, h Handle, activity Activity, source Source) error {
	var msg string
	switch code {
	case NotFound:
		msg = fmt.Sprintf("device handle %d is unknown or closed", uint64(h))
	case InvalidArgument:
		switch {
		case activity != ActivityActive && activity != ActivityIdle:
			msg = fmt.Sprintf("activity %d is not a valid value", int32(activity))
		case source < SourceInferred || source > SourceManual:
			msg = fmt.Sprintf("source %d is not a valid value", int32(source))
		default:
			msg = fmt.Sprintf("beat on device handle %d: invalid argument", uint64(h))
		}
	case ResourceExhausted:
		msg = fmt.Sprintf("device handle %d: the device passed its signals-per-second limit", uint64(h))
	default:
		msg = fmt.Sprintf("beat on device handle %d failed", uint64(h))
	}
	return &Error{Code: code, Message: msg}
}

// Disconnect closes the handle's session. The handle is invalid afterwards
// (a second call answers NotFound).
func (e *Engine) Disconnect(h Handle, kind DisconnectKind) error {
	p, err := e.ptr()
	if err != nil {
		return err
	}
	var msg *C.char
	rc := C.presence_engine_disconnect(p, C.uint64_t(h), C.int(kind), &msg)
	keepAlive(e)
	return status(rc, msg)
}
