package presence

/*
#include "presence/c.h"
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// Code is a status code of the C ABI (presence_status_t): the numbers of
// absl::StatusCode and google.rpc.Code. The list is append-only.
type Code int32

const (
	OK                 Code = C.PRESENCE_OK
	InvalidArgument    Code = C.PRESENCE_ERR_INVALID_ARGUMENT    // bad input; nothing changed
	NotFound           Code = C.PRESENCE_ERR_NOT_FOUND           // unknown or closed handle, override, subscriber, topic
	ResourceExhausted  Code = C.PRESENCE_ERR_RESOURCE_EXHAUSTED  // a limit was passed, or out of memory
	FailedPrecondition Code = C.PRESENCE_ERR_FAILED_PRECONDITION // stale signal, poll of a push subscriber, tick in a callback, closed Go handle, no history store, a data folder held by another engine
	Internal           Code = C.PRESENCE_ERR_INTERNAL            // a bug in presence
	PermissionDenied   Code = C.PRESENCE_ERR_PERMISSION_DENIED   // a data folder that cannot be read or created
	Unavailable        Code = C.PRESENCE_ERR_UNAVAILABLE         // a store cannot be reached for now: retry
	DataLoss           Code = C.PRESENCE_ERR_DATA_LOSS           // stored data damaged beyond recovery

	// The rest of absl::StatusCode, which the C ABI passes through.
	Cancelled        Code = C.PRESENCE_ERR_CANCELLED
	Unknown          Code = C.PRESENCE_ERR_UNKNOWN
	DeadlineExceeded Code = C.PRESENCE_ERR_DEADLINE_EXCEEDED
	AlreadyExists    Code = C.PRESENCE_ERR_ALREADY_EXISTS
	Aborted          Code = C.PRESENCE_ERR_ABORTED
	OutOfRange       Code = C.PRESENCE_ERR_OUT_OF_RANGE
	Unimplemented    Code = C.PRESENCE_ERR_UNIMPLEMENTED
	Unauthenticated  Code = C.PRESENCE_ERR_UNAUTHENTICATED
)

// String is the library's name of the code ("INVALID_ARGUMENT", ...).
func (c Code) String() string { return C.GoString(C.presence_status_name(C.int(c))) }

// Error is a failed call: the status code and the library's message.
//
// Compare with errors.Is against the sentinels (ErrInvalidArgument, ...),
// which match any *Error with the same Code, or read the Code with
// errors.As.
type Error struct {
	Code    Code
	Message string
	closed  bool // the Go handle was closed (matches ErrClosed)
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "presence: " + e.Code.String()
	}
	return "presence: " + e.Code.String() + ": " + e.Message
}

// Is reports whether target is the sentinel of e's code (an *Error with no
// message), or ErrClosed when e is about a closed handle.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok {
		return false
	}
	if t == ErrClosed {
		return e.closed
	}
	return t.Message == "" && t.Code == e.Code
}

// Sentinels, one per code: errors.Is(err, presence.ErrNotFound).
var (
	ErrInvalidArgument    = &Error{Code: InvalidArgument}
	ErrNotFound           = &Error{Code: NotFound}
	ErrResourceExhausted  = &Error{Code: ResourceExhausted}
	ErrFailedPrecondition = &Error{Code: FailedPrecondition}
	ErrInternal           = &Error{Code: Internal}
	ErrPermissionDenied   = &Error{Code: PermissionDenied}
	ErrUnavailable        = &Error{Code: Unavailable}
	ErrDataLoss           = &Error{Code: DataLoss}
	ErrCancelled          = &Error{Code: Cancelled}
	ErrUnknown            = &Error{Code: Unknown}
	ErrDeadlineExceeded   = &Error{Code: DeadlineExceeded}
	ErrAlreadyExists      = &Error{Code: AlreadyExists}
	ErrAborted            = &Error{Code: Aborted}
	ErrOutOfRange         = &Error{Code: OutOfRange}
	ErrUnimplemented      = &Error{Code: Unimplemented}
	ErrUnauthenticated    = &Error{Code: Unauthenticated}
	// ErrClosed matches a call on a Go handle after its Close. Such an
	// error has Code FailedPrecondition (so it matches
	// ErrFailedPrecondition too).
	ErrClosed = &Error{Code: FailedPrecondition, Message: "closed", closed: true}
)

// status turns a C status and its message into an error, freeing the
// message right after converting it (c.h convention 4).
func status(rc C.int, msg *C.char) error {
	if rc == C.PRESENCE_OK {
		if msg != nil { // never, per convention 4; free it anyway
			C.presence_free(unsafe.Pointer(msg))
		}
		return nil
	}
	e := &Error{Code: Code(rc)}
	if msg != nil {
		e.Message = C.GoString(msg)
		C.presence_free(unsafe.Pointer(msg))
	}
	return e
}

func errClosed(what string) error {
	return &Error{Code: FailedPrecondition, Message: what + " is closed", closed: true}
}

func errInvalid(format string, args ...any) error {
	return &Error{Code: InvalidArgument, Message: fmt.Sprintf(format, args...)}
}
