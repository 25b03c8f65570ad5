package presence

/*
#include "presence/c.h"

// The result of a call, with its message, returned by value: the Go side
// passes no pointer, so nothing escapes to the Go heap and a heartbeat
// allocates nothing.
typedef struct presence_go_status {
  int rc;
  char* msg;
} presence_go_status;

static presence_go_status presence_go_beat(presence_engine_t* e, uint64_t handle, int activity,
                                           int source) {
  presence_go_status s;
  s.msg = NULL;
  s.rc = presence_engine_beat(e, handle, activity, source, &s.msg);
  return s;
}
*/
import "C"

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
func (e *Engine) Beat(h Handle, activity Activity, source Source) error {
	p, err := e.ptr()
	if err != nil {
		return err
	}
	s := C.presence_go_beat(p, C.uint64_t(h), C.int(activity), C.int(source))
	keepAlive(e)
	if s.rc == C.PRESENCE_OK {
		return nil
	}
	return status(C.int(s.rc), s.msg)
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
