"""Shared helpers: an engine on a manual clock with no dwell."""
from __future__ import annotations

import unittest

import presence


class World:
    def __init__(self, min_dwell_ms: int = 0, **options: object) -> None:
        self.clock = presence.ManualClock(1_000_000)
        self.engine = presence.Engine(self.clock, min_dwell_ms=min_dwell_ms, **options)

    def step(self, ms: int = 100) -> int:
        self.clock.advance(ms)
        return self.engine.tick()

    def state(self, user: str, viewer: object = None) -> presence.State:
        return self.engine.get_one(user, viewer).state  # type: ignore[arg-type,return-value]

    def close(self) -> None:
        self.engine.close()
        self.clock.close()


class WorldTest(unittest.TestCase):
    def setUp(self) -> None:
        self.w = World()
        self.e = self.w.engine

    def tearDown(self) -> None:
        self.w.close()
