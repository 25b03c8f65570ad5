// Package presence is the Go binding of presence, an embeddable presence
// engine, over its C ABI (include/presence/c.h, libpresence.so).
//
// One file per C concept: clock.go (presence_clock_t), engine.go
// (presence_engine_t and its options), signal.go (keyed signals, single and
// batch), handle.go (device handles: the heartbeat fast path), override.go,
// get.go (queries), fanout.go (presence_fanout_t, subscribers, topics, poll),
// sink.go (push sinks), decode.go (presence.v1.DiffBatch), errors.go (status
// codes).
//
// # Lifespan
//
// Every handle type (ManualClock, Engine, Fanout) has an explicit Close that
// is idempotent; a finalizer calls it too, but only as a safety net: close
// what you open. Handles keep what they depend on alive on the C side (an
// engine its clock, a fan-out its engine), so they may be closed in any order.
// A call on a closed handle answers an *Error with Code FailedPrecondition
// that also matches ErrClosed. Close must not race with other calls on the
// same handle (it is the C _destroy, which must be the last call).
//
// # Threads
//
// Every method of Engine and Fanout may be called from any goroutine at once
// (except Close). Push sinks run on the goroutine that calls Engine.Tick (or
// Fanout.Resume).
//
// # Building
//
// The package links libpresence.so with cgo. By default (the #cgo lines
// below) it looks for the headers in ../../include and ../../build/include,
// and for the library in ../../build (the folder that scripts/test.sh
// builds), with that folder as the rpath. To use another build folder, or an
// installed presence, set the usual cgo variables, which the go command puts
// before the #cgo flags:
//
//	CGO_CFLAGS="-I$SRC/include -I$BUILD/include" \
//	CGO_LDFLAGS="-L$BUILD -Wl,-rpath,$BUILD" go test ./...
//
// (or CGO_CFLAGS=$(pkg-config --cflags presence) and CGO_LDFLAGS=$(pkg-config
// --libs presence) for an installed one). The ctest entry go_binding_test
// (tests/CMakeLists.txt) does exactly this for the build folder it belongs to.
//
// # Conventions
//
// Ids are Go strings holding opaque bytes (1 to 128 bytes). Times are int64
// milliseconds on the engine's clock. Enumerations carry the numbers of
// presence.v1; in a Signal, a zero Platform, Source or Activity means the
// default of PRESENCE_SIGNAL_INIT (OTHER, APP, ACTIVE), while a zero enum
// passed as an argument elsewhere is invalid, as in C.
package presence

/*
#cgo CFLAGS: -I${SRCDIR}/../../include -I${SRCDIR}/../../build/include
#cgo LDFLAGS: -L${SRCDIR}/../../build -Wl,-rpath,${SRCDIR}/../../build -lpresence
#include <stdlib.h>
#include "presence/c.h"
*/
import "C"

import (
	"fmt"
	"runtime"
	"unsafe"
)

// HeaderVersion is the version of the C headers this package was built with
// (PRESENCE_VERSION_STRING).
const HeaderVersion = C.PRESENCE_VERSION_STRING

// HeaderVersionNumber is PRESENCE_VERSION_NUMBER: major*10000 + minor*100 + patch.
const HeaderVersionNumber = C.PRESENCE_VERSION_NUMBER

// Version is the version of the linked libpresence.so ("0.1.0").
func Version() string { return C.GoString(C.presence_version_string()) }

// VersionNumber is the linked library's version as major*10000 + minor*100 + patch.
func VersionNumber() int { return int(C.presence_version_number()) }

// The majors of the header and the library must agree (c.h convention 10):
// otherwise the layouts this package was compiled against may not be the
// library's.
func init() {
	if lib := VersionNumber(); lib/10000 != HeaderVersionNumber/10000 {
		panic(fmt.Sprintf("presence: libpresence.so is version %s but this package was built "+
			"against headers %s: the major versions differ", Version(), HeaderVersion))
	}
}

// Limits on ids, in bytes (the least is 1).
const (
	MaxUserIDBytes   = C.PRESENCE_MAX_USER_ID_BYTES
	MaxDeviceIDBytes = C.PRESENCE_MAX_DEVICE_ID_BYTES
	MaxGatewayBytes  = C.PRESENCE_MAX_GATEWAY_BYTES
	MaxTopicBytes    = C.PRESENCE_MAX_TOPIC_BYTES
)

// enumName is the name of v in names, or "Type(n)" (typeName and the
// number) for a value that names lacks: the String method of every enum.
func enumName[T ~int32](v T, names map[T]string, typeName string) string {
	if name, ok := names[v]; ok {
		return name
	}
	return fmt.Sprintf("%s(%d)", typeName, int32(v))
}

// State is what others see of a user (presence.v1.State).
type State int32

const (
	StateOffline State = C.PRESENCE_STATE_OFFLINE
	StateAway    State = C.PRESENCE_STATE_AWAY
	StateOnline  State = C.PRESENCE_STATE_ONLINE
	StateDND     State = C.PRESENCE_STATE_DND
)

var stateNames = map[State]string{
	StateOffline: "offline", StateAway: "away", StateOnline: "online", StateDND: "dnd",
}

func (s State) String() string { return enumName(s, stateNames, "State") }

// Source is where a signal came from; precedence by value (MANUAL > APP > INFERRED).
type Source int32

const (
	SourceInferred Source = C.PRESENCE_SOURCE_INFERRED // deduced by the server
	SourceApp      Source = C.PRESENCE_SOURCE_APP      // the client app's heartbeat
	SourceManual   Source = C.PRESENCE_SOURCE_MANUAL   // an explicit act of the user
)

var sourceNames = map[Source]string{SourceInferred: "inferred", SourceApp: "app", SourceManual: "manual"}

func (s Source) String() string { return enumName(s, sourceNames, "Source") }

// Activity is what a signal says about the person behind the device.
type Activity int32

const (
	ActivityActive Activity = C.PRESENCE_ACTIVITY_ACTIVE
	ActivityIdle   Activity = C.PRESENCE_ACTIVITY_IDLE
)

var activityNames = map[Activity]string{ActivityActive: "active", ActivityIdle: "idle"}

func (a Activity) String() string { return enumName(a, activityNames, "Activity") }

// Platform is the kind of device, counted in device summaries.
type Platform int32

const (
	PlatformWeb     Platform = C.PRESENCE_PLATFORM_WEB
	PlatformDesktop Platform = C.PRESENCE_PLATFORM_DESKTOP
	PlatformMobile  Platform = C.PRESENCE_PLATFORM_MOBILE
	PlatformConsole Platform = C.PRESENCE_PLATFORM_CONSOLE
	PlatformOther   Platform = C.PRESENCE_PLATFORM_OTHER
)

var platformNames = map[Platform]string{
	PlatformWeb: "web", PlatformDesktop: "desktop", PlatformMobile: "mobile",
	PlatformConsole: "console", PlatformOther: "other",
}

func (p Platform) String() string { return enumName(p, platformNames, "Platform") }

// OverrideState is a manual state that a user sets; Invisible shows as
// offline to everyone but the user.
type OverrideState int32

const (
	OverrideOnline    OverrideState = C.PRESENCE_OVERRIDE_ONLINE
	OverrideAway      OverrideState = C.PRESENCE_OVERRIDE_AWAY
	OverrideDND       OverrideState = C.PRESENCE_OVERRIDE_DND
	OverrideInvisible OverrideState = C.PRESENCE_OVERRIDE_INVISIBLE
)

var overrideStateNames = map[OverrideState]string{
	OverrideOnline: "online", OverrideAway: "away", OverrideDND: "dnd",
	OverrideInvisible: "invisible",
}

func (o OverrideState) String() string { return enumName(o, overrideStateNames, "OverrideState") }

// DisconnectKind: Clean (logout) kills the device at once; Abrupt (socket
// dropped) keeps it live for the reconnect grace.
type DisconnectKind int32

const (
	DisconnectClean  DisconnectKind = C.PRESENCE_DISCONNECT_CLEAN
	DisconnectAbrupt DisconnectKind = C.PRESENCE_DISCONNECT_ABRUPT
)

// Cause is why a user's published state changed (presence.v1.Cause).
type Cause int32

const (
	CauseSignal         Cause = C.PRESENCE_CAUSE_SIGNAL
	CauseTimeout        Cause = C.PRESENCE_CAUSE_TIMEOUT
	CauseDisconnect     Cause = C.PRESENCE_CAUSE_DISCONNECT
	CauseOverride       Cause = C.PRESENCE_CAUSE_OVERRIDE
	CauseOverrideExpiry Cause = C.PRESENCE_CAUSE_OVERRIDE_EXPIRY
	CauseMerge          Cause = C.PRESENCE_CAUSE_MERGE
	CauseWithheld       Cause = C.PRESENCE_CAUSE_WITHHELD // a history entry read by anyone but the user
)

var causeNames = map[Cause]string{
	CauseSignal: "signal", CauseTimeout: "timeout", CauseDisconnect: "disconnect",
	CauseOverride: "override", CauseOverrideExpiry: "override_expiry", CauseMerge: "merge",
	CauseWithheld: "withheld",
}

func (c Cause) String() string { return enumName(c, causeNames, "Cause") }

// DeviceEvent is what happened to one device (the per-device audit); the
// DeviceDead* events end a session's life and say why.
type DeviceEvent int32

const (
	DeviceConnect        DeviceEvent = C.PRESENCE_DEVICE_CONNECT          // a session became live
	DeviceGrace          DeviceEvent = C.PRESENCE_DEVICE_GRACE            // abrupt disconnect: the grace began
	DeviceDeadTimeout    DeviceEvent = C.PRESENCE_DEVICE_DEAD_TIMEOUT     // silent past offline_after, probes unanswered
	DeviceDeadAfterGrace DeviceEvent = C.PRESENCE_DEVICE_DEAD_AFTER_GRACE // no reconnect within the grace
	DeviceDeadAbrupt     DeviceEvent = C.PRESENCE_DEVICE_DEAD_ABRUPT      // abrupt disconnect of a lapsed device
	DeviceDeadClean      DeviceEvent = C.PRESENCE_DEVICE_DEAD_CLEAN       // a clean disconnect
	DeviceDeadDrained    DeviceEvent = C.PRESENCE_DEVICE_DEAD_DRAINED     // the operator drained its gateway
	DeviceDeadReplaced   DeviceEvent = C.PRESENCE_DEVICE_DEAD_REPLACED    // a newer session took over
	DeviceProbeAnswered  DeviceEvent = C.PRESENCE_DEVICE_PROBE_ANSWERED   // the host answered a probe
	DeviceProbeGivenUp   DeviceEvent = C.PRESENCE_DEVICE_PROBE_GIVEN_UP   // died for silence, probes unanswered
)

var deviceEventNames = map[DeviceEvent]string{
	DeviceConnect: "connect", DeviceGrace: "grace", DeviceDeadTimeout: "dead_timeout",
	DeviceDeadAfterGrace: "dead_after_grace", DeviceDeadAbrupt: "dead_abrupt",
	DeviceDeadClean: "dead_clean", DeviceDeadDrained: "dead_drained",
	DeviceDeadReplaced: "dead_replaced", DeviceProbeAnswered: "probe_answered",
	DeviceProbeGivenUp: "probe_given_up",
}

func (d DeviceEvent) String() string { return enumName(d, deviceEventNames, "DeviceEvent") }

// FileSync is when the file store fdatasyncs its log (presence_file_sync_t):
// what an acknowledged write survives.
type FileSync int32

const (
	FileSyncEveryWrite FileSync = C.PRESENCE_FILE_SYNC_EVERY_WRITE // a crash, an OS crash, a power loss
	FileSyncInterval   FileSync = C.PRESENCE_FILE_SYNC_INTERVAL    // an OS crash loses at most FileSyncIntervalMs
	FileSyncNever      FileSync = C.PRESENCE_FILE_SYNC_NEVER       // the OS writes back when it chooses (synced on Close)
)

// DeviceSummary counts live devices per platform.
type DeviceSummary struct {
	Web, Desktop, Mobile, Console, Other uint32
}

// Total is the number of live devices, all platforms.
func (d DeviceSummary) Total() uint32 { return d.Web + d.Desktop + d.Mobile + d.Console + d.Other }

// cstr returns a pointer to s's bytes for a C call that reads them during
// the call only (c.h convention 6: an id passed as an argument may point
// into Go memory), or nil for an empty string.
func cstr(s string) *C.char {
	if len(s) == 0 {
		return nil
	}
	return *(**C.char)(unsafe.Pointer(&s))
}

// fromCArray converts the n structs of an array that the library returned
// (nil, or one allocation freed here with presence_free: c.h convention 7),
// or returns err when the call failed.
func fromCArray[CT, GT any](arr *CT, n C.size_t, err error, conv func(*CT) GT) ([]GT, error) {
	if err != nil || arr == nil {
		return nil, err
	}
	defer C.presence_free(unsafe.Pointer(arr))
	out := make([]GT, n)
	for i, c := range unsafe.Slice(arr, int(n)) {
		out[i] = conv(&c)
	}
	return out, nil
}

// cBytesList copies ids into one C allocation that holds the
// presence_bytes_t array followed by the bytes (a presence_bytes_t array in
// Go memory may not hold Go pointers, per the cgo rules, and Go 1.19 has no
// runtime.Pinner). The caller frees it with C.free. It returns nil for an
// empty list.
func cBytesList(ids []string) *C.presence_bytes_t {
	if len(ids) == 0 {
		return nil
	}
	head := uintptr(len(ids)) * unsafe.Sizeof(C.presence_bytes_t{})
	total := head
	for _, id := range ids {
		total += uintptr(len(id))
	}
	mem := C.malloc(C.size_t(total))
	if mem == nil {
		panic("presence: out of C memory")
	}
	list := unsafe.Slice((*C.presence_bytes_t)(mem), len(ids))
	arena := unsafe.Slice((*byte)(mem), total)
	at := head
	for i, id := range ids {
		n := uintptr(copy(arena[at:], id))
		if n == 0 {
			list[i].data = nil
		} else {
			list[i].data = (*C.char)(unsafe.Pointer(&arena[at]))
		}
		list[i].len = C.size_t(n)
		at += n
	}
	return (*C.presence_bytes_t)(mem)
}

// keepAlive is runtime.KeepAlive, named for the reader: every method keeps
// its receiver alive until its C call has returned, so that a finalizer
// cannot destroy the C handle during the call.
func keepAlive(x any) { runtime.KeepAlive(x) }
