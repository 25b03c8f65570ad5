"""The fan-out from Python: subscribers, topics, poll, resume, push sinks,
metrics."""
from __future__ import annotations

import unittest
from typing import List, Tuple

import presence
from presence import DiffBatch, OverrideState, State

from util import WorldTest


def state_in(batch: DiffBatch, user: bytes, topic: bytes = b"") -> object:
    """The state a batch carries for user (in topic; b"": the list), "removed",
    or None."""
    users = batch.users if not topic else next(
        (t.users for t in batch.topics if t.topic == topic), ())
    for u in users:
        if u.user_id == user:
            return "removed" if u.removed else u.state
    return None


class PollTest(WorldTest):
    def setUp(self) -> None:
        super().setUp()
        self.f = presence.Fanout(self.e, rate_per_sec=0)

    def tearDown(self) -> None:
        self.f.close()
        super().tearDown()

    def test_lists_topics_resume(self) -> None:
        f, e = self.f, self.e
        e.connect("alice", "laptop", 1)
        e.connect("carol", "desk", 1)
        self.w.step()
        sub = f.subscribe(owner="bob")
        self.assertNotEqual(sub, 0)
        f.add_users(sub, ["alice", "dave"])
        self.assertIsNone(f.poll(sub))  # nothing before a tick
        self.w.step()
        b = f.poll(sub)
        assert b is not None
        self.assertTrue(b.snapshot)
        self.assertEqual((b.subscriber_id, b.sequence), (sub, 1))
        self.assertEqual(state_in(b, b"alice"), State.ONLINE)
        self.assertIsNone(state_in(b, b"dave"))  # never published: not in the view
        self.assertIsNone(f.poll(sub))

        f.add_members("team-1", ["alice", "carol", "erin"])
        f.join(sub, "team-1")
        self.w.step()
        b = f.poll(sub)
        assert b is not None
        self.assertEqual((b.snapshot, b.sequence), (False, 2))
        self.assertEqual(b.topics[0].topic, b"team-1")
        self.assertTrue(b.topics[0].full)
        self.assertEqual(state_in(b, b"carol", b"team-1"), State.ONLINE)
        self.assertIsNone(state_in(b, b"erin", b"team-1"))

        e.set_override("alice", OverrideState.DND)
        self.w.step()
        b = f.poll(sub)
        assert b is not None
        self.assertEqual(b.sequence, 3)
        self.assertEqual(state_in(b, b"alice"), State.DND)
        self.assertEqual(state_in(b, b"alice", b"team-1"), State.DND)
        self.assertIsNone(state_in(b, b"carol", b"team-1"))

        # Resume from cursor 1: batches 2 and 3 again, same numbers.
        f.resume(sub, 1)
        self.assertEqual([x.sequence for x in f.poll_all(sub)], [2, 3])
        with self.assertRaises(presence.InvalidArgument) as cm:
            f.resume(sub, 8)
        self.assertIn("future", cm.exception.message)

        f.remove_users(sub, ["dave"])
        f.replace_users(sub, ["carol"])
        f.leave(sub, "team-1")
        with self.assertRaises(presence.NotFound):
            f.leave(sub, "team-1")
        self.w.step()
        b = f.poll(sub)
        assert b is not None
        self.assertEqual(state_in(b, b"carol"), State.ONLINE)
        self.assertEqual(state_in(b, b"alice"), "removed")
        self.assertEqual(state_in(b, b"dave"), "removed")
        self.assertTrue(any(t.left for t in b.topics))
        f.remove_members("team-1", ["erin"])
        f.replace_members("team-1", ["alice"])
        with self.assertRaises(presence.NotFound) as cm2:
            f.join(sub, "team-9")
        self.assertIn("team-9", cm2.exception.message)

        # Raw bytes decode to the same batch.
        sub2 = f.subscribe()
        f.add_users(sub2, ["alice"])
        self.w.step()
        raw = f.poll_raw(sub2)
        assert raw is not None
        b = presence.decode_diff_batch(raw)
        self.assertTrue(b.snapshot)
        self.assertEqual(state_in(b, b"alice"), State.DND)

        f.unsubscribe(sub)
        with self.assertRaises(presence.NotFound):
            f.unsubscribe(sub)
        with self.assertRaises(presence.NotFound):
            f.poll(sub)
        with self.assertRaises(presence.NotFound):
            f.add_users(sub, ["alice"])

    def test_limits(self) -> None:
        with presence.Fanout(self.e, max_subscribers=1, max_list_users=1) as small:
            a = small.subscribe()
            with self.assertRaises(presence.ResourceExhausted):
                small.subscribe()
            with self.assertRaises(presence.ResourceExhausted):
                small.add_users(a, ["x", "y"])
        with self.assertRaises(presence.InvalidArgument) as cm:
            presence.Fanout(self.e, max_batch=0)
        self.assertIn("max_batch", cm.exception.message)
        with self.assertRaises(TypeError):
            presence.Fanout(self.e, no_such=1)


class PushTest(WorldTest):
    def test_sink(self) -> None:
        f = presence.Fanout(self.e)
        got: List[Tuple[int, DiffBatch]] = []
        raw: List[bytes] = []
        sa = f.subscribe(sink=lambda s, b: got.append((s, b)))
        sr = f.subscribe(sink=lambda s, b: raw.append(b), raw=True)
        f.add_users(sa, ["alice"])
        f.add_users(sr, ["alice"])
        self.w.step()
        self.assertEqual(len(got), 1)
        self.assertEqual(got[0][0], sa)
        self.assertTrue(got[0][1].snapshot)
        self.assertIsNone(state_in(got[0][1], b"alice"))  # never published yet
        self.assertIsInstance(raw[0], bytes)
        h = self.e.connect("alice", "laptop", 1)
        self.w.step(1000)
        self.assertEqual(state_in(got[-1][1], b"alice"), State.ONLINE)
        self.assertEqual(got[-1][1].sequence, 2)
        # Poll is for pull subscribers.
        with self.assertRaises(presence.FailedPrecondition) as cm:
            f.poll(sa)
        self.assertIn("sink", cm.exception.message)
        # Resume pushes before it returns.
        f.resume(sa, 1)
        self.assertEqual(got[-1][1].sequence, 2)
        self.assertEqual(len(got), 3)
        f.unsubscribe(sa)
        self.assertNotIn(sa, [k for k in f._sinks])  # payload freed
        self.e.disconnect(h, presence.DisconnectKind.CLEAN)
        self.w.step(1000)
        self.assertEqual(len(got), 3)
        self.assertEqual(len(raw), 3)
        f.close()
        self.assertEqual(f._sinks, {})  # every payload freed on destroy

    def test_sink_calls_back(self) -> None:
        f = presence.Fanout(self.e)
        seen: List[object] = []

        def sink(sub: int, batch: DiffBatch) -> None:
            # Allowed: any call but tick() and close().
            seen.append(self.e.get_one("alice").state)
            with self.assertRaises(presence.FailedPrecondition):
                self.e.tick()
            with self.assertRaises(presence.FailedPrecondition):
                f.close()
            with self.assertRaises(presence.FailedPrecondition):
                self.e.close()
            f.unsubscribe(sub)  # itself, from inside its sink
            seen.append("done")

        s = f.subscribe(sink=sink)
        f.add_users(s, ["alice"])
        self.w.step()
        self.assertEqual(seen, [State.OFFLINE, "done"])
        self.assertFalse(f.closed)
        self.assertFalse(self.e.closed)
        f.close()

    def test_sink_exception_is_raised_from_tick(self) -> None:
        f = presence.Fanout(self.e)
        calls: List[int] = []

        def bad(sub: int, batch: DiffBatch) -> None:
            calls.append(sub)
            raise RuntimeError("boom")

        s1 = f.subscribe(sink=bad)
        s2 = f.subscribe(sink=lambda s, b: calls.append(s))
        f.add_users(s1, ["alice"])
        f.add_users(s2, ["alice"])
        with self.assertRaisesRegex(RuntimeError, "boom"):
            self.w.step()
        self.assertEqual(sorted(calls), sorted([s1, s2]))  # the tick went on
        self.w.step()  # nothing pending any more
        f.close()

    def test_fanout_kept_alive_by_engine(self) -> None:
        got: List[DiffBatch] = []
        s = presence.Fanout(self.e).subscribe(sink=lambda s, b: got.append(b))
        import gc
        gc.collect()
        self.w.step()
        self.assertEqual(len(got), 1)
        self.assertEqual(got[0].subscriber_id, s)

    def test_metrics(self) -> None:
        with presence.Fanout(self.e) as f:
            self.e.signal("alice", "laptop", 1)
            self.w.step()
            text = f.metrics()
            self.assertIn("presence_fanout_batches_total", text)
            self.assertIn("presence_fanout_subscribers 0", text)


if __name__ == "__main__":
    unittest.main()
