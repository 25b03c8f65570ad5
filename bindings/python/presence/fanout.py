"""Fanout: presence_fanout_t of presence/c.h. Delivers an engine's published
changes to subscribers as batched diffs (DiffBatch), by poll or by a push
sink (a Python callable)."""
from __future__ import annotations

import ctypes
import itertools
import threading
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

from . import _lib
from ._handle import Handle, in_sink
from ._lib import (PAYLOAD_FREE_CB, SINK_CB, BytesList, address_of, as_bytes,
                   presence_fanout_options_t, presence_subscriber_options_t)
from .engine import Engine, Id, _I64, _U64, _int
from .wire import DiffBatch, decode_diff_batch

#: A push sink: called with (subscriber_id, DiffBatch), or (subscriber_id,
#: bytes) for a subscriber opened with raw=True.
Sink = Callable[[int, Any], None]

_OPTION_FIELDS = {name: t for name, t in presence_fanout_options_t._fields_ if name != "version"}


class Fanout(Handle):
    """A fan-out over an engine (presence_fanout_t), attached to it: the
    engine's ticks feed it. Keyword options are the fields of
    presence_fanout_options_t (rate_per_sec=0 turns throttling off, ...).

    LIFESPAN: an open Fanout stays alive as long as its engine object does
    (the engine keeps a reference), so that its push sinks keep working even
    when the caller drops its own reference; close() detaches it.

    Push sinks run on the thread that calls Engine.tick() (or resume()). A
    sink may call any method of the engine and the fan-out except
    Engine.tick() (FailedPrecondition) and close(). An exception raised by a
    sink is raised from the tick() or resume() that called it, after that
    call has finished.
    """

    _kind = "fanout"

    def __init__(self, engine: Engine, **options: Any) -> None:
        if not isinstance(engine, Engine):
            raise TypeError(f"engine must be a presence.Engine, not {type(engine).__name__}")
        lib = self._lib = _lib.load()
        o = presence_fanout_options_t()
        lib.presence_fanout_options_init(ctypes.byref(o), _lib.FANOUT_OPTIONS_VERSION)
        for name, value in options.items():
            t = _OPTION_FIELDS.get(name)
            if t is None:
                raise TypeError(f"unknown fan-out option {name!r} (known: "
                                f"{', '.join(sorted(_OPTION_FIELDS))})")
            if t is ctypes.c_double:
                if not isinstance(value, (int, float)):
                    raise TypeError(f"{name} must be a number")
                value = float(value)
            else:
                value = _int(value, name, _I64 if t is ctypes.c_int64 else _U64)
            setattr(o, name, value)
        self._engine = engine
        # Push sinks: payload key -> (callable, raw). The two C callbacks
        # close over these, not over self, and live as long as this object.
        sinks: Dict[int, Tuple[Sink, bool]] = {}
        errors = engine._sink_errors
        self._sinks = sinks
        self._keys = itertools.count(1)
        self._sink_lock = threading.Lock()

        def on_batch(subscriber: int, data: Optional[int], length: int,
                     payload: Optional[int]) -> None:
            entry = sinks.get(payload or 0)
            if entry is None:
                return
            in_sink.depth = getattr(in_sink, "depth", 0) + 1
            try:
                fn, raw = entry
                raw_bytes = ctypes.string_at(data, length) if length else b""
                fn(subscriber, raw_bytes if raw else decode_diff_batch(raw_bytes))
            except BaseException as e:  # never through C (convention 12)
                errors.append(e)
            finally:
                in_sink.depth -= 1

        def on_free(payload: Optional[int]) -> None:
            sinks.pop(payload or 0, None)

        self._on_batch = SINK_CB(on_batch)
        self._on_free = PAYLOAD_FREE_CB(on_free)
        self._adopt(lib.presence_fanout_new(engine._p(), ctypes.byref(o)),
                    lib.presence_fanout_destroy)
        engine._fanouts.add(self)

    def _release(self) -> None:
        super()._release()  # calls sink_payload_free of every open push subscriber
        self._engine._fanouts.discard(self)

    def __hash__(self) -> int:
        return id(self)

    # ---- Subscribers ----

    def subscribe(self, owner: Optional[Id] = None, sink: Optional[Sink] = None, *,
                  raw: bool = False) -> int:
        """Opens a subscriber and returns its id (never 0); its first batch is a
        snapshot. owner: the user it belongs to (it sees that user's true
        state). sink: a callable(subscriber_id, DiffBatch) for push delivery
        (raw=True: the encoded bytes instead); None: pull with poll()."""
        o = presence_subscriber_options_t()
        self._lib.presence_subscriber_options_init(ctypes.byref(o),
                                                   _lib.SUBSCRIBER_OPTIONS_VERSION)
        owner_b = b"" if owner is None else as_bytes(owner, "owner")
        o.owner_user_id, o.owner_user_id_len = address_of(owner_b), len(owner_b)
        key = 0
        if sink is not None:
            if not callable(sink):
                raise TypeError(f"sink must be callable, not {type(sink).__name__}")
            key = next(self._keys)
            self._sinks[key] = (sink, bool(raw))
            o.sink = self._on_batch
            o.sink_payload = key
            o.sink_payload_free = self._on_free
        try:
            return self._lib.presence_fanout_subscribe(self._p(), ctypes.byref(o))
        except BaseException:
            self._sinks.pop(key, None)  # payload_free is not called when subscribe fails
            raise

    def unsubscribe(self, subscriber: int) -> None:
        """Closes a subscriber; NotFound when unknown or already closed."""
        self._lib.presence_fanout_unsubscribe(self._p(), _int(subscriber, "subscriber", _U64))

    def _users(self, fn: Any, subscriber: int, user_ids: Iterable[Id]) -> None:
        ids = BytesList(user_ids, "user_id")
        fn(self._p(), _int(subscriber, "subscriber", _U64), ids.pointer, ids.count)

    def add_users(self, subscriber: int, user_ids: Iterable[Id]) -> None:
        """Adds users to the subscriber's list; they appear in its next batch."""
        self._users(self._lib.presence_fanout_add_users, subscriber, user_ids)

    def remove_users(self, subscriber: int, user_ids: Iterable[Id]) -> None:
        """Removes users; each appears once more, with removed set."""
        self._users(self._lib.presence_fanout_remove_users, subscriber, user_ids)

    def replace_users(self, subscriber: int, user_ids: Iterable[Id]) -> None:
        """Sets the subscriber's whole list."""
        self._users(self._lib.presence_fanout_replace_users, subscriber, user_ids)

    def join(self, subscriber: int, topic: Id) -> None:
        """Watches a topic (NotFound for a topic with no members)."""
        t = as_bytes(topic, "topic")
        self._lib.presence_fanout_join(self._p(), _int(subscriber, "subscriber", _U64),
                                       address_of(t), len(t))

    def leave(self, subscriber: int, topic: Id) -> None:
        """Stops watching a topic (NotFound when not watching it)."""
        t = as_bytes(topic, "topic")
        self._lib.presence_fanout_leave(self._p(), _int(subscriber, "subscriber", _U64),
                                        address_of(t), len(t))

    # ---- Topics ----

    def _members(self, fn: Any, topic: Id, user_ids: Iterable[Id]) -> None:
        t = as_bytes(topic, "topic")
        ids = BytesList(user_ids, "user_id")
        fn(self._p(), address_of(t), len(t), ids.pointer, ids.count)

    def add_members(self, topic: Id, user_ids: Iterable[Id]) -> None:
        """Adds users to a topic (a topic exists while it has members)."""
        self._members(self._lib.presence_fanout_add_members, topic, user_ids)

    def remove_members(self, topic: Id, user_ids: Iterable[Id]) -> None:
        self._members(self._lib.presence_fanout_remove_members, topic, user_ids)

    def replace_members(self, topic: Id, user_ids: Iterable[Id]) -> None:
        self._members(self._lib.presence_fanout_replace_members, topic, user_ids)

    # ---- Delivery ----

    def poll_raw(self, subscriber: int) -> Optional[bytes]:
        """The subscriber's oldest undelivered batch, encoded, or None.
        FailedPrecondition for a push subscriber."""
        has, ptr, n = self._lib.presence_fanout_poll(self._p(),
                                                     _int(subscriber, "subscriber", _U64))
        if not has:
            return None
        try:
            return ctypes.string_at(ptr, n)
        finally:
            self._lib.presence_free(ptr)

    def poll(self, subscriber: int) -> Optional[DiffBatch]:
        """The subscriber's oldest undelivered batch, decoded, or None."""
        data = self.poll_raw(subscriber)
        return None if data is None else decode_diff_batch(data)

    def poll_all(self, subscriber: int) -> List[DiffBatch]:
        """Every undelivered batch, oldest first."""
        out = []
        while True:
            b = self.poll(subscriber)
            if b is None:
                return out
            out.append(b)

    def resume(self, subscriber: int, cursor: int) -> None:
        """The subscriber reconnected having applied batch `cursor` (0: none):
        the batches after it come again (same sequence numbers) when still
        held, else a snapshot; to the sink before this returns, or to poll().
        InvalidArgument for a cursor from the future."""
        self._lib.presence_fanout_resume(self._p(), _int(subscriber, "subscriber", _U64),
                                         _int(cursor, "cursor", _U64))
        self._engine.raise_sink_errors()

    def metrics(self) -> str:
        """Fan-out metrics in Prometheus text format."""
        ptr, n = self._lib.presence_fanout_render_metrics(self._p())
        try:
            return ctypes.string_at(ptr, n).decode("utf-8", "replace")
        finally:
            self._lib.presence_free(ptr)
