"""Bad input: wrong types, empty or long ids, closed handles, invalid enum
values and out-of-range numbers each raise a clear exception (the mapped
class for what the library answers), and never crash."""
from __future__ import annotations

import unittest

import presence
from presence import DisconnectKind, OverrideState, Platform, Signal, SignalBatch

from util import WorldTest


class WrongTypesTest(WorldTest):
    def test_ids(self) -> None:
        e = self.e
        for bad in (1, None, 2.5, ["a"]):
            with self.assertRaises(TypeError):
                e.signal(bad, "pc", 1)  # type: ignore[arg-type]
            with self.assertRaises(TypeError):
                e.connect("a", bad, 1)  # type: ignore[arg-type]
            with self.assertRaises(TypeError):
                e.set_override(bad, OverrideState.DND)  # type: ignore[arg-type]
        with self.assertRaises(TypeError):
            e.get("alice")  # a str, not a list of ids
        with self.assertRaises(TypeError):
            e.get([1, 2])  # type: ignore[list-item]
        with self.assertRaises(TypeError):
            e.signal_batch([("alice", "pc", 1)])  # type: ignore[list-item]
        with self.assertRaises(TypeError):
            SignalBatch(["a", 2], ["b", "c"], [1, 1])  # type: ignore[list-item]
        with self.assertRaises(TypeError):
            SignalBatch("ab", ["b", "c"], [1, 1])

    def test_numbers(self) -> None:
        e = self.e
        with self.assertRaises(TypeError):
            e.signal("a", "pc", "1")  # type: ignore[arg-type]
        with self.assertRaises(TypeError):
            e.beat("1")  # type: ignore[arg-type]
        with self.assertRaises(TypeError):
            e.signal("a", "pc", 1, platform=1.0)  # type: ignore[arg-type]
        with self.assertRaises(TypeError):
            SignalBatch(["a"], ["b"], [1.5])  # type: ignore[list-item]
        with self.assertRaises(presence.InvalidArgument):
            SignalBatch(["a"], ["b"], [1], platform=[1 << 40])  # not truncated to 0
        with self.assertRaises(presence.InvalidArgument):
            SignalBatch(["a"], ["b"], [-1])  # would wrap to 2**64 - 1
        with self.assertRaises(presence.InvalidArgument):
            SignalBatch(["a", "b"], ["b"], [1, 1])  # column lengths differ
        with self.assertRaises(presence.InvalidArgument):
            e.signal("a", "pc", -1)
        with self.assertRaises(presence.InvalidArgument):
            e.signal("a", "pc", 1, platform=(1 << 32) + Platform.WEB)  # not truncated
        with self.assertRaises(presence.InvalidArgument):
            e.beat(-5)
        with self.assertRaises(TypeError):
            presence.Fanout("engine")  # type: ignore[arg-type]
        with self.assertRaises(TypeError):
            presence.Engine(clock="clock")  # type: ignore[arg-type]


class IdsTest(WorldTest):
    def test_empty_and_long(self) -> None:
        e = self.e
        with self.assertRaises(presence.InvalidArgument) as cm:
            e.signal("", "pc", 1)
        self.assertIn("user_id is empty", cm.exception.message)
        with self.assertRaises(presence.InvalidArgument) as cm:
            e.signal("x" * 129, "pc", 1)
        self.assertIn("129 bytes", cm.exception.message)
        with self.assertRaises(presence.InvalidArgument):
            e.connect("a", "", 1)
        with self.assertRaises(presence.InvalidArgument):
            e.signal("a", "pc", 1, gateway="g" * 129)
        e.signal("x" * 128, "d" * 128, 1)  # the limits themselves are fine
        f = presence.Fanout(e)
        sub = f.subscribe()
        with self.assertRaises(presence.InvalidArgument) as cm:
            f.join(sub, "")
        self.assertIn("topic is empty", cm.exception.message)
        with self.assertRaises(presence.InvalidArgument):
            f.add_users(sub, ["ok", ""])
        with self.assertRaises(presence.InvalidArgument):
            f.add_members("t", ["ok", ""])
        with self.assertRaises(presence.InvalidArgument):
            f.subscribe(owner="o" * 129)
        # A viewer id past the limit is refused, like any id.
        with self.assertRaises(presence.InvalidArgument) as cm:
            e.get(["a"], viewer="v" * 129)
        self.assertIn("viewer_user_id is 129 bytes", cm.exception.message)
        f.close()


class EnumsTest(WorldTest):
    def test_invalid_values(self) -> None:
        e = self.e
        for field in ("platform", "source", "activity"):
            for value in (0, 9, -3, (1 << 31) - 1):
                with self.subTest(field=field, value=value):
                    with self.assertRaises(presence.InvalidArgument) as cm:
                        e.signal("a", "pc", 1, **{field: value})
                    self.assertEqual(cm.exception.code, presence.StatusCode.INVALID_ARGUMENT)
        h = e.connect("a", "pc", 1)
        with self.assertRaises(presence.InvalidArgument) as cm:
            e.beat(h, 0)
        self.assertIn("activity", cm.exception.message)
        with self.assertRaises(presence.InvalidArgument) as cm:
            e.beat(h, 1, 4)
        self.assertIn("source", cm.exception.message)
        with self.assertRaises(presence.InvalidArgument):
            e.disconnect(h, DisconnectKind.UNSPECIFIED)
        with self.assertRaises(presence.InvalidArgument):
            e.set_override("a", OverrideState.UNSPECIFIED)
        r = e.signal_batch([Signal("b", "pc", 1, platform=77)])
        self.assertEqual(r.rejected, 1)
        self.assertIsInstance(r.error, presence.InvalidArgument)


class ClosedTest(unittest.TestCase):
    def test_closed_handles(self) -> None:
        clock = presence.ManualClock(1)
        engine = presence.Engine(clock)
        fanout = presence.Fanout(engine)
        sub = fanout.subscribe()
        fanout.close()
        fanout.close()
        for call in (lambda: fanout.subscribe(), lambda: fanout.poll(sub),
                     lambda: fanout.add_users(sub, ["a"]), lambda: fanout.metrics(),
                     lambda: fanout.resume(sub, 0), lambda: fanout.join(sub, "t")):
            with self.assertRaises(presence.InvalidArgument) as cm:
                call()
            self.assertIn("fanout is closed", str(cm.exception))
        engine.close()
        for call in (lambda: engine.tick(), lambda: engine.signal("a", "b", 1),
                     lambda: engine.beat(1), lambda: engine.get(["a"]),
                     lambda: engine.metrics(), lambda: engine.signal_batch([]),
                     lambda: presence.Fanout(engine)):
            with self.assertRaises(presence.InvalidArgument) as cm:
                call()
            self.assertIn("engine is closed", cm.exception.message)
        clock.close()
        with self.assertRaises(presence.InvalidArgument):
            clock.advance(1)
        with self.assertRaises(presence.InvalidArgument):
            presence.Engine(clock)
        with self.assertRaises(presence.InvalidArgument):
            with clock:
                pass

    def test_expired_device_handles(self) -> None:
        with presence.Engine(presence.ManualClock(1)) as e:
            for h in (0, 0xDEADBEEFDEADBEEF):
                with self.assertRaises(presence.NotFound) as cm:
                    e.beat(h)
                self.assertIsInstance(cm.exception, LookupError)
            with self.assertRaises(presence.NotFound):
                e.disconnect(12345, DisconnectKind.CLEAN)

    def test_exception_classes(self) -> None:
        err = presence.errors.error_for(3, "x")
        self.assertIsInstance(err, presence.InvalidArgument)
        self.assertIsInstance(err, ValueError)
        self.assertEqual((err.code, err.message, str(err)), (3, "x", "x (INVALID_ARGUMENT)"))
        self.assertIsInstance(presence.errors.error_for(8, "m"), presence.ResourceExhausted)
        self.assertIsInstance(presence.errors.error_for(13, "m"), presence.Internal)
        unknown = presence.errors.error_for(42, "new")
        self.assertIs(type(unknown), presence.PresenceError)
        self.assertEqual(unknown.code, 42)
        import pickle
        again = pickle.loads(pickle.dumps(presence.errors.error_for(5, "gone")))
        self.assertIsInstance(again, presence.NotFound)
        self.assertEqual(again.message, "gone")


if __name__ == "__main__":
    unittest.main()
