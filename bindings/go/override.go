package presence

/*
#include "presence/c.h"
*/
import "C"

// Override is one manual state on a user's stack (presence_override_t).
type Override struct {
	ID      uint64
	SetAtMs int64
	UntilMs int64 // 0: until revoked
	State   OverrideState
}

// SetOverride pushes a manual state on the user's stack and returns its id.
// untilMs is an absolute time on the engine's clock, 0 for "until revoked";
// a time not after now is InvalidArgument.
func (e *Engine) SetOverride(userID string, state OverrideState, untilMs int64, traceID uint64) (uint64, error) {
	p, err := e.ptr()
	if err != nil {
		return 0, err
	}
	var id C.uint64_t
	var msg *C.char
	rc := C.presence_engine_set_override(&id, p, cstr(userID), C.size_t(len(userID)), C.int(state),
		C.int64_t(untilMs), C.uint64_t(traceID), &msg)
	keepAlive(e)
	return uint64(id), status(rc, msg)
}

// RevokeOverride removes one override. NotFound when the user has none
// with that id.
func (e *Engine) RevokeOverride(userID string, overrideID uint64) error {
	p, err := e.ptr()
	if err != nil {
		return err
	}
	var msg *C.char
	rc := C.presence_engine_revoke_override(p, cstr(userID), C.size_t(len(userID)), C.uint64_t(overrideID), &msg)
	keepAlive(e)
	return status(rc, msg)
}

// ClearOverrides removes every override of the user and says how many.
func (e *Engine) ClearOverrides(userID string) (int, error) {
	p, err := e.ptr()
	if err != nil {
		return 0, err
	}
	var n C.size_t
	var msg *C.char
	rc := C.presence_engine_clear_overrides(&n, p, cstr(userID), C.size_t(len(userID)), &msg)
	keepAlive(e)
	return int(n), status(rc, msg)
}

// RevokeOverridesSetBetween is the operator's bulk revoke: every override of
// any user set in [fromMs, toMs]. It says how many were removed.
func (e *Engine) RevokeOverridesSetBetween(fromMs, toMs int64) (int, error) {
	p, err := e.ptr()
	if err != nil {
		return 0, err
	}
	var n C.size_t
	var msg *C.char
	rc := C.presence_engine_revoke_overrides_set_between(&n, p, C.int64_t(fromMs), C.int64_t(toMs), &msg)
	keepAlive(e)
	return int(n), status(rc, msg)
}

// ListOverrides returns the user's override stack, oldest first.
func (e *Engine) ListOverrides(userID string) ([]Override, error) {
	p, err := e.ptr()
	if err != nil {
		return nil, err
	}
	var arr *C.presence_override_t
	var n C.size_t
	var msg *C.char
	rc := C.presence_engine_list_overrides(&arr, &n, p, cstr(userID), C.size_t(len(userID)), &msg)
	keepAlive(e)
	return fromCArray(arr, n, status(rc, msg), func(o *C.presence_override_t) Override {
		return Override{ID: uint64(o.id), SetAtMs: int64(o.set_at_ms), UntilMs: int64(o.until_ms),
			State: OverrideState(o.state)}
	})
}
