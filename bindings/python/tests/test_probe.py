"""Push/pull checks (docs/design.md rule 9) from Python: a prober callable,
answers from inside it and after it, late and unknown ids, an exception in
the prober, and the options."""
from __future__ import annotations

import unittest
from typing import List

import presence
from presence import Probe, Source, State

from util import World


class ProbeTest(unittest.TestCase):
    def setUp(self) -> None:
        self.probes: List[Probe] = []
        self.answer = False

        def prober(p: Probe) -> None:
            self.probes.append(p)
            if self.answer:
                self.assertTrue(self.w.engine.answer_probe(p.probe_id))

        self.w = World(prober=prober)
        self.e = self.w.engine

    def tearDown(self) -> None:
        self.w.close()

    def run_for(self, ms: int) -> None:
        for _ in range(ms // 100):
            self.w.step(100)

    def test_silent_device_is_probed_then_offline(self) -> None:
        self.e.signal("alice", "web", 3, gateway="gw-1")
        self.run_for(1900)
        self.assertEqual(self.probes, [])
        self.run_for(100)
        self.assertEqual(len(self.probes), 1)
        p = self.probes[0]
        self.assertEqual((p.user_id, p.device_id, p.session_id, p.source, p.attempt, p.gateway),
                         (b"alice", b"web", 3, Source.APP, 1, b"gw-1"))
        self.assertNotEqual(p.probe_id, 0)
        self.run_for(2000)  # the retries at 2.5, 3, 3.5 s, unanswered: offline at 4 s
        self.assertEqual([q.attempt for q in self.probes], [1, 2, 3, 4])
        self.assertEqual(self.w.state("alice"), State.OFFLINE)
        self.assertFalse(self.e.answer_probe(self.probes[3].probe_id))  # late
        self.assertIn("presence_probes_given_up_total 1\n", self.e.metrics())
        self.assertIn("presence_probes_late_total 1\n", self.e.metrics())

    def test_answers_keep_a_device_without_heartbeats_online(self) -> None:
        self.answer = True
        self.e.connect("alice", "web", 1)
        self.run_for(30000)
        self.assertEqual(self.w.state("alice"), State.ONLINE)
        self.assertEqual(len(self.probes), 15)
        self.assertIn("presence_probes_answered_total 15\n", self.e.metrics())

    def test_answer_after_the_prober_returned(self) -> None:
        self.e.signal("alice", "web", 1)
        self.run_for(2000)
        self.assertTrue(self.e.answer_probe(self.probes[0].probe_id))
        self.run_for(3500)
        self.assertEqual(self.w.state("alice"), State.ONLINE)

    def test_unknown_and_bad_ids(self) -> None:
        with self.assertRaises(presence.NotFound):
            self.e.answer_probe(12345)
        with self.assertRaises(presence.InvalidArgument):
            self.e.answer_probe(-1)

    def test_an_exception_in_the_prober_is_raised_from_tick(self) -> None:
        def broken(p: Probe) -> None:
            if p.attempt == 1:
                raise RuntimeError("no socket")

        w = World(prober=broken)
        try:
            w.engine.signal("alice", "web", 1)
            with self.assertRaises(RuntimeError):
                for _ in range(25):
                    w.step(100)
            # The engine goes on: offline at 4 s.
            for _ in range(20):
                w.step(100)
            self.assertEqual(w.state("alice"), State.OFFLINE)
        finally:
            w.close()

    def test_options(self) -> None:
        with self.assertRaises(TypeError):
            World(prober=42)
        with self.assertRaises(presence.InvalidArgument):
            World(prober=lambda p: None, max_probes=0)
        w = World(prober=self.probes.append, probe_margin_ms=0, max_probes=1)
        try:
            w.engine.signal("alice", "web", 1)
            for _ in range(10):
                w.step(100)
            self.assertEqual(len(self.probes), 1)  # at 1 s: interval, no margin
        finally:
            w.close()


if __name__ == "__main__":
    unittest.main()
