"""Engine options version 2 and the durable calls: the flood limit, the
memory budget, the file store (a round trip across engines, a locked
folder), history, time in states, last seen, erase, drain, rebuild, and the
exceptions of the status codes the stores add. Time moves on the manual
clock only."""
from __future__ import annotations

import pathlib
import pickle
import random
import tempfile
import unittest

import presence
from presence import Cause, FileSync, State

from util import World

INT64_MAX = (1 << 63) - 1


class OptionsV2Test(unittest.TestCase):
    def test_flood_limit(self) -> None:
        w = World(max_signals_per_device_per_sec=3)
        try:
            h = w.engine.connect("alice", "pc", 1)
            w.engine.beat(h)
            w.engine.beat(h)
            with self.assertRaises(presence.ResourceExhausted):
                w.engine.beat(h)
            w.clock.advance(1000)  # the next second
            w.engine.beat(h)
        finally:
            w.close()

    def test_memory_budget(self) -> None:
        w = World(memory_budget_bytes=192)  # one user with one device
        try:
            w.engine.signal("alice", "pc", 1)
            with self.assertRaises(presence.ResourceExhausted) as cm:
                w.engine.signal("bob", "pc", 1)
            self.assertIn("memory budget", cm.exception.message)
            w.engine.signal("alice", "pc", 1)  # what is held keeps working
        finally:
            w.close()

    def test_bad_values(self) -> None:
        for options in ({"max_signals_per_device_per_sec": 70000},
                        {"max_signals_per_device_per_sec": -1},
                        {"memory_budget_bytes": -1},
                        {"file_sync": 0}, {"file_sync": 4}):
            with self.subTest(options=options):
                with self.assertRaises(presence.InvalidArgument):
                    presence.Engine(**options)
        with self.assertRaises(TypeError):
            presence.Engine(store=2)  # set by file_dir
        with self.assertRaises(TypeError):
            presence.Engine(file_dir=5)  # type: ignore[arg-type]
        with self.assertRaises(presence.InvalidArgument):
            presence.Engine(file_dir="")
        with self.assertRaises(presence.InvalidArgument):
            presence.Engine(file_dir="/tmp/a\0b")
        with self.assertRaises(presence.InvalidArgument):
            presence.Engine(file_dir="/tmp/x", file_sync=FileSync.INTERVAL,
                            file_sync_interval_ms=0)


class FileStoreTest(unittest.TestCase):
    def setUp(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="presence_py_")
        self.dir = pathlib.Path(self._tmp.name) / "data"
        self.clock = presence.ManualClock(1_000_000)

    def tearDown(self) -> None:
        self.clock.close()
        self._tmp.cleanup()

    def engine(self, **options: object) -> presence.Engine:
        return presence.Engine(self.clock, min_dwell_ms=0, file_dir=self.dir, **options)

    def test_round_trip(self) -> None:
        with self.engine(file_sync=FileSync.NEVER) as e:
            e.connect("alice", "laptop", 1, platform=presence.Platform.WEB)
            self.clock.advance(100)
            self.assertEqual(e.tick(), 1)
            # The folder is held: a second engine gets a clear error.
            with self.assertRaises(presence.FailedPrecondition) as cm:
                self.engine()
            self.assertIn(str(self.dir), cm.exception.message)
            self.assertIn("locked", cm.exception.message)
            self.assertIn("presence_file_store_", e.metrics())
        self.clock.advance(100)
        with self.engine() as e:
            p = e.get_one("alice")
            self.assertTrue(p.known)
            self.assertEqual(p.state, State.ONLINE)
            self.assertEqual(p.last_seen_ms, 1_000_000)
            self.assertEqual(len(e.history("alice", viewer="alice")), 1)

    def test_a_file_is_no_folder(self) -> None:
        self.dir.parent.joinpath("file").write_bytes(b"")
        with self.assertRaises(presence.FailedPrecondition) as cm:
            presence.Engine(file_dir=str(self.dir.parent / "file"))
        self.assertIn("not a directory", cm.exception.message)

    def test_history_and_operations(self) -> None:
        w = World(file_dir=self.dir)
        self.addCleanup(w.close)
        e = w.engine
        h = e.connect("alice", "pc", 1, trace_id=77)
        w.step(100)
        w.step(1900)
        e.beat(h, presence.Activity.IDLE)
        w.step(100)
        w.step(1900)
        e.disconnect(h, presence.DisconnectKind.CLEAN)
        w.step(100)
        w.step(1000)  # now 1_005_100

        t = e.history("alice", viewer="alice")
        self.assertEqual([x.state for x in t], [State.ONLINE, State.AWAY, State.OFFLINE])
        self.assertEqual(t[0].previous, State.OFFLINE)
        self.assertEqual((t[0].cause, t[0].trace_id, t[0].at_ms), (Cause.SIGNAL, 77, 1_000_100))
        self.assertEqual(t[2].cause, Cause.DISCONNECT)
        self.assertEqual([x.state for x in e.history(b"alice", 1_001_000, 1_003_000, viewer=b"alice")],
                         [State.AWAY])
        self.assertEqual(e.history("nobody", viewer="nobody"), [])
        d = e.time_in_states("alice", 1_000_000, 1_006_100, viewer="alice")
        self.assertEqual(d, presence.StateDurations(2000, 2000, 0, 1100))
        with self.assertRaises(presence.InvalidArgument):
            e.time_in_states("alice", 10, 1, viewer="alice")
        self.assertEqual(e.last_seen("alice", viewer="alice"), 1_002_000)
        with self.assertRaises(presence.NotFound):
            e.last_seen("nobody", viewer="nobody")

        for user in ("g1", "g2", "g3"):
            e.signal(user, "pc", 1, gateway="gw-a")
        w.step(100)
        self.assertEqual(e.drain_gateway("gw-a", 2), 2)
        self.assertEqual(e.drain_gateway("gw-a", 2), 1)
        self.assertEqual(e.drain_gateway("gw-a"), 0)
        with self.assertRaises(presence.NotFound):
            e.drain_gateway("gw-b")
        with self.assertRaises(presence.InvalidArgument):
            e.drain_gateway("gw-a", 0)

        e.connect("carol", "pc", 1)
        w.step(100)
        e.rebuild()
        self.assertEqual(e.get_one("carol").state, State.ONLINE)
        e.erase("carol")
        self.assertFalse(e.get_one("carol").known)
        self.assertEqual(e.history("carol", viewer="carol"), [])
        with self.assertRaises(presence.NotFound):
            e.last_seen("carol", viewer="carol")
        w.step(100)
        e.rebuild()
        self.assertFalse(e.get_one("carol").known)

    def test_device_history(self) -> None:
        w = World(file_dir=self.dir)
        self.addCleanup(w.close)
        e = w.engine
        E = presence.DeviceEvent
        # Connects at 1_000_000, a newer session at 1_000_100 replaces it, and
        # that one disconnects cleanly at 1_000_200.
        e.signal("alice", "pc", 1, platform=presence.Platform.DESKTOP)
        w.step(100)
        e.signal("alice", "pc", 2, platform=presence.Platform.DESKTOP)
        w.step(100)
        e.disconnect_device("alice", "pc", presence.DisconnectKind.CLEAN, 2)
        w.step(100)
        got = e.device_history("alice", "pc", viewer="alice")
        self.assertEqual([(t.event, t.at_ms, t.session_id) for t in got],
                         [(E.CONNECT, 1_000_000, 1), (E.DEAD_REPLACED, 1_000_100, 1),
                          (E.CONNECT, 1_000_100, 2), (E.DEAD_CLEAN, 1_000_200, 2)])
        self.assertEqual(got[0].platform, presence.Platform.DESKTOP)
        self.assertIsInstance(got[0], presence.DeviceTransition)
        self.assertEqual([t.event for t in e.device_history(b"alice", b"pc", 1_000_001,
                                                            1_000_100, viewer=b"alice")],
                         [E.DEAD_REPLACED, E.CONNECT])
        self.assertEqual(e.device_history("alice", "phone", viewer="alice"), [])
        # Only alice reads it: anyone else, or no viewer, is refused alike
        # whether or not the user exists.
        for viewer in (None, "bob"):
            for user in ("alice", "nobody"):
                with self.subTest(viewer=viewer, user=user):
                    with self.assertRaises(presence.PermissionDenied) as cm:
                        e.device_history(user, "pc", viewer=viewer)
                    self.assertIn("only its user's own", cm.exception.message)
        with self.assertRaises(presence.InvalidArgument):
            e.device_history("alice", "", viewer="alice")
        with self.assertRaises(presence.InvalidArgument):
            e.device_history("alice", "pc", 10, 1, viewer="alice")
        with self.assertRaises(TypeError):
            e.device_history("alice", 5, viewer="alice")  # type: ignore[arg-type]
        with self.assertRaises(TypeError):
            e.device_history("alice", "pc")  # type: ignore[call-arg]  # the viewer is required
        # Erase takes it with the user.
        e.erase("alice")
        self.assertEqual(e.device_history("alice", "pc", viewer="alice"), [])


class PublicViewTest(unittest.TestCase):
    """docs/design.md rule 8 through the binding: while a user is invisible,
    nothing it does changes a field another viewer reads (get, get_published,
    history, time_in_states, last_seen); it itself sees everything."""

    def test_an_invisible_users_actions_change_nothing_others_read(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        w = World(min_dwell_ms=1000, file_dir=pathlib.Path(tmp.name) / "data")
        self.addCleanup(w.close)
        e = w.engine
        rng = random.Random(7)
        for i in range(20):
            e.connect(f"u{i}", "pc", 1)
        e.connect("bob", "pc", 1)
        w.step(100)
        w.step(1500)
        e.set_override("bob", presence.OverrideState.INVISIBLE)
        w.step(1500)

        def public(viewer: str) -> tuple:
            g = e.get_one("bob", viewer)
            p = e.get_published(["bob"], viewer)[0]
            return (g.known, g.state, g.last_seen_ms, g.version, g.live_devices, g.devices,
                    g.override, p.state, p.version, p.last_seen_ms,
                    e.history("bob", viewer=viewer), e.last_seen("bob", viewer=viewer),
                    e.time_in_states("bob", 1_000_000, 1_003_000, viewer=viewer))

        seen = {v: public(v) for v in ("u0", "u7")}
        self.assertEqual(seen["u0"][1], State.OFFLINE)
        handles = []
        own = []
        for step in range(400):
            r = rng.randrange(6)
            if r == 0 or not handles:
                handles.append(e.connect("bob", f"d{rng.randrange(4)}", 2 + step,
                                         platform=presence.Platform(1 + rng.randrange(5))))
            elif r == 1:
                try:
                    e.beat(rng.choice(handles), presence.Activity(1 + rng.randrange(2)))
                except presence.PresenceError:
                    pass  # a handle a newer session replaced, or closed
            elif r == 2:
                try:
                    e.disconnect(rng.choice(handles), presence.DisconnectKind(1 + rng.randrange(2)))
                except presence.PresenceError:
                    pass
            else:
                w.step(rng.randrange(1, 2000))
            own.append(e.get_one("bob", "bob").last_seen_ms)
            for v, before in seen.items():
                self.assertEqual(public(v), before, f"step {step}, viewer {v}")
        # It did something: its own view moved on.
        self.assertGreater(max(own), seen["u0"][2])


class MemoryOnlyTest(unittest.TestCase):
    def test_no_device_history_store(self) -> None:
        w = World()
        try:
            with self.assertRaises(presence.FailedPrecondition):
                w.engine.device_history("alice", "pc", viewer="alice")
        finally:
            w.close()

    def test_no_history_store(self) -> None:
        w = World()
        try:
            w.engine.signal("alice", "pc", 1)
            w.step()
            with self.assertRaises(presence.FailedPrecondition) as cm:
                w.engine.history("alice", viewer="alice")
            self.assertIn("no history store", cm.exception.message)
            with self.assertRaises(presence.FailedPrecondition):
                w.engine.time_in_states("alice", 0, INT64_MAX, viewer="alice")
            self.assertEqual(w.engine.last_seen("alice", viewer="alice"), 1_000_000)
            w.engine.rebuild()  # nothing to load: the engine is empty
            self.assertFalse(w.engine.get_one("alice").known)
        finally:
            w.close()

    def test_bad_ids(self) -> None:
        w = World()
        try:
            e = w.engine
            for call in (lambda u: e.history(u), lambda u: e.time_in_states(u, 0, 1),
                         lambda u: e.last_seen(u), lambda u: e.erase(u)):
                for bad in ("", "x" * 129):
                    with self.assertRaises(presence.InvalidArgument):
                        call(bad)
                with self.assertRaises(TypeError):
                    call(5)
            with self.assertRaises(presence.InvalidArgument):
                e.drain_gateway("")
            with self.assertRaises(presence.InvalidArgument):
                e.history("alice", from_ms=-(1 << 64))
            with self.assertRaises(presence.InvalidArgument):
                e.get(["alice"], viewer="v" * 129)
        finally:
            w.close()


class StatusCodesTest(unittest.TestCase):
    def test_every_code_has_its_class(self) -> None:
        expected = {
            1: presence.Cancelled, 2: presence.Unknown, 3: presence.InvalidArgument,
            4: presence.DeadlineExceeded, 5: presence.NotFound, 6: presence.AlreadyExists,
            7: presence.PermissionDenied, 8: presence.ResourceExhausted,
            9: presence.FailedPrecondition, 10: presence.Aborted, 11: presence.OutOfRange,
            12: presence.Unimplemented, 13: presence.Internal, 14: presence.Unavailable,
            15: presence.DataLoss, 16: presence.Unauthenticated,
        }
        lib = presence._lib.load()
        for code, cls in expected.items():
            with self.subTest(code=code):
                err = presence.errors.error_for(code, "m")
                self.assertIs(type(err), cls)
                self.assertEqual(err.code, code)
                self.assertEqual(err.code.name, lib.status_name(code))
                again = pickle.loads(pickle.dumps(err))
                self.assertIs(type(again), cls)
        self.assertEqual(str(presence.errors.error_for(14, "store down")),
                         "store down (UNAVAILABLE)")


if __name__ == "__main__":
    unittest.main()
