#!/usr/bin/env python3
"""examples/python/watch.py: the Python binding in one small program.

Four users connect their devices, one sets Do Not Disturb, one's phone drops
off the network, and a watcher subscribed to all four prints every batch of
diffs it receives through a push sink. At the end, Engine.get answers for
everyone. The engine runs on a manual clock advanced in steps of 100 ms, so
the program runs in an instant and prints the same every time; a real host
uses the system clock (presence.Engine() with no clock), calls tick() from a
100 ms timer and beat() from each socket's heartbeat.

Run from the top of the checkout, after building libpresence.so:
    PRESENCE_LIBRARY=build/libpresence.so PYTHONPATH=bindings/python \
        python3 examples/python/watch.py
"""
from __future__ import annotations

import presence
from presence import Activity, DiffBatch, DisconnectKind, OverrideState, Platform

START_MS = 1_000_000


def main() -> None:
    with presence.ManualClock(START_MS) as clock, presence.Engine(clock) as engine, \
            presence.Fanout(engine) as fanout:

        def on_batch(subscriber: int, batch: DiffBatch) -> None:
            t = (clock.now_ms() - START_MS) / 1000
            kind = "snapshot" if batch.snapshot else "diff"
            print(f"[{t:5.1f}s] subscriber {subscriber}: batch #{batch.sequence} ({kind})")
            for u in batch.users:
                name = u.user_id.decode()
                if u.removed:
                    print(f"          {name:6s} (removed)")
                else:
                    print(f"          {name:6s} {u.state.name.lower():8s} {u.devices}")

        watcher = fanout.subscribe(sink=on_batch)
        fanout.add_users(watcher, ["alice", "bob", "carol", "dave"])

        handles = {
            "alice": engine.connect("alice", "laptop", 1, platform=Platform.DESKTOP),
            "bob": engine.connect("bob", "phone", 1, platform=Platform.MOBILE),
            "carol": engine.connect("carol", "browser", 1, platform=Platform.WEB),
        }
        engine.connect("carol", "phone", 1, platform=Platform.MOBILE)

        for step in range(1, 101):  # 10 s in steps of 100 ms
            clock.advance(100)
            if step % 10 == 0:  # heartbeats once a second; bob's phone went quiet at 3 s
                for user, h in handles.items():
                    if user != "bob" or step <= 30:
                        engine.beat(h, Activity.ACTIVE)
            if step == 20:
                engine.set_override("carol", OverrideState.DND, until_ms=clock.now_ms() + 5000)
            if step == 40:
                engine.connect("dave", "console", 1, platform=Platform.CONSOLE)
            if step == 60:
                engine.disconnect(handles.pop("alice"), DisconnectKind.CLEAN)
            engine.tick()

        print("at the end:")
        for p in engine.get(["alice", "bob", "carol", "dave"]):
            print(f"  {p.user_id.decode():6s} {p.state.name.lower():8s} "
                  f"live {p.live_devices} ({p.devices})")


if __name__ == "__main__":
    main()
