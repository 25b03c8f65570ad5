"""The engine from Python: lifecycle, keyed signals single and batch,
handles, overrides, get, tick on the manual clock, metrics."""
from __future__ import annotations

import gc
import unittest

import presence
from presence import (Activity, DisconnectKind, OverrideState, Platform, Signal, SignalBatch,
                      Source, State)

from util import World, WorldTest


class VersionTest(unittest.TestCase):
    def test_library_version(self) -> None:
        self.assertEqual(presence.library_version(), presence.__version__)
        self.assertTrue(presence.load_library().endswith(".so") or ".so." in
                        presence.load_library())

    def test_enums_have_the_proto_numbers(self) -> None:
        self.assertEqual([int(s) for s in State], [0, 1, 2, 3, 4])
        self.assertEqual(Source.MANUAL, 3)
        self.assertEqual(Activity.IDLE, 2)
        self.assertEqual(Platform.OTHER, 5)
        self.assertEqual(OverrideState.INVISIBLE, 4)
        self.assertEqual(DisconnectKind.ABRUPT, 2)
        self.assertEqual(presence.Cause.MERGE, 6)
        self.assertEqual(presence.StatusCode.FAILED_PRECONDITION, 9)


class LifecycleTest(unittest.TestCase):
    def test_clock(self) -> None:
        with presence.ManualClock(5000) as c:
            self.assertEqual(c.now_ms(), 5000)
            self.assertEqual(c.advance(250), 5250)
            c.set(9000)
            c.set(9000)
            with self.assertRaises(presence.InvalidArgument) as cm:
                c.set(8999)
            self.assertIn("never goes back", cm.exception.message)
            with self.assertRaises(presence.InvalidArgument):
                c.advance(-1)
            self.assertEqual(c.now_ms(), 9000)
        self.assertTrue(c.closed)
        c.close()  # twice is fine

    def test_engine_on_the_system_clock(self) -> None:
        with presence.Engine() as e:
            self.assertGreater(e.now_ms(), 1_500_000_000_000)
        self.assertTrue(e.closed)
        e.close()

    def test_clock_closed_before_engine(self) -> None:
        c = presence.ManualClock(42_000)
        e = presence.Engine(c)
        c.advance(8000)
        c.close()
        self.assertEqual(e.now_ms(), 50_000)
        e.close()

    def test_options(self) -> None:
        with self.assertRaises(presence.InvalidArgument) as cm:
            presence.Engine(app_interval_ms=0)
        self.assertIn("interval_ms", str(cm.exception))
        with self.assertRaises(presence.InvalidArgument):
            presence.Engine(shards=1000)
        with self.assertRaises(TypeError):
            presence.Engine(no_such_option=1)
        with self.assertRaises(TypeError):
            presence.Engine(min_dwell_ms="1")
        with self.assertRaises(presence.InvalidArgument):
            presence.Engine(shards=1 << 40)  # would truncate to 0 in a ctypes int32
        presence.Engine(shards=4, inferred_can_be_online=True).close()

    def test_any_order_and_garbage_collection(self) -> None:
        c = presence.ManualClock(1)
        e = presence.Engine(c)
        f = presence.Fanout(e)
        f.subscribe(sink=lambda s, b: None)
        e.close()  # the fan-out holds the engine in C
        f.subscribe()
        f.close()
        c.close()
        # Dropped without close(): __del__ frees them, in any order.
        w = World()
        presence.Fanout(w.engine).subscribe(sink=lambda s, b: None)
        del w
        gc.collect()

    def test_repr(self) -> None:
        c = presence.ManualClock()
        self.assertIn("ManualClock at 0x", repr(c))
        c.close()
        self.assertIn("closed", repr(c))


class SignalTest(WorldTest):
    def test_single(self) -> None:
        self.e.signal("alice", "laptop", 2, platform=Platform.WEB)
        self.assertEqual(self.w.step(), 1)
        p = self.e.get_one("alice")
        self.assertTrue(p.known)
        self.assertEqual(p.state, State.ONLINE)
        self.assertEqual(p.devices.web, 1)
        self.assertEqual(p.live_devices, 1)
        # An older session is stale: StaleSignal, a FailedPrecondition.
        with self.assertRaises(presence.StaleSignal) as cm:
            self.e.signal("alice", "laptop", 1)
        self.assertIsInstance(cm.exception, presence.FailedPrecondition)
        self.assertEqual(cm.exception.code, presence.StatusCode.FAILED_PRECONDITION)
        self.e.signal("alice", "laptop", 2, activity=Activity.IDLE)
        self.w.step()
        self.assertEqual(self.w.state("alice"), State.AWAY)

    def test_bytes_ids_with_nul(self) -> None:
        self.e.signal(b"n\x00l", b"pc", 1)
        p = self.e.get_one(b"n\x00l")
        self.assertTrue(p.known)
        self.assertEqual(p.user_id, b"n\x00l")
        self.e.signal("zoë", "téléphone", 1)  # str is UTF-8
        self.assertEqual(self.e.get_one("zoë".encode()).user_id, "zoë".encode())

    def test_batch_all_applied(self) -> None:
        r = self.e.signal_batch([
            Signal("bob", "phone", 1, platform=Platform.MOBILE),
            Signal("carol", "desk", 1, platform=Platform.DESKTOP, gateway="gw-1", trace_id=77),
            Signal("alice", "laptop", 1),
        ])
        self.assertTrue(r.ok)
        self.assertEqual((r.applied, r.stale, r.rejected), (3, 0, 0))
        self.assertEqual(r.first_error, presence.StatusCode.OK)
        r.raise_for_error()
        self.assertEqual(self.w.step(), 3)
        self.assertEqual(self.e.get_one("bob").devices.mobile, 1)

    def test_batch_with_failures(self) -> None:
        self.e.signal("alice", "laptop", 2)
        r = self.e.signal_batch([
            Signal("dave", "tv", 1),
            Signal("erin", "tab", 1, platform=0),  # unspecified
            Signal("alice", "laptop", 1),  # stale
            Signal("gina", "pc", 1, source=1000),
            Signal("hank", "pc", 1, activity=-3),
            Signal("ivan", "pc", 0),  # session 0
            Signal("", "pc", 1),  # empty user id
            Signal("judy", "pc", 1),
        ])
        self.assertFalse(r.ok)
        self.assertEqual((r.applied, r.stale, r.rejected), (2, 1, 5))
        self.assertIsInstance(r.error, presence.InvalidArgument)
        self.assertIn("platform", r.error.message)
        with self.assertRaises(presence.InvalidArgument):
            r.raise_for_error()
        self.w.step()
        self.assertEqual(self.w.state("judy"), State.ONLINE)
        self.assertFalse(self.e.get_one("erin").known)
        # Only stale: the error is a StaleSignal.
        r = self.e.signal_batch([Signal("alice", "laptop", 1)])
        self.assertEqual(r.stale, 1)
        self.assertIsInstance(r.error, presence.StaleSignal)
        # Empty.
        r = self.e.signal_batch([])
        self.assertEqual((r.applied, r.stale, r.rejected, r.error), (0, 0, 0, None))

    def test_columns(self) -> None:
        n = 1000
        users = [f"user-{i}" for i in range(n)]
        batch = SignalBatch(users, ["d"] * n, [1] * n, platform=Platform.MOBILE,
                            activity=[Activity.IDLE if i % 2 else Activity.ACTIVE
                                      for i in range(n)], gateway="gw")
        self.assertEqual(len(batch), n)
        self.assertEqual(len(batch.array), n)
        self.assertIsInstance(batch.array[0], presence._lib.presence_signal_t)
        self.assertEqual(batch.array[3].platform, Platform.MOBILE)
        self.assertEqual(batch.array[3].activity, Activity.IDLE)
        self.assertEqual(batch.array[3].gateway_len, 2)
        r = self.e.signal_batch(batch)
        self.assertEqual(r.applied, n)
        r = self.e.signal_batch(batch)  # again: exact replays are applied
        self.assertEqual(r.applied, n)
        self.w.step()
        got = self.e.get(users[:4])
        self.assertEqual([p.state for p in got],
                         [State.ONLINE, State.AWAY, State.ONLINE, State.AWAY])
        self.assertEqual(got[1].devices.mobile, 1)
        # Mixed bytes and non-ASCII ids take the slower path, same result.
        batch = SignalBatch([b"raw", "zoë"], [b"x", "y"], (5, 6), timestamp_ms=[0, 0],
                            trace_id=[1, 2], gateway=[None, b"g"])
        self.assertEqual(self.e.signal_batch(batch).applied, 2)
        self.assertTrue(self.e.get_one("zoë").known)

    def test_timestamps(self) -> None:
        with self.assertRaises(presence.InvalidArgument) as cm:
            self.e.signal("nia", "pc", 1, timestamp_ms=1_000_000 + 10_000_000)
        self.assertIn("ahead", cm.exception.message)

    def test_disconnect_device(self) -> None:
        self.e.signal("bob", "phone", 1)
        self.w.step()
        self.e.disconnect_device("bob", "phone", DisconnectKind.CLEAN)
        self.w.step()
        self.assertEqual(self.w.state("bob"), State.OFFLINE)
        with self.assertRaises(presence.NotFound):
            self.e.disconnect_device("bob", "phone", DisconnectKind.CLEAN)
        with self.assertRaises(presence.InvalidArgument) as cm:
            self.e.disconnect_device("bob", "phone", 3)
        self.assertIn("disconnect kind", cm.exception.message)


class HandleTest(WorldTest):
    def test_beat_and_disconnect(self) -> None:
        h = self.e.connect("alice", "laptop", 1, platform=Platform.WEB)
        self.assertNotEqual(h, 0)
        self.assertEqual(self.w.step(), 1)
        for _ in range(10):
            self.e.beat(h)
            self.w.step(1000)
        self.assertEqual(self.w.state("alice"), State.ONLINE)
        self.e.beat(h, Activity.IDLE, Source.MANUAL)
        self.w.step()
        self.assertEqual(self.w.state("alice"), State.AWAY)
        self.e.beat(h, Activity.ACTIVE, Source.MANUAL)
        # Abrupt: online through the grace; a reconnect gets a new handle.
        self.e.disconnect(h, DisconnectKind.ABRUPT)
        self.w.step(1000)
        self.assertEqual(self.w.state("alice"), State.ONLINE)
        h2 = self.e.connect("alice", "laptop", 2)
        self.w.step(2000)
        self.assertEqual(self.w.state("alice"), State.ONLINE)
        with self.assertRaises(presence.NotFound):
            self.e.beat(h)  # the old handle is closed
        self.e.disconnect(h2, DisconnectKind.CLEAN)
        with self.assertRaises(presence.NotFound):
            self.e.disconnect(h2, DisconnectKind.CLEAN)
        self.w.step()
        p = self.e.get_one("alice")
        self.assertEqual((p.state, p.live_devices), (State.OFFLINE, 0))
        self.assertGreaterEqual(p.freshness_ms, 100)

    def test_beat_many(self) -> None:
        import array
        hs = [self.e.connect(f"user-{i}", "web", 1) for i in range(600)]
        self.w.step()
        for _ in range(6):  # past offline_after: only the batches keep them live
            r = self.e.beat_many(hs)
            self.assertEqual((r.applied, r.stale, r.rejected, r.ok), (600, 0, 0, True))
            self.w.step(1000)
        self.assertEqual(self.w.state("user-599"), State.ONLINE)
        r = self.e.beat_many(array.array("Q", hs[:2]), Activity.IDLE, Source.MANUAL)
        self.assertEqual(r.applied, 2)
        self.w.step()
        self.assertEqual(self.w.state("user-1"), State.AWAY)
        self.e.disconnect(hs[0], DisconnectKind.CLEAN)
        r = self.e.beat_many([hs[1], hs[0], 0, hs[2]])
        self.assertEqual((r.applied, r.rejected), (2, 2))
        self.assertIsInstance(r.error, presence.NotFound)
        with self.assertRaises(presence.NotFound):
            r.raise_for_error()
        r = self.e.beat_many(hs[1:3], 9)  # an unknown activity rejects every beat
        self.assertEqual((r.applied, r.rejected), (0, 2))
        self.assertIsInstance(r.error, presence.InvalidArgument)
        self.assertEqual(self.e.beat_many([]).applied, 0)
        with self.assertRaises(presence.InvalidArgument):
            self.e.beat_many([-1])
        with self.assertRaises(TypeError):
            self.e.beat_many(["h"])  # type: ignore[list-item]
        with self.assertRaises(presence.InvalidArgument):
            self.e.beat_many(hs[1:2], Activity.ACTIVE, 1000)  # past a byte: the call is refused

    def test_timeout(self) -> None:
        self.e.connect("alice", "laptop", 1)
        self.w.step()
        for _ in range(50):
            self.w.step()
        self.assertEqual(self.w.state("alice"), State.OFFLINE)  # no beat for 5 s

    def test_stale_connect(self) -> None:
        self.e.connect("alice", "laptop", 2)
        with self.assertRaises(presence.StaleSignal):
            self.e.connect("alice", "laptop", 1)


class OverrideTest(WorldTest):
    def test_stack(self) -> None:
        self.e.connect("alice", "laptop", 1)
        self.w.step()
        now = self.e.now_ms()
        dnd = self.e.set_override("alice", OverrideState.DND, trace_id=7)
        self.assertEqual(self.w.state("alice"), State.DND)  # get is exact at once
        self.assertEqual(self.e.get_published(["alice"])[0].state, State.ONLINE)
        self.w.step()
        self.assertEqual(self.e.get_published(["alice"])[0].state, State.DND)
        p = self.e.get_one("alice")
        self.assertEqual((p.override, p.override_until_ms), (OverrideState.DND, 0))
        inv = self.e.set_override("alice", OverrideState.INVISIBLE, until_ms=now + 60_000)
        self.w.step()
        self.assertEqual(self.w.state("alice", "bob"), State.OFFLINE)
        self.assertIsNone(self.e.get_one("alice", "bob").override)
        me = self.e.get_one("alice", viewer="alice")
        self.assertNotEqual(me.state, State.OFFLINE)
        self.assertEqual(me.override, OverrideState.INVISIBLE)
        stack = self.e.list_overrides("alice")
        self.assertEqual([(o.id, o.state) for o in stack],
                         [(dnd, OverrideState.DND), (inv, OverrideState.INVISIBLE)])
        self.assertEqual(stack[1].until_ms, now + 60_000)
        self.e.revoke_override("alice", inv)
        with self.assertRaises(presence.NotFound):
            self.e.revoke_override("alice", inv)
        self.w.step()
        self.assertEqual(self.w.state("alice", "bob"), State.DND)
        self.assertEqual(self.e.clear_overrides("alice"), 1)
        self.e.set_override("alice", OverrideState.AWAY)
        self.e.set_override("bob", OverrideState.ONLINE)
        self.assertEqual(self.e.revoke_overrides_set_between(0, (1 << 63) - 1), 2)
        self.assertEqual(self.e.list_overrides("alice"), [])

    def test_expiry(self) -> None:
        self.e.connect("alice", "laptop", 1)
        self.w.step()
        self.e.set_override("alice", OverrideState.DND, until_ms=self.e.now_ms() + 1000)
        self.w.step()
        self.assertEqual(self.w.state("alice"), State.DND)
        for _ in range(3):
            self.e.signal("alice", "laptop", 1)
            self.w.step(500)
        self.assertEqual(self.w.state("alice"), State.ONLINE)

    def test_bad(self) -> None:
        for state in (0, 5, 1 << 20):
            with self.assertRaises(presence.InvalidArgument):
                self.e.set_override("alice", state)
        with self.assertRaises(presence.InvalidArgument):
            self.e.set_override("alice", OverrideState.DND, until_ms=1)  # in the past
        with self.assertRaises(presence.InvalidArgument):
            self.e.set_override("", OverrideState.DND)


class GetTest(WorldTest):
    def test_batch(self) -> None:
        self.e.connect("alice", "laptop", 1)
        self.e.connect("bob", "phone", 1, platform=Platform.MOBILE, activity=Activity.IDLE)
        self.w.step()
        got = self.e.get(["bob", "nobody", "", "x" * 129, "alice"])
        self.assertEqual(len(got), 5)
        bob = got[0]
        self.assertEqual((bob.user_id, bob.known, bob.state), (b"bob", True, State.AWAY))
        self.assertEqual(bob.devices, presence.DeviceSummary(mobile=1))
        self.assertEqual(bob.devices.total, 1)
        self.assertEqual(bob.last_seen_ms, 1_000_000)
        self.assertEqual(bob.freshness_ms, 100)
        self.assertGreater(bob.version, 0)
        self.assertEqual((got[1].user_id, got[1].known, got[1].state),
                         (b"nobody", False, State.OFFLINE))
        self.assertEqual((got[2].known, got[2].user_id), (False, b""))
        self.assertEqual((got[3].known, got[3].user_id), (False, b""))
        self.assertEqual(got[4].state, State.ONLINE)
        self.assertIsNone(got[4].override)
        self.assertEqual(self.e.get([]), [])
        self.assertEqual(self.e.get(iter(["alice"]))[0].state, State.ONLINE)  # any iterable


class MetricsTest(WorldTest):
    def test_engine_metrics(self) -> None:
        self.e.signal("alice", "laptop", 1)
        self.w.step()
        text = self.e.metrics()
        self.assertIsInstance(text, str)
        self.assertIn("# TYPE presence_signals_accepted_total counter", text)
        self.assertIn('presence_signals_accepted_total{source="app"} 1', text)
        self.assertIn("presence_live_devices 1", text)


if __name__ == "__main__":
    unittest.main()
