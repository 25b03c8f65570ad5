#!/usr/bin/python3
"""A bounded slowloris test of presence_server with an independent client.

2,000 attackers, 20 per source address from 127.0.0.2 up (so that no single
per-IP cap stops them), each open a connection, send the start of an HTTP
request and then one more header line every 2 s, never ending it; one the
server drops is opened again. The server starts with a soft fd limit of 1024,
as under a default shell or systemd unit, so it must raise its own. Once the
server holds every attacking connection (its sockets, counted in /proc), a
legitimate client on 127.0.0.1 connects --tries times over --seconds: each
time it must get its WebSocket welcome and snapshot, and an answer to
GET /presence, within --bound seconds (1 s). The attack runs in a child
process, so that its event loop's lag is not in the legitimate client's
timings.

  slowloris_test.py PRESENCE_SERVER [--attackers 2000] [--seconds 10]
"""

import argparse
import asyncio
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rig  # noqa: E402


class Attack:
    def __init__(self, args, port):
        self.args = args
        self.port = port
        self.addresses = rig.loopback_addresses(2, -(-args.attackers // args.per_address))
        self.opened = 0          # connections opened, reopened ones included
        self.in_place = 0        # attackers that have sent their first bytes
        self.dropped = []        # seconds each dropped connection lived
        self.refused = 0         # connects that failed
        self.stop = False
        self.gate = asyncio.Semaphore(200)

    async def attacker(self, i):
        source = self.addresses[i // self.args.per_address]
        first = True
        while not self.stop:
            try:
                async with self.gate:
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.port, local_addr=(source, 0))
                    writer.write(b"GET /presence?user_ids=alice HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                    await writer.drain()
            except OSError:
                self.refused += 1
                await asyncio.sleep(0.5)  # an attacker's pace, not a synchronisation
                continue
            self.opened += 1
            if first:
                self.in_place += 1
                first = False
            born = time.monotonic()
            n = 0
            try:
                while not self.stop:
                    try:
                        data = await asyncio.wait_for(reader.read(4096), self.args.trickle * random.uniform(0.8, 1.2))
                    except asyncio.TimeoutError:
                        n += 1
                        writer.write(f"X-Slow-{n}: {'a' * 8}\r\n".encode())
                        await writer.drain()
                        continue
                    if not data:  # the server closed it (or answered and closed)
                        self.dropped.append(time.monotonic() - born)
                        break
            except OSError:
                self.dropped.append(time.monotonic() - born)
            finally:
                writer.close()


async def legitimate(port, token, bound):
    """One legitimate visit: the WebSocket's welcome and snapshot, then
    GET /presence. Returns (seconds to the snapshot, seconds for the GET)."""
    t = time.monotonic()
    ws = await rig.ws_connect(f"ws://127.0.0.1:{port}/presence/stream", token, local_addr="127.0.0.1",
                              open_timeout=bound * 5)
    try:
        await rig.welcome_and_snapshot(ws, ["alice"], bound * 5)
        snapshot_s = time.monotonic() - t
        await ws.send(json.dumps({"type": "bye"}))
    finally:
        await ws.close()
    t = time.monotonic()
    status, body = await rig.http_request("127.0.0.1", port, "GET", "/presence?user_ids=alice", token=token,
                                          timeout=bound * 5)
    if status != 200:
        rig.fail(f"the legitimate GET /presence: {status} {body}")
    return snapshot_s, time.monotonic() - t


def attack_process(args, port, conn):
    """The child: runs the attack, answers "status" with its counts until
    told "stop", then reports and ends."""
    async def go():
        attack = Attack(args, port)
        tasks = [asyncio.create_task(attack.attacker(i)) for i in range(args.attackers)]
        while await rig.pipe_recv(conn, 600, "the next command") == "status":
            conn.send((attack.in_place, len(attack.dropped)))
        attack.stop = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        conn.send((attack.opened, attack.dropped, attack.refused))

    asyncio.run(go())


async def run(args, server):
    base = rig.socket_count(server.proc.pid)
    addresses = -(-args.attackers // args.per_address)
    with rig.child_process(attack_process, args, server.port) as conn:
        t = time.monotonic()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while True:  # wait, with a deadline, until the server has taken or refused every attacker
            conn.send("status")
            in_place, dropped = await rig.pipe_recv(conn, 15, "the attack's status")
            held = rig.socket_count(server.proc.pid) - base
            if not server.alive():
                rig.fail("the server died under the attack")
            if in_place == args.attackers and held + dropped >= args.attackers:
                break
            if loop.time() > deadline:
                if in_place < args.attackers:
                    rig.fail(f"only {in_place} of {args.attackers} attackers connected within 15 s")
                print(f"the server has neither taken nor refused every attacker after 15 s: it holds {held} of "
                      f"their sockets, dropped {dropped}; the rest wait in its listen queue", flush=True)
                break
            await asyncio.sleep(0.05)  # polls; what it waits for is the condition above
        print(f"{args.attackers} slowloris connections from {addresses} addresses in place in "
              f"{time.monotonic() - t:.1f} s; the server holds {held} sockets for them, dropped {dropped}",
              flush=True)

        token = rig.token_for("alice")
        snapshots, gets = [], []
        start = loop.time()
        for k in range(args.tries):
            await asyncio.sleep(max(0.0, start + k * args.seconds / args.tries - loop.time()))
            try:
                s, g = await legitimate(server.port, token, args.bound)
            except (OSError, asyncio.TimeoutError) as e:
                rig.fail(f"legitimate visit {k + 1} under attack failed: {e!r}")
            snapshots.append(s)
            gets.append(g)
        await asyncio.sleep(max(0.0, start + args.seconds - loop.time()))
        held_at_end = rig.socket_count(server.proc.pid) - base
        conn.send("stop")
        opened, dropped, refused = await rig.pipe_recv(conn, 30, "the attack's counts")

    print(f"under attack for {args.seconds:.0f} s, {args.tries} legitimate visits from 127.0.0.1: "
          f"connect -> snapshot max {max(snapshots) * 1000:.0f} ms (p50 {rig.percentile(snapshots, 50) * 1000:.0f}), "
          f"GET /presence max {max(gets) * 1000:.0f} ms")
    lived = f", after {min(dropped):.1f}..{max(dropped):.1f} s" if dropped else ""
    print(f"attackers: {opened} connections opened, {len(dropped)} dropped by the server{lived}, "
          f"{refused} connects refused; the server held {held_at_end} of their sockets at the end")
    if max(snapshots) > args.bound:
        rig.fail(f"a legitimate client waited {max(snapshots):.2f} s for its snapshot (bound {args.bound} s)")
    if max(gets) > args.bound:
        rig.fail(f"a legitimate GET /presence took {max(gets):.2f} s (bound {args.bound} s)")


def main():
    rig.stop_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("server", help="the presence_server binary")
    ap.add_argument("--attackers", type=int, default=2000)
    ap.add_argument("--per-address", type=int, default=20, help="attackers per source address 127.0.0.x")
    ap.add_argument("--trickle", type=float, default=2.0, help="seconds between an attacker's header lines")
    ap.add_argument("--seconds", type=float, default=15, help="how long the legitimate client tries")
    ap.add_argument("--tries", type=int, default=6)
    ap.add_argument("--bound", type=float, default=1.0, help="seconds a legitimate visit may take")
    ap.add_argument("--server-nofile", type=int, default=1024, help="the server's soft fd limit at start")
    args = ap.parse_args()
    random.seed(1)
    rig.raise_fd_limit(args.attackers + 1000)

    with rig.new_workdir("presence-slowloris-") as work:
        auth = os.path.join(work, "auth.txt")
        rig.write_auth(auth, {"alice": rig.token_for("alice")})
        with rig.PresenceServer(args.server, work, auth, exit_after=args.seconds + 300,
                                rlimit_nofile=args.server_nofile) as server:
            rig.run_checks(run(args, server), server)
    print("PASS")


if __name__ == "__main__":
    main()
