"""ManualClock and Engine: presence_clock_t and presence_engine_t of
presence/c.h, and the signal batch (an array of presence_signal_t built in
bulk, crossing into C once per batch)."""
from __future__ import annotations

import array
import ctypes
import itertools
import os
import sys
from dataclasses import dataclass, field
from typing import (TYPE_CHECKING, Any, Callable, Iterable, List, Optional, Sequence, Set,
                    Union)

from . import _lib
from ._handle import Handle, in_sink
from ._lib import (PROBE_CB, BytesList, as_bytes, address_of, presence_batch_result_t,
                   presence_device_transition_t, presence_engine_options_t, presence_override_t,
                   presence_signal_t, presence_transition_t, presence_user_presence_t)
from .enums import (Activity, Cause, DeviceEvent, DisconnectKind, OverrideState, Platform,
                    Source, State, enum_or_int)
from .errors import (FailedPrecondition, InvalidArgument, PresenceError, StaleSignal, StatusCode,
                     error_for)
from .wire import DeviceSummary

if TYPE_CHECKING:
    from .fanout import Fanout

Id = Union[str, bytes]

_I32 = (-(1 << 31), (1 << 31) - 1)
_I64 = (-(1 << 63), (1 << 63) - 1)
_U64 = (0, (1 << 64) - 1)


def _int(value: Any, what: str, bounds: "tuple[int, int]") -> int:
    """An int argument, checked before ctypes would silently truncate it."""
    if not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    lo, hi = bounds
    if not lo <= value <= hi:
        raise InvalidArgument(f"{what} {value} is out of range [{lo}, {hi}]")
    return value


class ManualClock(Handle):
    """A clock that moves only when the host moves it (presence_clock_t), for
    tests and simulations. An engine created with it holds its own reference,
    so the clock may be closed before the engine."""

    _kind = "clock"

    def __init__(self, start_ms: int = 0) -> None:
        self._lib = _lib.load()
        ptr = self._lib.presence_clock_manual_new(_int(start_ms, "start_ms", _I64))
        self._adopt(ptr, self._lib.presence_clock_destroy)

    def now_ms(self) -> int:
        """The clock's time, in ms."""
        return self._lib.presence_clock_now(self._p())

    def advance(self, delta_ms: int) -> int:
        """Moves the clock forward by delta_ms (InvalidArgument when negative);
        returns the new time."""
        self._lib.presence_clock_advance(self._p(), _int(delta_ms, "delta_ms", _I64))
        return self.now_ms()

    def set(self, now_ms: int) -> None:
        """Sets the clock; InvalidArgument for a time before its own (a clock
        never goes back)."""
        self._lib.presence_clock_set(self._p(), _int(now_ms, "now_ms", _I64))


# ---- Signals ---------------------------------------------------------------------


@dataclass
class Signal:
    """A keyed signal: a device is alive (presence_signal_t). session_id is >
    0 and grows on every reconnect of the device; timestamp_ms 0 means now."""

    user_id: Id
    device_id: Id
    session_id: int
    platform: int = Platform.OTHER
    source: int = Source.APP
    activity: int = Activity.ACTIVE
    timestamp_ms: int = 0
    trace_id: int = 0
    gateway: Optional[Id] = None


_SIG_WORDS = ctypes.sizeof(presence_signal_t) // 8
_FAST = (sys.byteorder == "little" and ctypes.sizeof(presence_signal_t) == 88 and
         array.array("Q").itemsize == 8 and array.array("i").itemsize == 4)
_F = {name: getattr(presence_signal_t, name).offset for name, _ in presence_signal_t._fields_}


def _column(value: Any, n: int, what: str) -> Optional[Sequence[Any]]:
    """None for a scalar (the same for every signal), else the sequence,
    checked for length."""
    if isinstance(value, (int, str, bytes)) or value is None:
        return None
    seq = value if isinstance(value, (list, tuple, array.array)) else list(value)
    if len(seq) != n:
        raise InvalidArgument(f"{what} has {len(seq)} values for {n} signals")
    return seq


class SignalBatch:
    """Signals for one Engine.signal_batch() call: a ctypes array of
    presence_signal_t (``.array``) with the id bytes it points to, built in
    bulk from columns. A batch may be sent any number of times.

    Each column is a sequence with one value per signal; the keyword columns
    may also be one value for all. Ids are str (UTF-8) or bytes.
    """

    __slots__ = ("array", "count", "_keep")

    def __init__(self, user_ids: Sequence[Id], device_ids: Sequence[Id],
                 session_ids: Sequence[int], *, platform: Any = Platform.OTHER,
                 source: Any = Source.APP, activity: Any = Activity.ACTIVE,
                 timestamp_ms: Any = 0, trace_id: Any = 0, gateway: Any = None) -> None:
        for what, col in (("user_ids", user_ids), ("device_ids", device_ids)):
            if isinstance(col, (str, bytes)):
                raise TypeError(f"{what} must be a sequence of ids, not one {type(col).__name__}")
        if not isinstance(user_ids, (list, tuple)):
            user_ids = list(user_ids)
        n = len(user_ids)
        device_ids = _column(device_ids, n, "device_ids")  # type: ignore[assignment]
        sessions = _column(session_ids, n, "session_ids")
        if device_ids is None or sessions is None:
            raise TypeError("device_ids and session_ids must be sequences, one value per signal")
        self.count = n
        users_blob, user_lens = _lib.join_ids(user_ids, "user_id")
        devices_blob, device_lens = _lib.join_ids(device_ids, "device_id")
        keep: List[Any] = [users_blob, devices_blob]
        gateways = _column(gateway, n, "gateway")
        if gateways is not None:
            gw_blob, gw_lens = _lib.join_ids(
                [b"" if g is None else g for g in gateways], "gateway")
            keep.append(gw_blob)
        else:
            gw_blob = b"" if gateway is None else as_bytes(gateway, "gateway")
            gw_lens = None
            keep.append(gw_blob)
        self._keep = keep
        if not _FAST:
            self.array = self._slow(n, user_ids, device_ids, sessions, platform, source, activity,
                                    timestamp_ms, trace_id, gateways, gw_blob)
            return
        words = array.array("Q", bytes(8 * _SIG_WORDS * n))
        w = _SIG_WORDS

        def put_q(offset: int, values: Any, what: str, typecode: str = "Q") -> None:
            try:
                col = _column(values, n, what)
                if col is None:
                    col = array.array(typecode, [values]) * n
                elif not isinstance(col, array.array) or col.typecode != typecode:
                    col = array.array(typecode, col)
            except OverflowError:
                raise InvalidArgument(f"{what}: a value is out of range") from None
            except TypeError:
                raise TypeError(f"{what} must be ints") from None
            if typecode != "Q":
                col = array.array("Q", col.tobytes())
            words[offset // 8::w] = col

        def put_pointers(offset: int, blob: bytes, lens: List[int]) -> None:
            lens_q = array.array("Q", lens)
            words[offset // 8 + 1::w] = lens_q
            base = address_of(blob) or 0
            ptrs = array.array("Q", list(itertools.accumulate(lens_q, initial=base)))
            del ptrs[-1]
            words[offset // 8::w] = ptrs

        put_pointers(_F["user_id"], users_blob, user_lens)
        put_pointers(_F["device_id"], devices_blob, device_lens)
        if gw_lens is not None:
            put_pointers(_F["gateway"], gw_blob, gw_lens)
        elif gw_blob:
            put_q(_F["gateway"], address_of(gw_blob), "gateway")
            put_q(_F["gateway_len"], len(gw_blob), "gateway")
        put_q(_F["session_id"], sessions, "session_ids")
        put_q(_F["timestamp_ms"], timestamp_ms, "timestamp_ms", "q")
        put_q(_F["trace_id"], trace_id, "trace_id")
        ints = memoryview(words).cast("B").cast("i")
        for name, values in (("platform", platform), ("source", source),
                             ("activity", activity)):
            try:
                col = _column(values, n, name)
                col = (array.array("i", [values]) * n if col is None
                       else array.array("i", col))
            except OverflowError:
                raise InvalidArgument(f"{name}: a value is out of range") from None
            except TypeError:
                raise TypeError(f"{name} must be ints") from None
            ints[_F[name] // 4::w * 2] = col
        ints.release()
        keep.append(words)
        self.array = (presence_signal_t * n).from_buffer(words)

    @staticmethod
    def _slow(n: int, user_ids: Sequence[Id], device_ids: Sequence[Id], sessions: Sequence[int],
              platform: Any, source: Any, activity: Any, timestamp_ms: Any, trace_id: Any,
              gateways: Optional[Sequence[Any]], gw_blob: bytes) -> Any:
        """One struct at a time (big-endian machines, unexpected layouts)."""
        arr = (presence_signal_t * n)()
        cols = {k: _column(v, n, k) for k, v in (("platform", platform), ("source", source),
                                                  ("activity", activity),
                                                  ("timestamp_ms", timestamp_ms),
                                                  ("trace_id", trace_id))}
        scal = {"platform": platform, "source": source, "activity": activity,
                "timestamp_ms": timestamp_ms, "trace_id": trace_id}
        bounds = {"platform": _I32, "source": _I32, "activity": _I32, "timestamp_ms": _I64,
                  "trace_id": _U64}
        keep = []
        for i in range(n):
            s = arr[i]
            u = as_bytes(user_ids[i], "user_id")
            d = as_bytes(device_ids[i], "device_id")
            g = gw_blob if gateways is None else (b"" if gateways[i] is None
                                                  else as_bytes(gateways[i], "gateway"))
            keep += [u, d, g]
            s.user_id, s.user_id_len = address_of(u), len(u)
            s.device_id, s.device_id_len = address_of(d), len(d)
            s.gateway, s.gateway_len = address_of(g), len(g)
            s.session_id = _int(sessions[i], "session_id", _U64)
            for k, col in cols.items():
                v = scal[k] if col is None else col[i]
                setattr(s, k, _int(v, k, bounds[k]))
        arr._presence_keep = keep  # type: ignore[attr-defined]
        return arr

    @classmethod
    def from_signals(cls, signals: Iterable[Signal]) -> "SignalBatch":
        """A batch from Signal objects."""
        sigs = list(signals)
        for i, s in enumerate(sigs):
            if not isinstance(s, Signal):
                raise TypeError(f"signals[{i}] must be a presence.Signal, not "
                                f"{type(s).__name__}")
        return cls([s.user_id for s in sigs], [s.device_id for s in sigs],
                   [s.session_id for s in sigs], platform=[s.platform for s in sigs],
                   source=[s.source for s in sigs], activity=[s.activity for s in sigs],
                   timestamp_ms=[s.timestamp_ms for s in sigs],
                   trace_id=[s.trace_id for s in sigs], gateway=[s.gateway for s in sigs])

    def __len__(self) -> int:
        return self.count


@dataclass(frozen=True)
class BatchResult:
    """The outcome of Engine.signal_batch() and Engine.beat_many(): how many
    were applied (exact replays included), dropped as stale, and rejected;
    `error` is the exception for the first one not applied (None when all
    were)."""

    applied: int
    stale: int
    rejected: int
    error: Optional[PresenceError] = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def first_error(self) -> StatusCode:
        return StatusCode.OK if self.error is None else self.error.code  # type: ignore[return-value]

    def raise_for_error(self) -> None:
        """Raises `error` when a signal was not applied."""
        if self.error is not None:
            raise self.error


def _batch_result(count: int, status: int, message: Optional[str],
                  r: presence_batch_result_t) -> BatchResult:
    """A batch call's answer: raises when the call itself was refused (it
    counted fewer than `count`), else counts the outcomes."""
    if status != 0 and r.applied + r.stale + r.rejected < count:
        raise error_for(status, message or "")
    error = None
    if status != 0:
        error = (StaleSignal(message or "", status) if status == 9
                 else error_for(status, message or ""))
    return BatchResult(r.applied, r.stale, r.rejected, error)


# ---- Results -----------------------------------------------------------------------


@dataclass(frozen=True)
class UserPresence:
    """One user, as Engine.get() answers (presence_user_presence_t), in the
    viewer's view: anyone but the user reads its public view (an invisible
    user is OFFLINE, and its last_seen and version stay where they were when
    it went invisible). known=False: nothing to show (every field zero)."""

    user_id: bytes
    known: bool
    state: Union[State, int]
    version: int = 0
    last_seen_ms: int = 0
    freshness_ms: int = 0
    live_devices: int = 0
    devices: DeviceSummary = field(default_factory=DeviceSummary)
    override: Optional[Union[OverrideState, int]] = None
    override_until_ms: int = 0


@dataclass(frozen=True)
class Override:
    """One override on a user's stack; until_ms 0: until revoked."""

    id: int
    state: Union[OverrideState, int]
    set_at_ms: int
    until_ms: int


@dataclass(frozen=True)
class Transition:
    """One published transition of a user (presence_transition_t): state is
    the public view (OFFLINE while invisible), self_state the user's own."""

    version: int
    at_ms: int
    previous: Union[State, int]
    state: Union[State, int]
    self_state: Union[State, int]
    cause: Union[Cause, int]
    trace_id: int
    last_seen_ms: int


@dataclass(frozen=True)
class DeviceTransition:
    """One transition of a device (presence_device_transition_t)."""

    at_ms: int
    session_id: int
    event: Union[DeviceEvent, int]
    platform: Union[Platform, int]


@dataclass(frozen=True)
class StateDurations:
    """Time spent in each state in a window (Engine.time_in_states)."""

    online_ms: int
    away_ms: int
    dnd_ms: int
    offline_ms: int


@dataclass(frozen=True)
class Probe:
    """A probe the engine asks the host to send (docs/design.md rule 9): ping
    device `device_id` of user `user_id` in session `session_id` (a WebSocket
    ping, a push), and report its answer with Engine.answer_probe(probe_id).
    The answer counts as a signal of `source`."""
    user_id: bytes
    device_id: bytes
    session_id: int
    probe_id: int
    source: Source
    attempt: int  # 1 for the first probe of a silence, 2 for the first retry, ...
    gateway: bytes  # that carried the device's last signal; b"" when none


Prober = Callable[[Probe], None]

# Set through other keywords: clock (clock), store and the folder (file_dir),
# the prober (prober).
_OPTION_FIELDS = {name: t for name, t in presence_engine_options_t._fields_
                  if name not in ("version", "clock", "store", "file_dir", "file_dir_len",
                                  "prober", "prober_payload")}

_STORE_FILE = 2  # PRESENCE_STORE_FILE


def _options_struct(lib: "_lib.Lib", clock: Optional[ManualClock], file_dir: Optional[bytes],
                    options: dict) -> presence_engine_options_t:
    """The options struct; it points into file_dir, which the caller keeps
    alive until presence_engine_new returned."""
    o = presence_engine_options_t()
    lib.presence_engine_options_init(ctypes.byref(o), _lib.ENGINE_OPTIONS_VERSION)
    if clock is not None:
        if not isinstance(clock, ManualClock):
            raise TypeError(f"clock must be a presence.ManualClock, not {type(clock).__name__}")
        o.clock = clock._p()
    if file_dir is not None:
        o.store = _STORE_FILE
        o.file_dir, o.file_dir_len = address_of(file_dir), len(file_dir)
    for name, value in options.items():
        t = _OPTION_FIELDS.get(name)
        if t is None:
            raise TypeError(f"unknown engine option {name!r} (known: "
                            f"{', '.join(sorted(_OPTION_FIELDS))})")
        if t is ctypes.c_uint8:
            if not isinstance(value, (bool, int)):
                raise TypeError(f"{name} must be a bool")
            value = 1 if value else 0
        else:
            value = _int(value, name, _I32 if t is ctypes.c_int32 else _I64)
        setattr(o, name, value)
    return o


def _probe_callback(prober: Prober, errors: List[BaseException]) -> Callable[..., None]:
    def on_probe(p: Any, payload: Optional[int]) -> None:
        in_sink.depth = getattr(in_sink, "depth", 0) + 1
        try:
            r = p.contents
            prober(Probe(ctypes.string_at(r.user_id, r.user_id_len),
                         ctypes.string_at(r.device_id, r.device_id_len), r.session_id,
                         r.probe_id, Source(r.source), r.attempt,
                         ctypes.string_at(r.gateway, r.gateway_len) if r.gateway_len else b""))
        except BaseException as e:  # never through C (convention 12)
            errors.append(e)
        finally:
            in_sink.depth -= 1
    return on_probe


class Engine(Handle):
    """Decides who is online (presence_engine_t).

    Feed it signals (signal, signal_batch, connect/beat), call tick() about
    every 100 ms, read states with get() or receive diffs through a Fanout.
    Keyword options are the fields of presence_engine_options_t
    (presence/c.h gives each default): min_dwell_ms=0, shards=4,
    max_signals_per_device_per_sec=100, memory_budget_bytes=1 << 30, ...

    file_dir (a path: str, bytes or os.PathLike) keeps the engine's state in
    the crash-safe file store in that folder (created when missing): a new
    engine on the folder loads the users and devices it holds, and history(),
    time_in_states() and last_seen() read its audit trail. file_sync
    (presence.FileSync) and file_sync_interval_ms choose when it syncs.
    Without file_dir the engine is memory only and has no history. A folder
    that another engine holds raises FailedPrecondition; one that cannot be
    read or created, PermissionDenied or the error of the file system.

    prober (a callable taking a presence.Probe) turns on push/pull checks
    (docs/design.md rule 9): before a silent device is declared offline the
    engine asks it to check the device, from inside tick(), and the host
    reports the answer with answer_probe() (from inside the prober too).
    probe_margin_ms, probe_retry_ms, max_probes and
    max_probes_per_gateway_per_sec tune it. An exception raised by the
    prober is raised from tick(), like a sink's.

    Every method may be called from any thread at once (ctypes releases the
    GIL during each call into the library), except close(), which must be
    the last.
    """

    _kind = "engine"

    def __init__(self, clock: Optional[ManualClock] = None, *,
                 file_dir: Optional[Union[str, bytes, "os.PathLike[Any]"]] = None,
                 prober: Optional[Prober] = None, **options: Any) -> None:
        lib = self._lib = _lib.load()
        folder = None if file_dir is None else os.fsencode(file_dir)
        o = _options_struct(lib, clock, folder, options)
        self._clock = clock
        self._fanouts: Set["Fanout"] = set()  # open fan-outs: alive while the engine is
        self._sink_errors: List[BaseException] = []
        if prober is not None:
            if not callable(prober):
                raise TypeError(f"prober must be callable, not {type(prober).__name__}")
            # Keeps the C callback alive as long as the engine; it closes
            # over the error list, not over self.
            self._on_probe = PROBE_CB(_probe_callback(prober, self._sink_errors))
            o.prober = self._on_probe
        self._adopt(lib.presence_engine_new(ctypes.byref(o)), lib.presence_engine_destroy)

    def _release(self) -> None:
        super()._release()
        self._fanouts = set()

    # ---- Keyed signals ----

    def _signal_struct(self, user_id: Id, device_id: Id, session_id: int, platform: int,
                       source: int, activity: int, timestamp_ms: int, trace_id: int,
                       gateway: Optional[Id], keep: list) -> presence_signal_t:
        u = as_bytes(user_id, "user_id")
        d = as_bytes(device_id, "device_id")
        g = b"" if gateway is None else as_bytes(gateway, "gateway")
        keep += (u, d, g)
        s = presence_signal_t()
        s.user_id, s.user_id_len = address_of(u), len(u)
        s.device_id, s.device_id_len = address_of(d), len(d)
        s.gateway, s.gateway_len = address_of(g), len(g)
        s.session_id = _int(session_id, "session_id", _U64)
        s.timestamp_ms = _int(timestamp_ms, "timestamp_ms", _I64)
        s.trace_id = _int(trace_id, "trace_id", _U64)
        s.platform = _int(platform, "platform", _I32)
        s.source = _int(source, "source", _I32)
        s.activity = _int(activity, "activity", _I32)
        return s

    @staticmethod
    def _check_signal(result: tuple) -> Any:
        status, message = result[0], result[1]
        if status == StatusCode.FAILED_PRECONDITION:
            raise StaleSignal(message or "stale signal", status)
        if status != 0:
            raise error_for(status, message or "")
        return result[2] if len(result) > 2 else None

    def signal(self, user_id: Id, device_id: Id, session_id: int, *,
               platform: int = Platform.OTHER, source: int = Source.APP,
               activity: int = Activity.ACTIVE, timestamp_ms: int = 0, trace_id: int = 0,
               gateway: Optional[Id] = None) -> None:
        """Applies one keyed signal; a device the engine does not hold is
        created. StaleSignal for a signal from an older session."""
        keep: list = []
        s = self._signal_struct(user_id, device_id, session_id, platform, source, activity,
                                timestamp_ms, trace_id, gateway, keep)
        self._check_signal(self._lib.presence_engine_signal(self._p(), ctypes.byref(s)))

    def signal_batch(self, signals: Union[SignalBatch, Iterable[Signal]]) -> BatchResult:
        """Applies signals in order, in one call into the library (each shard
        is locked once per batch). Signals after a failed one are still
        applied; the result counts the outcomes and carries the exception of
        the first failure (raise it with result.raise_for_error())."""
        batch = signals if isinstance(signals, SignalBatch) else SignalBatch.from_signals(signals)
        ptr = ctypes.addressof(batch.array) if batch.count else None
        return _batch_result(batch.count,
                             *self._lib.presence_engine_signal_batch(self._p(), ptr, batch.count))

    def disconnect_device(self, user_id: Id, device_id: Id, kind: int,
                          session_id: int = 0) -> None:
        """Ends session `session_id` (0: the current one) of a device named by
        its ids. NotFound when unknown or already closed."""
        u = as_bytes(user_id, "user_id")
        d = as_bytes(device_id, "device_id")
        self._lib.presence_engine_disconnect_device(
            self._p(), address_of(u), len(u), address_of(d), len(d),
            _int(session_id, "session_id", _U64), _int(kind, "kind", _I32))

    # ---- Handles ----

    def connect(self, user_id: Id, device_id: Id, session_id: int, *,
                platform: int = Platform.OTHER, source: int = Source.APP,
                activity: int = Activity.ACTIVE, timestamp_ms: int = 0, trace_id: int = 0,
                gateway: Optional[Id] = None) -> int:
        """Applies a signal as a connect and returns the device's handle (an
        int, never 0) for beat() and disconnect()."""
        keep: list = []
        s = self._signal_struct(user_id, device_id, session_id, platform, source, activity,
                                timestamp_ms, trace_id, gateway, keep)
        return self._check_signal(self._lib.presence_engine_connect(self._p(), ctypes.byref(s)))

    def beat(self, handle: int, activity: int = Activity.ACTIVE,
             source: int = Source.APP) -> None:
        """A heartbeat on a handle, at the engine's now. NotFound once the
        handle expired (connect again)."""
        self._lib.presence_engine_beat(self._p(), _int(handle, "handle", _U64),
                                       _int(activity, "activity", _I32),
                                       _int(source, "source", _I32))

    def beat_many(self, handles: Union[Sequence[int], "array.array[int]"],
                  activity: int = Activity.ACTIVE, source: int = Source.APP) -> BatchResult:
        """Heartbeats on many handles in one call into the library, as beat()
        on each in turn, at a fraction of the cost per beat. Handles after a
        failed one are still beaten; the result counts the outcomes (a closed
        or unknown handle is rejected with NotFound). An array.array('Q') is
        passed without a copy."""
        if not (isinstance(handles, array.array) and handles.typecode == "Q"):
            try:
                handles = array.array("Q", handles)
            except OverflowError:
                raise InvalidArgument("a handle is out of range [0, 2**64 - 1]") from None
        count = len(handles)
        ptr = handles.buffer_info()[0] if count else None
        return _batch_result(count, *self._lib.presence_engine_beat_many(
            self._p(), ptr, count, _int(activity, "activity", _I32), _int(source, "source", _I32)))

    def disconnect(self, handle: int, kind: int) -> None:
        """Closes the handle's session (kind: DisconnectKind). The handle is
        invalid afterwards (NotFound)."""
        self._lib.presence_engine_disconnect(self._p(), _int(handle, "handle", _U64),
                                             _int(kind, "kind", _I32))

    # ---- Overrides ----

    def set_override(self, user_id: Id, state: int, until_ms: int = 0,
                     trace_id: int = 0) -> int:
        """Pushes a manual state on the user's stack; returns its id. until_ms
        is absolute on the engine's clock (0: until revoked)."""
        u = as_bytes(user_id, "user_id")
        return self._lib.presence_engine_set_override(
            self._p(), address_of(u), len(u), _int(state, "state", _I32),
            _int(until_ms, "until_ms", _I64), _int(trace_id, "trace_id", _U64))

    def revoke_override(self, user_id: Id, override_id: int) -> None:
        """Removes one override; NotFound when the user has none with that id."""
        u = as_bytes(user_id, "user_id")
        self._lib.presence_engine_revoke_override(self._p(), address_of(u), len(u),
                                                  _int(override_id, "override_id", _U64))

    def clear_overrides(self, user_id: Id) -> int:
        """Removes every override of the user; returns how many."""
        u = as_bytes(user_id, "user_id")
        return self._lib.presence_engine_clear_overrides(self._p(), address_of(u), len(u))

    def revoke_overrides_set_between(self, from_ms: int, to_ms: int) -> int:
        """Every override of any user set in [from_ms, to_ms]; returns how many."""
        return self._lib.presence_engine_revoke_overrides_set_between(
            self._p(), _int(from_ms, "from_ms", _I64), _int(to_ms, "to_ms", _I64))

    def list_overrides(self, user_id: Id) -> List[Override]:
        """The user's override stack, oldest first."""
        u = as_bytes(user_id, "user_id")
        ptr, count = self._lib.presence_engine_list_overrides(self._p(), address_of(u), len(u))
        if not ptr:
            return []
        try:
            arr = (presence_override_t * count).from_address(ptr)
            return [Override(o.id, enum_or_int(OverrideState, o.state), o.set_at_ms, o.until_ms)
                    for o in arr]
        finally:
            self._lib.presence_free(ptr)

    # ---- Queries ----

    def _get(self, fn: Any, user_ids: Iterable[Id], viewer: Optional[Id]) -> List[UserPresence]:
        ids = BytesList(user_ids, "user_id")
        v = b"" if viewer is None else as_bytes(viewer, "viewer")
        ptr = fn(self._p(), ids.pointer, ids.count, address_of(v), len(v))
        if not ptr:
            return []
        try:
            arr = (presence_user_presence_t * ids.count).from_address(ptr)
            out = []
            for p in arr:
                d = p.devices
                out.append(UserPresence(
                    ctypes.string_at(p.user_id, p.user_id_len) if p.user_id_len else b"",
                    bool(p.known), enum_or_int(State, p.state), p.version, p.last_seen_ms,
                    p.freshness_ms, p.live_devices, DeviceSummary(d[0], d[1], d[2], d[3], d[4]),
                    enum_or_int(OverrideState, p.override_state) if p.has_override else None,
                    p.override_until_ms))
            return out
        finally:
            self._lib.presence_free(ptr)

    def get(self, user_ids: Iterable[Id], viewer: Optional[Id] = None) -> List[UserPresence]:
        """The users, in order, as `viewer` sees them (None: an anonymous
        viewer; a user sees its own true state), exact at the clock's now.
        One call into the library for the whole list. Ids that fail
        validation come back with known=False and an empty user_id."""
        return self._get(self._lib.presence_engine_get, user_ids, viewer)

    def get_one(self, user_id: Id, viewer: Optional[Id] = None) -> UserPresence:
        """get() for one user."""
        return self.get([user_id], viewer)[0]

    def get_published(self, user_ids: Iterable[Id],
                      viewer: Optional[Id] = None) -> List[UserPresence]:
        """As get(), but state and version are those of each user's last
        published change: what subscribers have been told."""
        return self._get(self._lib.presence_engine_get_published, user_ids, viewer)

    # ---- History and durable state (a file store: see file_dir) ----

    def history(self, user_id: Id, from_ms: int = 0, to_ms: int = _I64[1],
                viewer: Optional[Id] = None) -> List[Transition]:
        """The user's published transitions with at_ms in [from_ms, to_ms],
        oldest first, as `viewer` sees them: the user itself reads every
        transition with cause and trace id; anyone else (None included) only
        the changes of the public view, with cause WITHHELD and trace id 0.
        FailedPrecondition without a history store (no file_dir)."""
        u = as_bytes(user_id, "user_id")
        v = b"" if viewer is None else as_bytes(viewer, "viewer")
        ptr, count = self._lib.presence_engine_history_as(
            self._p(), address_of(u), len(u), _int(from_ms, "from_ms", _I64),
            _int(to_ms, "to_ms", _I64), address_of(v), len(v))
        if not ptr:
            return []
        try:
            return [Transition(t.version, t.at_ms, enum_or_int(State, t.previous),
                               enum_or_int(State, t.state), enum_or_int(State, t.self_state),
                               enum_or_int(Cause, t.cause), t.trace_id, t.last_seen_ms)
                    for t in (presence_transition_t * count).from_address(ptr)]
        finally:
            self._lib.presence_free(ptr)

    def device_history(self, user_id: Id, device_id: Id, from_ms: int = 0,
                       to_ms: int = _I64[1], *, viewer: Optional[Id]) -> List[DeviceTransition]:
        """The device's transitions (connect, grace, death with its cause,
        probe outcomes) with at_ms in [from_ms, to_ms], oldest first; [] for
        an unknown user or device. Only the user itself reads it: any other
        viewer, None included, gets PermissionDenied whether or not the user
        exists (an operator's host asks as the user). FailedPrecondition
        without a history store (no file_dir)."""
        u = as_bytes(user_id, "user_id")
        d = as_bytes(device_id, "device_id")
        v = b"" if viewer is None else as_bytes(viewer, "viewer")
        ptr, count = self._lib.presence_engine_device_history(
            self._p(), address_of(u), len(u), address_of(d), len(d),
            _int(from_ms, "from_ms", _I64), _int(to_ms, "to_ms", _I64), address_of(v), len(v))
        if not ptr:
            return []
        try:
            return [DeviceTransition(t.at_ms, t.session_id, enum_or_int(DeviceEvent, t.event),
                                     enum_or_int(Platform, t.platform))
                    for t in (presence_device_transition_t * count).from_address(ptr)]
        finally:
            self._lib.presence_free(ptr)

    def time_in_states(self, user_id: Id, from_ms: int, to_ms: int,
                       viewer: Optional[Id] = None) -> StateDurations:
        """Time the user spent in each state in [from_ms, to_ms] (in the
        viewer's view, as history(); the part after now is not counted), from
        the history."""
        u = as_bytes(user_id, "user_id")
        v = b"" if viewer is None else as_bytes(viewer, "viewer")
        d = self._lib.presence_engine_time_in_states_as(
            self._p(), address_of(u), len(u), _int(from_ms, "from_ms", _I64),
            _int(to_ms, "to_ms", _I64), address_of(v), len(v))
        return StateDurations(d.online_ms, d.away_ms, d.dnd_ms, d.offline_ms)

    def last_seen(self, user_id: Id, viewer: Optional[Id] = None) -> int:
        """The user's last accepted signal, in ms, in the viewer's view: from
        the engine while it knows the user, else from the history. NotFound
        when neither knows it (for others: when its public view never showed
        it)."""
        u = as_bytes(user_id, "user_id")
        v = b"" if viewer is None else as_bytes(viewer, "viewer")
        return self._lib.presence_engine_last_seen_as(self._p(), address_of(u), len(u),
                                                      address_of(v), len(v))

    def erase(self, user_id: Id) -> None:
        """Forgets the user everywhere: engine, store and history."""
        u = as_bytes(user_id, "user_id")
        self._lib.presence_engine_erase(self._p(), address_of(u), len(u))

    def drain_gateway(self, gateway: Id, max_devices: int = 1000) -> int:
        """Disconnects cleanly up to max_devices (> 0) open devices whose
        signals named the gateway; returns how many. Call again until it
        returns 0. NotFound when no device carries the gateway (none ever
        did, or they are all gone)."""
        g = as_bytes(gateway, "gateway")
        return self._lib.presence_engine_drain_gateway(
            self._p(), address_of(g), len(g), _int(max_devices, "max_devices", _U64))

    def rebuild(self) -> None:
        """Drops what the engine holds in memory and reloads its store (tick
        first: unwritten changes are lost). Do not feed the engine meanwhile."""
        self._lib.presence_engine_rebuild(self._p())

    # ---- Time and operations ----

    def tick(self) -> int:
        """Fires due timers and publishes changes (to every fan-out, which
        calls push sinks on this thread); returns how many changes were
        published. Call it every 100 ms. An exception raised by a sink does
        not stop the tick: the first one is raised from here once the tick
        is done."""
        published = self._lib.presence_engine_tick(self._p())
        self.raise_sink_errors()
        return published

    def answer_probe(self, probe_id: int) -> bool:
        """Reports the answer to a probe: it counts as a signal of the probed
        device and source, now. True when applied; False when it came late
        (the device signalled, died or disconnected since: counted, nothing
        applied). NotFound for an id no probe of this engine had."""
        status, message = self._lib.presence_engine_answer_probe(
            self._p(), _int(probe_id, "probe_id", _U64))
        if status == StatusCode.FAILED_PRECONDITION:
            return False
        if status != 0:
            raise error_for(status, message or "")
        return True

    def raise_sink_errors(self) -> None:
        errors = self._sink_errors
        if errors:
            first = errors[0]
            del errors[:]
            raise first

    def now_ms(self) -> int:
        """The engine's clock's time, in ms."""
        return self._lib.presence_engine_now(self._p())

    def metrics(self) -> str:
        """Every engine metric in Prometheus text format."""
        ptr, n = self._lib.presence_engine_render_metrics(self._p())
        try:
            return ctypes.string_at(ptr, n).decode("utf-8", "replace")
        finally:
            self._lib.presence_free(ptr)
