"""Enumerations with the numbers of presence/c.h and presence.v1
(proto/presence/v1/presence.proto). 0 is UNSPECIFIED on the wire and never a
valid argument: the library answers InvalidArgument for it, as for any value
outside an enumeration."""
from __future__ import annotations

import enum
from typing import Type, TypeVar, Union


class State(enum.IntEnum):
    """What others see of a user."""

    UNSPECIFIED = 0
    OFFLINE = 1
    AWAY = 2
    ONLINE = 3
    DND = 4


class Source(enum.IntEnum):
    """Where a signal came from; precedence by value (MANUAL > APP > INFERRED)."""

    UNSPECIFIED = 0
    INFERRED = 1
    APP = 2
    MANUAL = 3


class Activity(enum.IntEnum):
    """What a signal says about the person behind the device."""

    UNSPECIFIED = 0
    ACTIVE = 1
    IDLE = 2


class Platform(enum.IntEnum):
    """The kind of device, counted in device summaries."""

    UNSPECIFIED = 0
    WEB = 1
    DESKTOP = 2
    MOBILE = 3
    CONSOLE = 4
    OTHER = 5


class OverrideState(enum.IntEnum):
    """A manual state that a user sets; INVISIBLE shows as OFFLINE to everyone
    but the user."""

    UNSPECIFIED = 0
    ONLINE = 1
    AWAY = 2
    DND = 3
    INVISIBLE = 4


class DisconnectKind(enum.IntEnum):
    """CLEAN (logout): dead at once. ABRUPT (socket dropped): live for
    reconnect_grace_ms, so that a quick reconnect shows nothing."""

    UNSPECIFIED = 0
    CLEAN = 1
    ABRUPT = 2


class DeviceEvent(enum.IntEnum):
    """What happened to one device (the per-device audit); the DEAD_* events
    end a session's life and say why."""

    CONNECT = 1           # a session became live
    GRACE = 2             # an abrupt disconnect: the reconnect grace began
    DEAD_TIMEOUT = 3      # silent past offline_after, probes unanswered
    DEAD_AFTER_GRACE = 4  # abrupt disconnect, no reconnect within the grace
    DEAD_ABRUPT = 5       # abrupt disconnect of a device already lapsed
    DEAD_CLEAN = 6        # a clean disconnect
    DEAD_DRAINED = 7      # the operator drained its gateway
    DEAD_REPLACED = 8     # a newer session of the same device took over
    PROBE_ANSWERED = 9    # the host answered a probe of the silent device
    PROBE_GIVEN_UP = 10   # it died for silence, its probes unanswered


class Cause(enum.IntEnum):
    """Why a published change happened."""

    UNSPECIFIED = 0
    SIGNAL = 1
    TIMEOUT = 2
    DISCONNECT = 3
    OVERRIDE = 4
    OVERRIDE_EXPIRY = 5
    MERGE = 6
    WITHHELD = 7  # a history entry read by anyone but the user


class FileSync(enum.IntEnum):
    """When the file store fdatasyncs its log (presence_file_sync_t): what an
    acknowledged write survives. EVERY_WRITE: a crash, an OS crash, a power
    loss. INTERVAL: an OS crash loses at most file_sync_interval_ms. NEVER:
    the OS writes back when it chooses (and the log is synced on close)."""

    EVERY_WRITE = 1
    INTERVAL = 2
    NEVER = 3


E = TypeVar("E", bound=enum.IntEnum)


def enum_or_int(cls: Type[E], value: int) -> Union[E, int]:
    """value as a member of cls, or the plain int when cls has no such member
    (proto3 enums are open: a newer peer may send a number this binding does
    not know)."""
    try:
        return cls(value)
    except ValueError:
        return value
