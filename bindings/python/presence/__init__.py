"""presence: Python bindings for libpresence (include/presence/c.h) over ctypes.

    import presence
    clock = presence.ManualClock(1_000_000)
    with presence.Engine(clock, min_dwell_ms=0) as engine:
        h = engine.connect("alice", "laptop", 1, platform=presence.Platform.WEB)
        engine.tick()
        print(engine.get_one("alice").state)          # State.ONLINE

The shared library is found on first use: $PRESENCE_LIBRARY, then next to
this package, then the build/ folder of a source checkout, then the system
paths (see load_library()).
"""
from __future__ import annotations

from typing import Optional

from . import _lib
from ._lib import LibraryNotFoundError
from .engine import (BatchResult, DeviceTransition, Engine, ManualClock, Override, Probe, Prober,
                     Signal, SignalBatch, StateDurations, Transition, UserPresence)
from .enums import (Activity, Cause, DeviceEvent, DisconnectKind, FileSync, OverrideState,
                    Platform, Source, State)
from .errors import (Aborted, AlreadyExists, Cancelled, DataLoss, DeadlineExceeded, DecodeError,
                     FailedPrecondition, Internal, InvalidArgument, NotFound, OutOfRange,
                     PermissionDenied, PresenceError, ResourceExhausted, StaleSignal, StatusCode,
                     Unauthenticated, Unavailable, Unimplemented, Unknown)
from .fanout import Fanout, Sink
from .wire import (DeviceSummary, DiffBatch, TopicCounts, TopicSection, UserState,
                   decode_diff_batch, decode_topic_section, decode_user_state)

__version__ = "0.1.0"

#: A decoded batch, as push sinks receive it.
Batch = DiffBatch

MAX_USER_ID_BYTES = 128
MAX_DEVICE_ID_BYTES = 128
MAX_GATEWAY_BYTES = 128
MAX_TOPIC_BYTES = 128


def load_library(path: Optional[str] = None) -> str:
    """Loads libpresence now (it is otherwise loaded on first use) and returns
    the path it was loaded from. Raises LibraryNotFoundError, saying where it
    looked."""
    return _lib.load(path).path


def library_version() -> str:
    """The version of the loaded library ("0.1.0")."""
    return _lib.load().version_string


__all__ = [
    "Aborted", "Activity", "AlreadyExists", "Batch", "BatchResult", "Cancelled", "Cause",
    "DataLoss", "DeadlineExceeded", "DecodeError", "DeviceEvent", "DeviceSummary",
    "DeviceTransition", "DiffBatch",
    "DisconnectKind", "Engine", "FailedPrecondition", "Fanout", "FileSync", "Internal",
    "InvalidArgument", "LibraryNotFoundError", "ManualClock", "NotFound", "OutOfRange",
    "Override", "OverrideState", "PermissionDenied", "Platform", "PresenceError", "Probe",
    "Prober",
    "ResourceExhausted", "Signal", "SignalBatch", "Sink", "Source", "StaleSignal", "State",
    "StateDurations", "StatusCode", "TopicCounts", "TopicSection", "Transition",
    "Unauthenticated", "Unavailable", "Unimplemented", "Unknown", "UserPresence", "UserState",
    "decode_diff_batch", "decode_topic_section", "decode_user_state", "library_version",
    "load_library",
]
