"""Exceptions: one class per status code of presence/c.h (convention 3).

Every fallible C call returns a status code and, on failure, a message that
the library allocated; the binding frees the message with presence_free()
and raises the class mapped from the code. Each class carries ``.code`` (a
:class:`StatusCode`) and ``.message`` (the library's text).

    PresenceError               any status other than OK
     +- InvalidArgument         3: also a ValueError (bad ids, enums, ranges,
     |                             a closed handle object)
     +- NotFound                5: also a LookupError (expired device handle,
     |                             unknown subscriber, topic or override)
     +- ResourceExhausted       8: a limit was passed, or out of memory
     +- FailedPrecondition      9: the call does not fit the current state
     |   +- StaleSignal            ... a signal from an older session
     +- Internal               13: a bug in presence
     +- PermissionDenied        7: a data folder that cannot be read or created
     +- Unavailable            14: a store cannot be reached for now: retry
     +- DataLoss               15: stored data damaged beyond recovery
     +- Cancelled (1), Unknown (2), DeadlineExceeded (4), AlreadyExists (6),
        Aborted (10), OutOfRange (11), Unimplemented (12), Unauthenticated (16):
        the rest of absl::StatusCode, which the C ABI passes through

DecodeError (a ValueError, not a PresenceError: nothing came from the library)
is raised for malformed protobuf bytes.
"""
from __future__ import annotations

import enum
from typing import Dict, Optional, Type


class StatusCode(enum.IntEnum):
    """presence_status_t: the numbers of absl::StatusCode and google.rpc.Code."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class PresenceError(Exception):
    """A call into libpresence failed. ``code`` is the status code (a
    :class:`StatusCode` when known, else the raw int), ``message`` the
    library's message."""

    code: int = -1

    def __init__(self, message: str, code: Optional[int] = None) -> None:
        if code is None:
            code = type(self).code
        try:
            code = StatusCode(code)
        except ValueError:
            pass
        self.code = code
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        name = self.code.name if isinstance(self.code, StatusCode) else str(self.code)
        return f"{self.message} ({name})"

    def __reduce__(self):  # picklable across processes
        return (_rebuild, (type(self), self.message, int(self.code)))


def _rebuild(cls: type, message: str, code: int) -> "PresenceError":
    err = cls.__new__(cls)
    PresenceError.__init__(err, message, code)
    return err


class InvalidArgument(PresenceError, ValueError):
    """Bad input: an id empty or too long, a value outside its enumeration or
    range, an options struct of an unknown version, a closed handle object.
    Nothing was changed."""

    code = StatusCode.INVALID_ARGUMENT


class NotFound(PresenceError, LookupError):
    """Unknown or closed: an expired or disconnected device handle, a user with
    no such override, an unknown subscriber or topic."""

    code = StatusCode.NOT_FOUND

    def __str__(self) -> str:  # LookupError/KeyError would repr() the message
        return PresenceError.__str__(self)


class ResourceExhausted(PresenceError):
    """A limit was passed (devices or overrides per user, subscribers, list or
    topic sizes), or the library ran out of memory."""

    code = StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(PresenceError):
    """The call does not fit the current state: a stale signal, polling a push
    subscriber, a tick from inside a sink, closing from inside a sink, a
    history query on an engine with no history store, a data folder that
    another engine holds."""

    code = StatusCode.FAILED_PRECONDITION


class StaleSignal(FailedPrecondition):
    """A signal from a session older than the device's current one, or older
    than one already applied: counted and dropped, never applied. Raised by
    Engine.signal() and Engine.connect() for FAILED_PRECONDITION."""


class Internal(PresenceError):
    """Anything unexpected: a bug in presence. The message says more."""

    code = StatusCode.INTERNAL


class PermissionDenied(PresenceError):
    """Not permitted: a data folder that cannot be read or created."""

    code = StatusCode.PERMISSION_DENIED


class Unavailable(PresenceError):
    """A store cannot be reached or written for now; retrying may succeed."""

    code = StatusCode.UNAVAILABLE


class DataLoss(PresenceError):
    """Stored data was found damaged beyond what recovery handles."""

    code = StatusCode.DATA_LOSS


class Cancelled(PresenceError):
    code = StatusCode.CANCELLED


class Unknown(PresenceError):
    code = StatusCode.UNKNOWN


class DeadlineExceeded(PresenceError):
    code = StatusCode.DEADLINE_EXCEEDED


class AlreadyExists(PresenceError):
    code = StatusCode.ALREADY_EXISTS


class Aborted(PresenceError):
    code = StatusCode.ABORTED


class OutOfRange(PresenceError):
    code = StatusCode.OUT_OF_RANGE


class Unimplemented(PresenceError):
    code = StatusCode.UNIMPLEMENTED


class Unauthenticated(PresenceError):
    code = StatusCode.UNAUTHENTICATED


class DecodeError(ValueError):
    """Bytes that are not a valid encoding of the expected protobuf message."""


_BY_CODE: Dict[int, Type[PresenceError]] = {
    cls.code: cls for cls in (
        Cancelled, Unknown, InvalidArgument, DeadlineExceeded, NotFound, AlreadyExists,
        PermissionDenied, ResourceExhausted, FailedPrecondition, Aborted, OutOfRange,
        Unimplemented, Internal, Unavailable, DataLoss, Unauthenticated)
}


def error_for(code: int, message: str) -> PresenceError:
    """The exception for a status code (PresenceError itself for a code this
    binding does not know: the list is append-only, so a newer library may
    answer one)."""
    cls = _BY_CODE.get(code, PresenceError)
    return cls(message, code)
