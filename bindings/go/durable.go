package presence

/*
#include "presence/c.h"
*/
import "C"

// Transition is one published transition of a user (presence_transition_t).
// State is the public view (offline while invisible), SelfState the user's
// own.
type Transition struct {
	Version    uint64
	AtMs       int64 // when it was published
	Previous   State
	State      State
	SelfState  State
	Cause      Cause
	TraceID    uint64
	LastSeenMs int64
}

// DeviceTransition is one transition of a device (presence_device_transition_t).
type DeviceTransition struct {
	AtMs      int64 // the engine's clock when it happened
	SessionID uint64
	Event     DeviceEvent
	Platform  Platform // the device's then
}

// StateDurations is the time a user spent in each state in a window.
type StateDurations struct {
	OnlineMs, AwayMs, DNDMs, OfflineMs int64
}

// History returns the user's published transitions with AtMs in [fromMs,
// toMs], oldest first, as the user viewerID sees them: the user itself reads
// every transition with cause and trace id; anyone else ("" included) only
// the changes of the public view, with CauseWithheld and trace id 0.
// FailedPrecondition when the engine has no history store (no
// EngineOptions.FileDir).
func (e *Engine) History(userID string, fromMs, toMs int64, viewerID string) ([]Transition, error) {
	p, err := e.ptr()
	if err != nil {
		return nil, err
	}
	var arr *C.presence_transition_t
	var n C.size_t
	var msg *C.char
	rc := C.presence_engine_history_as(&arr, &n, p, cstr(userID), C.size_t(len(userID)),
		C.int64_t(fromMs), C.int64_t(toMs), cstr(viewerID), C.size_t(len(viewerID)), &msg)
	keepAlive(e)
	return fromCArray(arr, n, status(rc, msg), func(t *C.presence_transition_t) Transition {
		return Transition{Version: uint64(t.version), AtMs: int64(t.at_ms),
			Previous: State(t.previous), State: State(t.state), SelfState: State(t.self_state),
			Cause: Cause(t.cause), TraceID: uint64(t.trace_id), LastSeenMs: int64(t.last_seen_ms)}
	})
}

// DeviceHistory returns the device's transitions (connect, grace, death
// with its cause, probe outcomes) with AtMs in [fromMs, toMs], oldest first;
// nil for an unknown user or device. Only the user itself reads it: any
// other viewerID, "" included, gets PermissionDenied whether or not the user
// exists (an operator's host asks as the user). FailedPrecondition when the
// engine has no history store (no EngineOptions.FileDir).
func (e *Engine) DeviceHistory(userID, deviceID string, fromMs, toMs int64, viewerID string) ([]DeviceTransition, error) {
	p, err := e.ptr()
	if err != nil {
		return nil, err
	}
	var arr *C.presence_device_transition_t
	var n C.size_t
	var msg *C.char
	rc := C.presence_engine_device_history(&arr, &n, p, cstr(userID), C.size_t(len(userID)),
		cstr(deviceID), C.size_t(len(deviceID)), C.int64_t(fromMs), C.int64_t(toMs),
		cstr(viewerID), C.size_t(len(viewerID)), &msg)
	keepAlive(e)
	return fromCArray(arr, n, status(rc, msg), func(t *C.presence_device_transition_t) DeviceTransition {
		return DeviceTransition{AtMs: int64(t.at_ms), SessionID: uint64(t.session_id),
			Event: DeviceEvent(t.event), Platform: Platform(t.platform)}
	})
}

// TimeInStates is the time the user spent in each state in [fromMs, toMs]
// (in viewerID's view, as History; the part after now is not counted), from
// the history.
func (e *Engine) TimeInStates(userID string, fromMs, toMs int64, viewerID string) (StateDurations, error) {
	p, err := e.ptr()
	if err != nil {
		return StateDurations{}, err
	}
	var d C.presence_state_durations_t
	var msg *C.char
	rc := C.presence_engine_time_in_states_as(&d, p, cstr(userID), C.size_t(len(userID)),
		C.int64_t(fromMs), C.int64_t(toMs), cstr(viewerID), C.size_t(len(viewerID)), &msg)
	keepAlive(e)
	return StateDurations{OnlineMs: int64(d.online_ms), AwayMs: int64(d.away_ms),
		DNDMs: int64(d.dnd_ms), OfflineMs: int64(d.offline_ms)}, status(rc, msg)
}

// LastSeen is the user's last accepted signal, in ms, in viewerID's view:
// from the engine while it knows the user, else from the history. NotFound
// when neither knows it (for others: when its public view never showed it).
func (e *Engine) LastSeen(userID, viewerID string) (int64, error) {
	p, err := e.ptr()
	if err != nil {
		return 0, err
	}
	var last C.int64_t
	var msg *C.char
	rc := C.presence_engine_last_seen_as(&last, p, cstr(userID), C.size_t(len(userID)),
		cstr(viewerID), C.size_t(len(viewerID)), &msg)
	keepAlive(e)
	return int64(last), status(rc, msg)
}

// Erase forgets the user everywhere: the engine, its store and its history.
// The user's device handles stop working.
func (e *Engine) Erase(userID string) error {
	p, err := e.ptr()
	if err != nil {
		return err
	}
	var msg *C.char
	rc := C.presence_engine_erase(p, cstr(userID), C.size_t(len(userID)), &msg)
	keepAlive(e)
	return status(rc, msg)
}

// DrainGateway disconnects cleanly up to maxDevices (> 0) open devices whose
// signals named the gateway and says how many; call again until it answers
// 0. NotFound when no device carries the gateway (none ever did, or they are
// all gone).
func (e *Engine) DrainGateway(gateway string, maxDevices int) (int, error) {
	p, err := e.ptr()
	if err != nil {
		return 0, err
	}
	if maxDevices < 0 {
		return 0, errInvalid("maxDevices is %d", maxDevices)
	}
	var n C.size_t
	var msg *C.char
	rc := C.presence_engine_drain_gateway(&n, p, cstr(gateway), C.size_t(len(gateway)),
		C.size_t(maxDevices), &msg)
	keepAlive(e)
	return int(n), status(rc, msg)
}

// Rebuild drops what the engine holds in memory and reloads its store (Tick
// first: changes not yet written are lost). Do not feed the engine while it
// runs.
func (e *Engine) Rebuild() error {
	p, err := e.ptr()
	if err != nil {
		return err
	}
	var msg *C.char
	rc := C.presence_engine_rebuild(p, &msg)
	keepAlive(e)
	return status(rc, msg)
}
