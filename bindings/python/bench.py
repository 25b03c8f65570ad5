#!/usr/bin/env python3
"""Keyed signals and handle heartbeats per second from Python, batch against one by one.

    PRESENCE_LIBRARY=build/libpresence.so PYTHONPATH=bindings/python \
        python3 bindings/python/bench.py [--batch 10000] [--devices 100000] [--seconds 3]

Each round sends `devices` keyed signals (one per device, str ids, one
session each) in batches of `batch`, and reports three figures:
  end to end:  Python lists of ids -> SignalBatch -> Engine.signal_batch
  build only:  Python lists -> SignalBatch (the ctypes array of presence_signal_t)
  call only:   Engine.signal_batch on batches built beforehand (the library)
and two for handle heartbeats on the same devices, after connecting them:
  beat:        Engine.beat, one call per heartbeat
  beat_many:   Engine.beat_many, one call per `batch` handles (array.array('Q'))
Wall-clock and CPU time (time.process_time) are both given: on a loaded
machine the CPU figure is the one that says what one core does.
"""
from __future__ import annotations

import argparse
import array
import time
from typing import Callable, List, Tuple

import presence


def measure(fn: Callable[[], int], seconds: float) -> Tuple[float, float]:
    """Runs fn (which returns how many signals it handled) until `seconds` of
    wall time pass; returns (signals per wall second, per CPU second)."""
    fn()  # warm up
    n = 0
    w0, c0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - w0 < seconds:
        n += fn()
    w, c = time.perf_counter() - w0, time.process_time() - c0
    return n / w, n / max(c, 1e-9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()

    n, b = args.devices, args.batch
    users = [f"user-{i:07d}" for i in range(n)]
    devices = ["phone" if i % 3 else "laptop" for i in range(n)]
    sessions = [1] * n
    slices = [(users[i:i + b], devices[i:i + b], sessions[i:i + b]) for i in range(0, n, b)]

    # Every device is sent many times a second: no flood limit here.
    with presence.Engine(max_signals_per_device_per_sec=0) as engine:
        def end_to_end() -> int:
            for u, d, s in slices:
                r = engine.signal_batch(presence.SignalBatch(u, d, s,
                                                             platform=presence.Platform.MOBILE))
                if r.applied != len(u):
                    raise SystemExit(f"not all applied: {r}")
            return n

        def build_only() -> int:
            for u, d, s in slices:
                presence.SignalBatch(u, d, s, platform=presence.Platform.MOBILE)
            return n

        built: List[presence.SignalBatch] = [
            presence.SignalBatch(u, d, s, platform=presence.Platform.MOBILE)
            for u, d, s in slices]

        def call_only() -> int:
            for batch in built:
                engine.signal_batch(batch)
            return n

        handles: List[int] = []
        handle_batches: List["array.array[int]"] = []

        def beat() -> int:
            for h in handles[:b]:
                engine.beat(h)
            return b

        def beat_many() -> int:
            for hs in handle_batches:
                r = engine.beat_many(hs)
                if r.applied != len(hs):
                    raise SystemExit(f"not all applied: {r}")
            return n

        print(f"presence {presence.library_version()} at {presence.load_library()}")
        print(f"{n} devices, batches of {b}, {args.seconds:.0f} s per figure")
        for name, fn in (("end to end", end_to_end), ("build only", build_only),
                         ("call only", call_only), ("beat", beat), ("beat_many", beat_many)):
            if name == "beat":  # the same devices, now through handles
                handles.extend(engine.connect(u, d, 1, platform=presence.Platform.MOBILE)
                               for u, d in zip(users, devices))
                handle_batches.extend(array.array("Q", handles[i:i + b]) for i in range(0, n, b))
            wall, cpu = measure(fn, args.seconds)
            print(f"  {name:11s} {wall / 1e6:6.2f} M/s wall   {cpu / 1e6:6.2f} M/s CPU")


if __name__ == "__main__":
    main()
