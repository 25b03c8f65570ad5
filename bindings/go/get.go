package presence

/*
#include <stdlib.h>
#include "presence/c.h"
*/
import "C"

import "unsafe"

// UserPresence is one user as Get answers (presence_user_presence_t).
type UserPresence struct {
	UserID          string // the id asked for; empty for an id that failed validation
	Known           bool   // false: nothing to show of this id (every field zero)
	State           State  // as the viewer sees it
	Version         uint64 // of the last published change of the viewer's view
	LastSeenMs      int64  // latest accepted signal; 0: never seen
	FreshnessMs     int64  // now - LastSeenMs (0 when never seen)
	HasOverride     bool   // an override shows
	OverrideState   OverrideState
	OverrideUntilMs int64 // 0: no end time
	LiveDevices     uint32
	Devices         DeviceSummary // live devices per platform
}

// Get answers for userIDs, in order, in one C call, as the user viewerID
// sees them ("": an anonymous viewer): the user itself sees its true state,
// everyone else its public view (docs/design.md rule 8): an invisible user is
// offline with no devices, and its last_seen and version stay where they were
// when it went invisible; a user offline that was never published, or not
// seen for the retention, is not Known. State is exact at the
// clock's now, even between ticks. Ids that fail validation (empty, or
// longer than MaxUserIDBytes) come back with Known false.
func (e *Engine) Get(userIDs []string, viewerID string) ([]UserPresence, error) {
	return e.get(userIDs, viewerID, false)
}

// GetPublished is Get, but State and Version are those of each user's last
// published change: what subscribers have been told.
func (e *Engine) GetPublished(userIDs []string, viewerID string) ([]UserPresence, error) {
	return e.get(userIDs, viewerID, true)
}

func (e *Engine) get(userIDs []string, viewerID string, published bool) ([]UserPresence, error) {
	p, err := e.ptr()
	if err != nil {
		return nil, err
	}
	if len(userIDs) == 0 {
		return []UserPresence{}, nil
	}
	ids := cBytesList(userIDs)
	defer C.free(unsafe.Pointer(ids))
	var arr *C.presence_user_presence_t
	var msg *C.char
	var rc C.int
	if published {
		rc = C.presence_engine_get_published(&arr, p, ids, C.size_t(len(userIDs)), cstr(viewerID),
			C.size_t(len(viewerID)), &msg)
	} else {
		rc = C.presence_engine_get(&arr, p, ids, C.size_t(len(userIDs)), cstr(viewerID),
			C.size_t(len(viewerID)), &msg)
	}
	keepAlive(e)
	if err := status(rc, msg); err != nil {
		return nil, err
	}
	defer C.presence_free(unsafe.Pointer(arr))
	out := make([]UserPresence, len(userIDs))
	for i, u := range unsafe.Slice(arr, len(userIDs)) {
		out[i] = UserPresence{
			UserID:          C.GoStringN(u.user_id, C.int(u.user_id_len)),
			Known:           u.known != 0,
			State:           State(u.state),
			Version:         uint64(u.version),
			LastSeenMs:      int64(u.last_seen_ms),
			FreshnessMs:     int64(u.freshness_ms),
			HasOverride:     u.has_override != 0,
			OverrideState:   OverrideState(u.override_state),
			OverrideUntilMs: int64(u.override_until_ms),
			LiveDevices:     uint32(u.live_devices),
			Devices: DeviceSummary{
				Web: uint32(u.devices[0]), Desktop: uint32(u.devices[1]), Mobile: uint32(u.devices[2]),
				Console: uint32(u.devices[3]), Other: uint32(u.devices[4]),
			},
		}
	}
	return out, nil
}
