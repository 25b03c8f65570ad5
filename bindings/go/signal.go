package presence

/*
#include <stdlib.h>
#include "presence/c.h"

// One keyed signal, built on the C stack from its fields, so that the ids
// may point into Go memory (an id passed as an argument may; a struct in Go
// memory holding Go pointers may not be passed, per the cgo rules).
static int presence_go_signal(presence_engine_t* e, uint64_t* out_handle,
    const char* user, size_t user_len, const char* device, size_t device_len,
    const char* gateway, size_t gateway_len, uint64_t session_id, int64_t timestamp_ms,
    uint64_t trace_id, int32_t platform, int32_t source, int32_t activity, char** errmsg) {
  presence_signal_t s = PRESENCE_SIGNAL_INIT;
  s.user_id = user; s.user_id_len = user_len;
  s.device_id = device; s.device_id_len = device_len;
  s.gateway = gateway; s.gateway_len = gateway_len;
  s.session_id = session_id;
  s.timestamp_ms = timestamp_ms;
  s.trace_id = trace_id;
  s.platform = platform;
  s.source = source;
  s.activity = activity;
  if (out_handle != NULL) return presence_engine_connect(out_handle, e, &s, errmsg);
  return presence_engine_signal(e, &s, errmsg);
}
*/
import "C"

import "unsafe"

// Signal says that a device is alive (presence_signal_t, docs/design.md section 1).
type Signal struct {
	UserID   string // 1..128 bytes
	DeviceID string // 1..128 bytes
	Gateway  string // optional: the host process carrying it (0..128 bytes)
	// One connection of the device: > 0, and grows on every reconnect. A
	// signal from an older session is stale.
	SessionID   uint64
	TimestampMs int64    // when it was produced, on the engine's clock; 0: now
	TraceID     uint64   // carried into the change it causes
	Platform    Platform // 0: PlatformOther
	Source      Source   // 0: SourceApp
	Activity    Activity // 0: ActivityActive
}

// The defaults of PRESENCE_SIGNAL_INIT for zero enum fields.
func (s *Signal) enums() (C.int32_t, C.int32_t, C.int32_t) {
	p, src, a := s.Platform, s.Source, s.Activity
	if p == 0 {
		p = PlatformOther
	}
	if src == 0 {
		src = SourceApp
	}
	if a == 0 {
		a = ActivityActive
	}
	return C.int32_t(p), C.int32_t(src), C.int32_t(a)
}

func (e *Engine) signal(s *Signal, out *C.uint64_t) error {
	p, err := e.ptr()
	if err != nil {
		return err
	}
	platform, source, activity := s.enums()
	var msg *C.char
	rc := C.presence_go_signal(p, out,
		cstr(s.UserID), C.size_t(len(s.UserID)),
		cstr(s.DeviceID), C.size_t(len(s.DeviceID)),
		cstr(s.Gateway), C.size_t(len(s.Gateway)),
		C.uint64_t(s.SessionID), C.int64_t(s.TimestampMs), C.uint64_t(s.TraceID),
		platform, source, activity, &msg)
	keepAlive(e)
	return status(rc, msg)
}

// Signal applies one keyed signal (docs/design.md rules 1, 2 and 5); a signal
// for a device the engine does not hold creates it. FailedPrecondition for
// a stale signal (counted and dropped).
func (e *Engine) Signal(s Signal) error { return e.signal(&s, nil) }

// BatchResult counts the outcomes of SignalBatch.
type BatchResult struct {
	Applied  int // accepted (exact replays included)
	Stale    int // dropped as stale
	Rejected int // invalid, or a limit passed
}

// SignalBatch applies signals in order in one C call (each shard is locked
// once per batch). The signals and their ids are copied into one C
// allocation first (Go 1.19 has no runtime.Pinner, and the cgo rules forbid
// Go pointers in the presence_signal_t array otherwise).
//
// It returns nil when every signal was applied; otherwise the *Error of the
// first one that was not. Either way the result counts the outcomes, and the
// signals after a failed one are still applied.
func (e *Engine) SignalBatch(signals []Signal) (BatchResult, error) {
	p, err := e.ptr()
	if err != nil {
		return BatchResult{}, err
	}
	if len(signals) == 0 {
		return BatchResult{}, nil
	}
	head := uintptr(len(signals)) * unsafe.Sizeof(C.presence_signal_t{})
	total := head
	for i := range signals {
		s := &signals[i]
		total += uintptr(len(s.UserID) + len(s.DeviceID) + len(s.Gateway))
	}
	mem := C.malloc(C.size_t(total))
	if mem == nil {
		return BatchResult{}, &Error{Code: ResourceExhausted, Message: "out of C memory for the batch"}
	}
	defer C.free(mem)
	cs := unsafe.Slice((*C.presence_signal_t)(mem), len(signals))
	arena := unsafe.Slice((*byte)(mem), total)
	at := head
	put := func(id string) (*C.char, C.size_t) {
		if len(id) == 0 {
			return nil, 0
		}
		n := copy(arena[at:], id)
		ptr := (*C.char)(unsafe.Pointer(&arena[at]))
		at += uintptr(n)
		return ptr, C.size_t(n)
	}
	for i := range signals {
		s := &signals[i]
		c := &cs[i]
		c.user_id, c.user_id_len = put(s.UserID)
		c.device_id, c.device_id_len = put(s.DeviceID)
		c.gateway, c.gateway_len = put(s.Gateway)
		c.session_id = C.uint64_t(s.SessionID)
		c.timestamp_ms = C.int64_t(s.TimestampMs)
		c.trace_id = C.uint64_t(s.TraceID)
		c.platform, c.source, c.activity = s.enums()
	}
	var res C.presence_batch_result_t
	var msg *C.char
	rc := C.presence_engine_signal_batch(&res, p, (*C.presence_signal_t)(mem), C.size_t(len(signals)), &msg)
	keepAlive(e)
	r := BatchResult{Applied: int(res.applied), Stale: int(res.stale), Rejected: int(res.rejected)}
	return r, status(rc, msg)
}

// DisconnectDevice ends the session sessionID (0: the current one) of a
// device named by its ids. NotFound when the device is unknown or already
// closed.
func (e *Engine) DisconnectDevice(userID, deviceID string, sessionID uint64, kind DisconnectKind) error {
	p, err := e.ptr()
	if err != nil {
		return err
	}
	var msg *C.char
	rc := C.presence_engine_disconnect_device(p, cstr(userID), C.size_t(len(userID)),
		cstr(deviceID), C.size_t(len(deviceID)), C.uint64_t(sessionID), C.int(kind), &msg)
	keepAlive(e)
	return status(rc, msg)
}
