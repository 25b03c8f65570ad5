"""What a subscriber receives, as plain Python objects, and a small strict
decoder of the protobuf encoding (proto/presence/v1/presence.proto).

A batch is an encoded presence.v1.DiffBatch: a per-subscriber header
(fields 1 to 3) followed by parts that may be shared between subscribers.
The decoder follows protobuf's parsing rules where protobuf accepts input:
the last value of a scalar field wins, a message field seen twice is merged,
repeated fields append, unknown fields are skipped (a newer library may add
some), and enum numbers this binding does not know stay plain ints. It
raises DecodeError where protobuf rejects input (a truncated or overlong
varint, a length past the end, wire types 3, 4, 6 and 7, field number 0),
and also, stricter than protobuf, for a known field with the wrong wire
type.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

from .enums import State, enum_or_int
from .errors import DecodeError

__all__ = ["DeviceSummary", "UserState", "TopicCounts", "TopicSection", "DiffBatch",
           "decode_diff_batch", "decode_user_state", "decode_topic_section"]


@dataclass(frozen=True)
class DeviceSummary:
    """Live devices per platform."""

    web: int = 0
    desktop: int = 0
    mobile: int = 0
    console: int = 0
    other: int = 0

    @property
    def total(self) -> int:
        return self.web + self.desktop + self.mobile + self.console + self.other

    def __str__(self) -> str:
        parts = [f"{name} {n}" for name, n in (("web", self.web), ("desktop", self.desktop),
                                               ("mobile", self.mobile), ("console", self.console),
                                               ("other", self.other)) if n]
        return ", ".join(parts) if parts else "-"


@dataclass(frozen=True)
class UserState:
    """One user in a snapshot or a diff, as one subscriber sees it. When
    `removed` is set the user left this stream and only user_id is set."""

    user_id: bytes
    state: Union[State, int] = State.UNSPECIFIED
    last_seen_ms: int = 0
    version: int = 0
    devices: DeviceSummary = field(default_factory=DeviceSummary)
    removed: bool = False


@dataclass(frozen=True)
class TopicCounts:
    """Occupancy of a large topic in counts-only mode, by public state."""

    online: int = 0
    away: int = 0
    dnd: int = 0
    offline: int = 0


@dataclass(frozen=True)
class TopicSection:
    """The part of a batch that comes from one topic. full: `users` (or
    `counts`) is the whole topic; left: the subscriber left the topic."""

    topic: bytes
    full: bool = False
    users: Tuple[UserState, ...] = ()
    counts: Optional[TopicCounts] = None
    left: bool = False


@dataclass(frozen=True)
class DiffBatch:
    """What a subscriber receives. `sequence` grows by one per batch and is
    the cursor for Fanout.resume(); a snapshot replaces the whole view."""

    subscriber_id: int
    sequence: int
    snapshot: bool = False
    users: Tuple[UserState, ...] = ()
    topics: Tuple[TopicSection, ...] = ()


# ---- The reader ------------------------------------------------------------------

_VARINT, _I64, _LEN, _SGROUP, _EGROUP, _I32 = 0, 1, 2, 3, 4, 5
_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1


def _varint(data: bytes, pos: int, end: int, what: str) -> Tuple[int, int]:
    result = 0
    shift = 0
    start = pos
    while True:
        if pos >= end:
            raise DecodeError(f"{what}: truncated varint at byte {start}")
        b = data[pos]
        pos += 1
        if shift == 63 and b > 1:
            raise DecodeError(f"{what}: varint at byte {start} is longer than 64 bits")
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise DecodeError(f"{what}: varint at byte {start} is longer than 10 bytes")


def _fields(data: bytes, start: int, end: int, what: str):  # type: ignore[no-untyped-def]
    """Yields (number, wire_type, value, value_start, value_end) for each field
    of data[start:end]; value is the int of a varint, None otherwise."""
    pos = start
    while pos < end:
        key, pos = _varint(data, pos, end, what)
        number, wt = key >> 3, key & 7
        if number == 0:
            raise DecodeError(f"{what}: field number 0 at byte {pos}")
        if wt == _VARINT:
            value, pos = _varint(data, pos, end, what)
            yield number, wt, value, 0, 0
        elif wt == _LEN:
            n, pos = _varint(data, pos, end, what)
            if n > end - pos:
                raise DecodeError(f"{what}: field {number} says {n} bytes, "
                                  f"only {end - pos} left")
            yield number, wt, None, pos, pos + n
            pos += n
        elif wt == _I64:
            if end - pos < 8:
                raise DecodeError(f"{what}: truncated fixed64 field {number}")
            yield number, wt, None, pos, pos + 8
            pos += 8
        elif wt == _I32:
            if end - pos < 4:
                raise DecodeError(f"{what}: truncated fixed32 field {number}")
            yield number, wt, None, pos, pos + 4
            pos += 4
        else:
            raise DecodeError(f"{what}: field {number} has wire type {wt}, which presence "
                              f"never uses")


def _want(what: str, number: int, wt: int, expected: int) -> None:
    if wt != expected:
        kind = {0: "a varint", 1: "fixed64", 2: "length-delimited", 5: "fixed32"}
        raise DecodeError(f"{what}: field {number} is {kind.get(wt, wt)}, expected "
                          f"{kind[expected]}")


def _int64(v: int) -> int:
    return v - (1 << 64) if v >> 63 else v


def _int32(v: int) -> int:
    """An int32 (enum) field: protobuf keeps the low 32 bits, signed."""
    v &= _U32
    return v - (1 << 32) if v >> 31 else v


# Each message: field number -> (name, wire type, kind); kind says how the
# value is taken.
_SUMMARY = {1: "web", 2: "desktop", 3: "mobile", 4: "console", 5: "other"}
_COUNTS = {1: "online", 2: "away", 3: "dnd", 4: "offline"}


def _uint32_message(data: bytes, start: int, end: int, names: Dict[int, str], into: Dict[str, int],
                    what: str) -> None:
    for number, wt, value, _, _ in _fields(data, start, end, what):
        name = names.get(number)
        if name is None:
            continue
        _want(what, number, wt, _VARINT)
        into[name] = value & _U32


def _user_state(data: bytes, start: int, end: int, what: str) -> UserState:
    user_id = b""
    state = 0
    last_seen = 0
    version = 0
    devices: Optional[Dict[str, int]] = None
    removed = False
    for number, wt, value, s, e in _fields(data, start, end, what):
        if number == 1:
            _want(what, number, wt, _LEN)
            user_id = data[s:e]
        elif number == 2:
            _want(what, number, wt, _VARINT)
            state = _int32(value)
        elif number == 3:
            _want(what, number, wt, _VARINT)
            last_seen = _int64(value)
        elif number == 4:
            _want(what, number, wt, _VARINT)
            version = value
        elif number == 5:
            _want(what, number, wt, _LEN)
            if devices is None:
                devices = {}
            _uint32_message(data, s, e, _SUMMARY, devices, what + ".devices")
        elif number == 6:
            _want(what, number, wt, _VARINT)
            removed = value != 0
    return UserState(user_id, enum_or_int(State, state), last_seen, version,
                     DeviceSummary(**devices) if devices else DeviceSummary(), removed)


def _topic_section(data: bytes, start: int, end: int, what: str) -> TopicSection:
    topic = b""
    full = False
    users: List[UserState] = []
    counts: Optional[Dict[str, int]] = None
    left = False
    for number, wt, value, s, e in _fields(data, start, end, what):
        if number == 1:
            _want(what, number, wt, _LEN)
            topic = data[s:e]
        elif number == 2:
            _want(what, number, wt, _VARINT)
            full = value != 0
        elif number == 3:
            _want(what, number, wt, _LEN)
            users.append(_user_state(data, s, e, f"{what}.users[{len(users)}]"))
        elif number == 4:
            _want(what, number, wt, _LEN)
            if counts is None:
                counts = {}
            _uint32_message(data, s, e, _COUNTS, counts, what + ".counts")
        elif number == 5:
            _want(what, number, wt, _VARINT)
            left = value != 0
    return TopicSection(topic, full, tuple(users),
                        TopicCounts(**counts) if counts is not None else None, left)


def _bytes_of(data: Union[bytes, bytearray, memoryview]) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"expected bytes, not {type(data).__name__}")


def decode_user_state(data: Union[bytes, bytearray, memoryview]) -> UserState:
    """Decodes one encoded presence.v1.UserState."""
    b = _bytes_of(data)
    return _user_state(b, 0, len(b), "UserState")


def decode_topic_section(data: Union[bytes, bytearray, memoryview]) -> TopicSection:
    """Decodes one encoded presence.v1.TopicSection."""
    b = _bytes_of(data)
    return _topic_section(b, 0, len(b), "TopicSection")


def decode_diff_batch(data: Union[bytes, bytearray, memoryview]) -> DiffBatch:
    """Decodes an encoded presence.v1.DiffBatch (what poll and push sinks
    deliver). Raises DecodeError for malformed bytes."""
    b = _bytes_of(data)
    what = "DiffBatch"
    subscriber = 0
    sequence = 0
    snapshot = False
    users: List[UserState] = []
    topics: List[TopicSection] = []
    for number, wt, value, s, e in _fields(b, 0, len(b), what):
        if number == 1:
            _want(what, number, wt, _VARINT)
            subscriber = value
        elif number == 2:
            _want(what, number, wt, _VARINT)
            sequence = value
        elif number == 3:
            _want(what, number, wt, _VARINT)
            snapshot = value != 0
        elif number == 4:
            _want(what, number, wt, _LEN)
            users.append(_user_state(b, s, e, f"{what}.users[{len(users)}]"))
        elif number == 5:
            _want(what, number, wt, _LEN)
            topics.append(_topic_section(b, s, e, f"{what}.topics[{len(topics)}]"))
    return DiffBatch(subscriber, sequence, snapshot, tuple(users), tuple(topics))
