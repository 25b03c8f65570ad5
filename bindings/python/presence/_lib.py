"""The loader of libpresence.so and the declaration of every C function.

Everything ctypes-specific lives here: the structs of presence/c.h, one
prototype per function (argtypes, restype and errcheck declared once), and
the mapping of status codes to exceptions. The handle classes (clock.py,
engine.py, fanout.py) call the functions of the object that load() returns.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
from ctypes import (POINTER, Structure, c_char_p, c_double, c_int, c_int32, c_int64, c_size_t,
                    c_uint8, c_uint32, c_uint64, c_void_p)
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

from .errors import error_for

#: The major version of the C ABI this binding was written for (convention 10).
ABI_MAJOR = 0

_LIB_NAME = "libpresence.so"

# ---- Structs of presence/c.h (layouts frozen or versioned there) -------------


class presence_bytes_t(Structure):
    _fields_ = [("data", c_void_p), ("len", c_size_t)]


class presence_signal_t(Structure):
    _fields_ = [
        ("user_id", c_void_p),
        ("user_id_len", c_size_t),
        ("device_id", c_void_p),
        ("device_id_len", c_size_t),
        ("gateway", c_void_p),
        ("gateway_len", c_size_t),
        ("session_id", c_uint64),
        ("timestamp_ms", c_int64),
        ("trace_id", c_uint64),
        ("platform", c_int32),
        ("source", c_int32),
        ("activity", c_int32),
    ]


class presence_batch_result_t(Structure):
    _fields_ = [("applied", c_size_t), ("stale", c_size_t), ("rejected", c_size_t),
                ("first_error", c_int32)]


class presence_override_t(Structure):
    _fields_ = [("id", c_uint64), ("set_at_ms", c_int64), ("until_ms", c_int64),
                ("state", c_int32)]


PLATFORM_COUNT = 5


class presence_user_presence_t(Structure):
    _fields_ = [
        ("user_id", c_void_p),
        ("user_id_len", c_size_t),
        ("version", c_uint64),
        ("last_seen_ms", c_int64),
        ("freshness_ms", c_int64),
        ("override_until_ms", c_int64),
        ("state", c_int32),
        ("override_state", c_int32),
        ("live_devices", c_uint32),
        ("devices", c_uint32 * PLATFORM_COUNT),
        ("known", c_uint8),
        ("has_override", c_uint8),
    ]


class presence_transition_t(Structure):
    _fields_ = [
        ("version", c_uint64),
        ("at_ms", c_int64),
        ("last_seen_ms", c_int64),
        ("trace_id", c_uint64),
        ("previous", c_int32),
        ("state", c_int32),
        ("self_state", c_int32),
        ("cause", c_int32),
    ]


class presence_device_transition_t(Structure):
    _fields_ = [
        ("at_ms", c_int64),
        ("session_id", c_uint64),
        ("event", c_int32),
        ("platform", c_int32),
    ]


class presence_state_durations_t(Structure):
    _fields_ = [("online_ms", c_int64), ("away_ms", c_int64), ("dnd_ms", c_int64),
                ("offline_ms", c_int64)]


ENGINE_OPTIONS_VERSION = 3


class presence_probe_t(Structure):
    _fields_ = [
        ("user_id", c_void_p),
        ("user_id_len", c_size_t),
        ("device_id", c_void_p),
        ("device_id_len", c_size_t),
        ("session_id", c_uint64),
        ("probe_id", c_uint64),
        ("source", c_int32),
        ("attempt", c_int32),
        ("gateway", c_void_p),
        ("gateway_len", c_size_t),
    ]


#: void (*presence_probe_cb)(const presence_probe_t* probe, void* payload)
PROBE_CB = ctypes.CFUNCTYPE(None, POINTER(presence_probe_t), c_void_p)


class presence_engine_options_t(Structure):
    _fields_ = [
        ("version", c_uint32),
        ("shards", c_int32),
        ("clock", c_void_p),
        ("inferred_interval_ms", c_int64),
        ("inferred_offline_after_ms", c_int64),
        ("app_interval_ms", c_int64),
        ("app_offline_after_ms", c_int64),
        ("manual_interval_ms", c_int64),
        ("manual_offline_after_ms", c_int64),
        ("reconnect_grace_ms", c_int64),
        ("min_dwell_ms", c_int64),
        ("max_future_skew_ms", c_int64),
        ("max_signal_age_ms", c_int64),
        ("dead_retention_ms", c_int64),
        ("user_retention_ms", c_int64),
        ("false_offline_window_ms", c_int64),
        ("max_devices_per_user", c_int32),
        ("max_overrides_per_user", c_int32),
        ("inferred_can_be_online", c_uint8),
        ("override_requires_live_device", c_uint8),
        # Version 2.
        ("max_signals_per_device_per_sec", c_int32),
        ("store", c_int32),
        ("memory_budget_bytes", c_int64),
        ("file_dir", c_void_p),
        ("file_dir_len", c_size_t),
        ("file_sync_interval_ms", c_int64),
        ("file_sync", c_int32),
        # Version 3.
        ("prober", PROBE_CB),
        ("prober_payload", c_void_p),
        ("probe_margin_ms", c_int64),
        ("probe_retry_ms", c_int64),
        ("max_probes", c_int32),
        ("max_probes_per_gateway_per_sec", c_int32),
    ]


FANOUT_OPTIONS_VERSION = 1


class presence_fanout_options_t(Structure):
    _fields_ = [
        ("version", c_uint32),
        ("flush_interval_ms", c_int64),
        ("max_batch", c_size_t),
        ("rate_per_sec", c_double),
        ("burst", c_double),
        ("max_outbox_batches", c_size_t),
        ("resume_window", c_size_t),
        ("resume_window_bytes", c_size_t),
        ("interval_mode_members", c_size_t),
        ("large_topic_interval_ms", c_int64),
        ("counts_only_members", c_size_t),
        ("topic_history", c_size_t),
        ("max_subscribers", c_size_t),
        ("max_list_users", c_size_t),
        ("max_topics_per_subscriber", c_size_t),
        ("max_topic_members", c_size_t),
    ]


#: void (*presence_sink_cb)(uint64_t subscriber, const char* batch, size_t len, void* payload)
SINK_CB = ctypes.CFUNCTYPE(None, c_uint64, c_void_p, c_size_t, c_void_p)
#: void (*presence_payload_free_cb)(void* payload)
PAYLOAD_FREE_CB = ctypes.CFUNCTYPE(None, c_void_p)

SUBSCRIBER_OPTIONS_VERSION = 1


class presence_subscriber_options_t(Structure):
    _fields_ = [
        ("version", c_uint32),
        ("owner_user_id", c_void_p),
        ("owner_user_id_len", c_size_t),
        ("sink", SINK_CB),
        ("sink_payload", c_void_p),
        ("sink_payload_free", PAYLOAD_FREE_CB),
    ]


# ---- The loader ----------------------------------------------------------------


class LibraryNotFoundError(OSError):
    """libpresence.so could not be found or loaded; the message lists every
    place that was tried and why each failed."""


def _candidates() -> List[Tuple[str, str]]:
    """(what, path) pairs, in the order they are tried (after PRESENCE_LIBRARY)."""
    here = Path(__file__).resolve().parent
    out = [("next to the package", str(here / _LIB_NAME))]
    # In a source checkout the package is bindings/python/presence/; the
    # README builds into build/ at the top of the checkout.
    root = here.parent.parent.parent
    if (root / "include" / "presence" / "c.h").is_file():
        out.append(("the build folder", str(root / "build" / _LIB_NAME)))
    return out


def _open(path: str) -> ctypes.CDLL:
    cdll = ctypes.CDLL(path)
    try:
        cdll.presence_version_number
        cdll.presence_free
    except AttributeError:
        raise OSError("loaded, but it does not export presence_version_number and "
                      "presence_free: not a libpresence with the C ABI (an older build?)"
                      ) from None
    return cdll


def find_and_open(path: Optional[str] = None) -> Tuple[ctypes.CDLL, str]:
    """Opens libpresence: `path` when given, else $PRESENCE_LIBRARY when set
    (and only it: an explicit choice never falls back), else next to the
    package, the build folder of a source checkout, and the system paths
    (ctypes.util.find_library). Raises LibraryNotFoundError saying where it
    looked."""
    tried: List[str] = []
    explicit = path if path is not None else os.environ.get("PRESENCE_LIBRARY") or None
    if explicit is not None:
        what = "the path given" if path is not None else "PRESENCE_LIBRARY"
        try:
            return _open(explicit), explicit
        except OSError as e:
            raise LibraryNotFoundError(
                f"presence: cannot load libpresence from {what} ({explicit}): {e}") from None
    for what, candidate in _candidates():
        if not os.path.exists(candidate):
            tried.append(f"  {what}: {candidate} (no such file)")
            continue
        try:
            return _open(candidate), candidate
        except OSError as e:
            tried.append(f"  {what}: {candidate} ({e})")
    found = ctypes.util.find_library("presence")
    if found is None:
        tried.append("  the system paths: ctypes.util.find_library('presence') found nothing")
    else:
        try:
            return _open(found), found
        except OSError as e:
            tried.append(f"  the system paths: {found} ({e})")
    raise LibraryNotFoundError(
        "presence: cannot find libpresence.so. Looked in:\n  PRESENCE_LIBRARY: not set\n" +
        "\n".join(tried) +
        "\nBuild it (cmake --build build --target presence_c) or set PRESENCE_LIBRARY "
        "to the path of libpresence.so.")


# ---- Declarations ------------------------------------------------------------------

_IN, _OUT = 1, 2


def _read_and_free(lib: ctypes.CDLL, address: Optional[int]) -> str:
    if not address:
        return "(no message)"
    try:
        return ctypes.string_at(address).decode("utf-8", "replace")
    finally:
        lib.presence_free(address)


class Lib:
    """libpresence with every function declared. Fallible functions are
    called with their inputs only: ctypes allocates the out-parameters and
    errmsg, and errcheck either raises the mapped exception (having freed
    the message) or returns the out-parameters (one value, or a tuple)."""

    def __init__(self, cdll: ctypes.CDLL, path: str) -> None:
        self.cdll = cdll
        self.path = path
        free = cdll.presence_free
        free.argtypes = [c_void_p]
        free.restype = None
        self.presence_free = free
        for name, restype, argtypes in (
                ("presence_status_name", c_char_p, [c_int]),
                ("presence_version_number", c_int, []),
                ("presence_version_string", c_char_p, []),
                ("presence_clock_destroy", None, [c_void_p]),
                ("presence_engine_destroy", None, [c_void_p]),
                ("presence_fanout_destroy", None, [c_void_p])):
            fn = getattr(cdll, name)
            fn.restype = restype
            fn.argtypes = argtypes
            setattr(self, name, fn)
        self.version_number: int = self.presence_version_number()
        self.version_string: str = self.presence_version_string().decode()
        major = self.version_number // 10000
        if major != ABI_MAJOR:
            raise LibraryNotFoundError(
                f"presence: {path} is version {self.version_string} (major {major}); this "
                f"binding speaks major {ABI_MAJOR} of the C ABI")

        P = POINTER
        I, O = _IN, _OUT
        VP = c_void_p
        S = c_size_t
        # (name, [(type, flag)], raises): out-parameters have type POINTER(T)
        # and flag O; errmsg is appended to each. raises=False: errcheck
        # returns (status, message, outs...) and the caller decides.
        table: Sequence[Tuple[str, Sequence[Tuple[Any, int]], bool]] = (
            ("presence_engine_options_init",
             [(P(presence_engine_options_t), I), (c_uint32, I)], True),
            ("presence_fanout_options_init",
             [(P(presence_fanout_options_t), I), (c_uint32, I)], True),
            ("presence_subscriber_options_init",
             [(P(presence_subscriber_options_t), I), (c_uint32, I)], True),
            ("presence_clock_manual_new", [(P(VP), O), (c_int64, I)], True),
            ("presence_clock_advance", [(VP, I), (c_int64, I)], True),
            ("presence_clock_set", [(VP, I), (c_int64, I)], True),
            ("presence_clock_now", [(P(c_int64), O), (VP, I)], True),
            ("presence_engine_new", [(P(VP), O), (P(presence_engine_options_t), I)], True),
            ("presence_engine_signal", [(VP, I), (P(presence_signal_t), I)], False),
            ("presence_engine_signal_batch",
             [(P(presence_batch_result_t), O), (VP, I), (VP, I), (S, I)], False),
            ("presence_engine_disconnect_device",
             [(VP, I), (VP, I), (S, I), (VP, I), (S, I), (c_uint64, I), (c_int, I)], True),
            ("presence_engine_connect",
             [(P(c_uint64), O), (VP, I), (P(presence_signal_t), I)], False),
            ("presence_engine_beat", [(VP, I), (c_uint64, I), (c_int, I), (c_int, I)], True),
            ("presence_engine_beat_many",
             [(P(presence_batch_result_t), O), (VP, I), (VP, I), (S, I), (c_int, I), (c_int, I)],
             False),
            ("presence_engine_disconnect", [(VP, I), (c_uint64, I), (c_int, I)], True),
            ("presence_engine_set_override",
             [(P(c_uint64), O), (VP, I), (VP, I), (S, I), (c_int, I), (c_int64, I),
              (c_uint64, I)], True),
            ("presence_engine_revoke_override",
             [(VP, I), (VP, I), (S, I), (c_uint64, I)], True),
            ("presence_engine_clear_overrides", [(P(S), O), (VP, I), (VP, I), (S, I)], True),
            ("presence_engine_revoke_overrides_set_between",
             [(P(S), O), (VP, I), (c_int64, I), (c_int64, I)], True),
            ("presence_engine_list_overrides",
             [(P(VP), O), (P(S), O), (VP, I), (VP, I), (S, I)], True),
            ("presence_engine_get",
             [(P(VP), O), (VP, I), (VP, I), (S, I), (VP, I), (S, I)], True),
            ("presence_engine_get_published",
             [(P(VP), O), (VP, I), (VP, I), (S, I), (VP, I), (S, I)], True),
            ("presence_engine_history_as",
             [(P(VP), O), (P(S), O), (VP, I), (VP, I), (S, I), (c_int64, I), (c_int64, I),
              (VP, I), (S, I)], True),
            ("presence_engine_device_history",
             [(P(VP), O), (P(S), O), (VP, I), (VP, I), (S, I), (VP, I), (S, I), (c_int64, I),
              (c_int64, I), (VP, I), (S, I)], True),
            ("presence_engine_time_in_states_as",
             [(P(presence_state_durations_t), O), (VP, I), (VP, I), (S, I), (c_int64, I),
              (c_int64, I), (VP, I), (S, I)], True),
            ("presence_engine_last_seen_as",
             [(P(c_int64), O), (VP, I), (VP, I), (S, I), (VP, I), (S, I)], True),
            ("presence_engine_erase", [(VP, I), (VP, I), (S, I)], True),
            ("presence_engine_drain_gateway",
             [(P(S), O), (VP, I), (VP, I), (S, I), (S, I)], True),
            ("presence_engine_rebuild", [(VP, I)], True),
            ("presence_engine_tick", [(P(S), O), (VP, I)], True),
            ("presence_engine_answer_probe", [(VP, I), (c_uint64, I)], False),
            ("presence_engine_now", [(P(c_int64), O), (VP, I)], True),
            ("presence_engine_render_metrics", [(P(VP), O), (P(S), O), (VP, I)], True),
            ("presence_fanout_new",
             [(P(VP), O), (VP, I), (P(presence_fanout_options_t), I)], True),
            ("presence_fanout_subscribe",
             [(P(c_uint64), O), (VP, I), (P(presence_subscriber_options_t), I)], True),
            ("presence_fanout_unsubscribe", [(VP, I), (c_uint64, I)], True),
            ("presence_fanout_add_users", [(VP, I), (c_uint64, I), (VP, I), (S, I)], True),
            ("presence_fanout_remove_users", [(VP, I), (c_uint64, I), (VP, I), (S, I)], True),
            ("presence_fanout_replace_users", [(VP, I), (c_uint64, I), (VP, I), (S, I)], True),
            ("presence_fanout_join", [(VP, I), (c_uint64, I), (VP, I), (S, I)], True),
            ("presence_fanout_leave", [(VP, I), (c_uint64, I), (VP, I), (S, I)], True),
            ("presence_fanout_add_members", [(VP, I), (VP, I), (S, I), (VP, I), (S, I)], True),
            ("presence_fanout_remove_members",
             [(VP, I), (VP, I), (S, I), (VP, I), (S, I)], True),
            ("presence_fanout_replace_members",
             [(VP, I), (VP, I), (S, I), (VP, I), (S, I)], True),
            ("presence_fanout_poll",
             [(P(c_uint8), O), (P(VP), O), (P(S), O), (VP, I), (c_uint64, I)], True),
            ("presence_fanout_resume", [(VP, I), (c_uint64, I), (c_uint64, I)], True),
            ("presence_fanout_render_metrics", [(P(VP), O), (P(S), O), (VP, I)], True),
        )
        for name, params, raises in table:
            setattr(self, name, self._declare(name, params, raises))

    def _declare(self, name: str, params: Sequence[Tuple[Any, int]],
                 raises: bool) -> Callable[..., Any]:
        argtypes = [t for t, _ in params] + [POINTER(c_void_p)]
        flags = tuple((f,) for _, f in params) + ((_OUT,),)
        proto = ctypes.CFUNCTYPE(c_int, *argtypes)
        fn = proto((name, self.cdll), flags)
        outs = [i for i, (_, f) in enumerate(params) if f == _OUT]
        err_index = len(params)
        lib = self

        def value(obj: Any) -> Any:
            return obj.value if isinstance(obj, ctypes._SimpleCData) else obj

        if raises:
            def errcheck(status: int, func: Any, args: Tuple[Any, ...]) -> Any:
                if status != 0:
                    raise error_for(status, _read_and_free(lib, args[err_index].value))
                if not outs:
                    return None
                if len(outs) == 1:
                    return value(args[outs[0]])
                return tuple(value(args[i]) for i in outs)
        else:
            def errcheck(status: int, func: Any, args: Tuple[Any, ...]) -> Any:
                message = None if status == 0 else _read_and_free(lib, args[err_index].value)
                return (status, message) + tuple(value(args[i]) for i in outs)
        fn.errcheck = errcheck
        fn.__name__ = name
        return fn

    def status_name(self, code: int) -> str:
        return self.presence_status_name(code).decode()


_lock = threading.Lock()
_lib: Optional[Lib] = None


def load(path: Optional[str] = None) -> Lib:
    """The loaded library (loaded on first use, once per process). `path`
    names the file explicitly; it is honoured only by the first load."""
    global _lib
    lib = _lib
    if lib is not None:
        return lib
    with _lock:
        if _lib is None:
            cdll, where = find_and_open(path)
            _lib = Lib(cdll, where)
        return _lib


# ---- Ids: str or bytes, passed as pointer and length (convention 6) ----------------

_LITTLE = sys.byteorder == "little"


def as_bytes(value: Any, what: str) -> bytes:
    """An id as bytes: str is encoded as UTF-8, bytes-like objects are taken
    as they are; anything else is a TypeError."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be str or bytes, not {type(value).__name__}")


def address_of(data: bytes) -> Optional[int]:
    """The address of a bytes object's buffer (valid while it lives)."""
    if not data:
        return None
    return ctypes.cast(c_char_p(data), c_void_p).value


def join_ids(ids: Sequence[Any], what: str) -> Tuple[bytes, List[int]]:
    """Joins ids into one buffer; returns it and each id's length. Fast when
    every id is an ASCII str (one join, one encode)."""
    try:
        joined = "".join(ids)
    except TypeError:
        parts = [as_bytes(v, what) for v in ids]
        return b"".join(parts), [len(p) for p in parts]
    blob = joined.encode("utf-8")
    if len(blob) == len(joined):
        return blob, [len(v) for v in ids]
    parts = [v.encode("utf-8") for v in ids]
    return b"".join(parts), [len(p) for p in parts]


class BytesList:
    """A presence_bytes_t array over one joined buffer, kept alive together."""

    __slots__ = ("blob", "array", "count")

    def __init__(self, ids: Any, what: str) -> None:
        if isinstance(ids, (str, bytes)):
            raise TypeError(f"{what} must be a list of ids, not a single {type(ids).__name__}")
        ids = list(ids)
        self.count = len(ids)
        self.blob, lengths = join_ids(ids, what)
        self.array = (presence_bytes_t * self.count)()
        base = address_of(self.blob) or 0
        offset = 0
        arr = self.array
        for i, n in enumerate(lengths):
            item = arr[i]
            item.data = base + offset if n else None
            item.len = n
            offset += n

    @property
    def pointer(self) -> Optional[int]:
        return ctypes.addressof(self.array) if self.count else None
