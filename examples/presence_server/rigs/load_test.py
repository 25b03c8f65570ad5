#!/usr/bin/python3
"""A bounded load test of presence_server with an independent client.

N WebSocket clients (one user and one device each, from source addresses
127.0.0.x so that no per-IP cap is shared by all) connect on loopback and send
one heartbeat a second; W watchers (operators) subscribe to every tenth user
(at most 1000). While they connect, and then for S seconds at R changes a
second, state changes are made to watched users: an override to DND
(POST /presence/override), its clearing (DELETE /presence/override?all=true),
a clean logout ({"type":"bye"}) and a reconnect. For each change the rig
measures, at every watcher, the time from the change (the request sent, or
the connection begun) to the diff that shows it, and reports p50/p99/max.

It fails when a change does not reach every watcher within --deadline
seconds, or when the server disconnects a heartbeating client.

  load_test.py PRESENCE_SERVER [--clients 10000] [--seconds 30] [--rate 10]
"""

import argparse
import asyncio
import collections
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rig  # noqa: E402
import websockets  # noqa: E402

# The engine publishes at most one change per user per min_dwell (1 s by
# default; docs/design.md rule 7): changes of one user are spaced wider, so
# that the figures are the propagation, not the dwell.
DWELL_S = 1.1


class Run:
    def __init__(self, args, port):
        self.args = args
        self.port = port
        self.uri = f"ws://127.0.0.1:{port}/presence/stream"
        self.users = [f"load-{i:05d}" for i in range(args.clients)]
        step = max(1, -(-args.clients // args.watched))
        self.watched = self.users[::step][:args.watched]
        self.addresses = rig.loopback_addresses(2, -(-args.clients // args.per_address))
        self.sockets = {}            # user -> its WebSocket
        self.heartbeats = {}         # user -> its heartbeat task
        self.pending = {}            # user -> [kind, wanted state, t0, watchers not yet reached, done future]
        self.latency = collections.defaultdict(list)  # kind -> seconds, one per (change, watcher)
        self.missed = []
        self.dropped = []            # users the server disconnected
        self.sent = 0
        self.lateness = []           # how late each heartbeat left, seconds (the client's own lag)
        self.handshakes = asyncio.Semaphore(args.parallel)

    # -- changes and what the watchers see -------------------------------
    def expect(self, user, kind, state):
        fut = asyncio.get_running_loop().create_future()
        self.pending[user] = [kind, state, time.monotonic(), set(range(self.args.watchers)), fut]
        return fut

    async def settle(self, user, fut):
        try:
            await asyncio.wait_for(asyncio.shield(fut), self.args.deadline)
        except asyncio.TimeoutError:
            kind, state, _, left, _ = self.pending.pop(user)
            self.missed.append(f"{kind} of {user} (to {state}) never reached watcher(s) {sorted(left)}")

    def saw(self, watcher, user, state, now):
        p = self.pending.get(user)
        if p is None or p[1] != state or watcher not in p[3]:
            return
        p[3].discard(watcher)
        self.latency[p[0]].append(now - p[2])
        if not p[3]:
            del self.pending[user]
            p[4].set_result(None)

    async def watcher(self, index, ready):
        ws = await rig.ws_connect(self.uri + f"?device_id=watcher-{index}", rig.token_for(f"watcher-{index}"))
        await rig.welcome_and_snapshot(ws, self.watched, 30)
        ready.set_result(ws)
        try:
            async for raw in ws:
                now = time.monotonic()
                msg = json.loads(raw)
                if msg.get("type") == "diff":
                    for u in msg.get("users", []):
                        if "state" in u:
                            self.saw(index, u["user_id"], u["state"], now)
                elif msg.get("type") == "error":
                    rig.fail(f"watcher {index}: {msg}")
        except websockets.ConnectionClosed as e:
            if not self.stopping:
                rig.fail(f"watcher {index} was disconnected: {e}")

    # -- clients ---------------------------------------------------------
    async def connect(self, i, kind="connect"):
        user = self.users[i]
        async with self.handshakes:
            fut = self.expect(user, kind, "online") if user in self.watched_set else None
            ws = await rig.ws_connect(self.uri + f"?device_id={user}-d", rig.token_for(user),
                                      local_addr=self.addresses[i // self.args.per_address], open_timeout=60)
            await rig.recv_until(ws, lambda m: m.get("type") == "welcome", 30, f"{user}'s welcome")
        self.sockets[user] = ws
        self.heartbeats[user] = asyncio.create_task(self.heartbeat(user, ws))
        return fut

    async def heartbeat(self, user, ws):
        loop = asyncio.get_running_loop()
        due = loop.time() + random.random()  # spread over the second
        beat = json.dumps({"type": "heartbeat"})
        try:
            while True:
                await asyncio.sleep(max(0.0, due - loop.time()))
                self.lateness.append(loop.time() - due)
                await ws.send(beat)
                self.sent += 1
                due += 1.0
        except websockets.ConnectionClosed as e:
            if not self.stopping:
                self.dropped.append(f"{user}: {e}")

    async def change(self, user):
        """The next change of a watched user: online -> dnd -> online ->
        offline (bye) -> online (reconnect)."""
        self.busy.add(user)
        token = rig.token_for(user)
        step = self.cycle[user] % 4
        self.cycle[user] += 1
        if step == 0:
            fut = self.expect(user, "override", "dnd")
            status, body = await rig.http_request("127.0.0.1", self.port, "POST", "/presence/override",
                                                  token=token, body={"state": "dnd", "duration_ms": 600000})
        elif step == 1:
            fut = self.expect(user, "clear", "online")
            status, body = await rig.http_request("127.0.0.1", self.port, "DELETE",
                                                  "/presence/override?all=true", token=token)
        elif step == 2:
            self.heartbeats.pop(user).cancel()
            ws = self.sockets.pop(user)
            fut = self.expect(user, "bye", "offline")
            await ws.send(json.dumps({"type": "bye"}))
            await ws.wait_closed()
            status, body = 200, None
        else:
            fut = await self.connect(int(user[len("load-"):]), "reconnect")
            status, body = 200, None
        if status != 200:
            rig.fail(f"change {step} of {user}: HTTP {status} {body}")
        await self.settle(user, fut)
        self.settled[user] = time.monotonic()
        self.busy.discard(user)

    async def main(self, server_pid):
        self.stopping = False
        self.watched_set = set(self.watched)
        self.cycle = collections.Counter()
        self.busy = set()
        self.skipped = 0
        # A few users take every change in turn, so that each kind is
        # measured about as often as the others.
        self.changers = self.watched[:max(8, int(4 * self.args.rate))]
        self.settled = collections.defaultdict(float)
        loop = asyncio.get_running_loop()
        watchers = []
        for w in range(self.args.watchers):
            ready = loop.create_future()
            watchers.append(asyncio.create_task(self.watcher(w, ready)))
            await asyncio.wait_for(asyncio.shield(ready), 30)

        t = time.monotonic()
        futs = await asyncio.gather(*(self.connect(i) for i in range(self.args.clients)))
        ramp = time.monotonic() - t
        await asyncio.gather(*(self.settle(u, f) for u, f in zip(self.users, futs) if f is not None))
        print(f"connected {self.args.clients} clients in {ramp:.1f} s "
              f"({self.args.clients / ramp:.0f}/s, {self.args.parallel} handshakes at a time); "
              f"connect -> online at {self.args.watchers} watchers: {rig.summary_ms(self.latency['connect'])}",
              flush=True)

        # The steady phase: every client beats once a second; R changes a
        # second, the first a dwell after the connects were published.
        for u in self.changers:
            self.settled[u] = time.monotonic()
        cpu0, start, sent0 = cpu_seconds(server_pid), time.monotonic(), self.sent
        t0 = start + DWELL_S
        self.lateness.clear()
        changes = []
        for k in range(int(self.args.seconds * self.args.rate)):
            await asyncio.sleep(max(0.0, t0 + k / self.args.rate - time.monotonic()))
            now = time.monotonic()
            idle = [u for u in self.changers if u not in self.busy and now - self.settled[u] > DWELL_S]
            if not idle:
                self.skipped += 1
                continue
            changes.append(asyncio.create_task(self.change(random.choice(idle))))
        await asyncio.sleep(max(0.0, t0 + self.args.seconds - time.monotonic()))
        elapsed = time.monotonic() - start
        cpu = cpu_seconds(server_pid) - cpu0
        beats = self.sent - sent0
        await asyncio.gather(*changes)
        rss = rss_mib(server_pid)

        print(f"steady {elapsed:.1f} s: {beats / elapsed:.0f} heartbeats/s sent "
              f"(client lag p99 {rig.percentile(self.lateness, 99) * 1000:.0f} ms); "
              f"server CPU {100 * cpu / elapsed:.0f}% of a core, RSS {rss:.0f} MiB")
        for kind in ("override", "clear", "bye", "reconnect"):
            print(f"  {kind:9s} -> diff at each watcher: {rig.summary_ms(self.latency[kind])}")
        steady = [v for k in ("override", "clear", "bye", "reconnect") for v in self.latency[k]]
        print(f"  every steady change -> diff: {rig.summary_ms(steady)}"
              f"{f' ({self.skipped} changes skipped: every changer busy)' if self.skipped else ''}", flush=True)
        if os.environ.get("LOAD_TEST_DUMP"):
            print(json.dumps({k: sorted(round(x * 1000) for x in v) for k, v in self.latency.items()}))

        self.stopping = True
        if self.dropped:
            rig.fail(f"{len(self.dropped)} heartbeating client(s) were disconnected, e.g. {self.dropped[:3]}")
        if self.missed:
            rig.fail(f"{len(self.missed)} change(s) missed, e.g. {self.missed[:3]}")
        for task in list(self.heartbeats.values()):
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in self.sockets.values()), return_exceptions=True)
        for task in watchers:
            task.cancel()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main():
    rig.stop_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("server", help="the presence_server binary")
    ap.add_argument("--clients", type=int, default=10000)
    ap.add_argument("--watchers", type=int, default=4)
    ap.add_argument("--watched", type=int, default=1000, help="users the watchers subscribe to (<= 1000)")
    ap.add_argument("--seconds", type=float, default=30, help="the steady phase")
    ap.add_argument("--rate", type=float, default=10, help="changes a second in the steady phase")
    ap.add_argument("--parallel", type=int, default=200, help="handshakes at a time while connecting")
    ap.add_argument("--per-address", type=int, default=100, help="clients per source address 127.0.0.x")
    ap.add_argument("--deadline", type=float, default=15, help="seconds a change may take to reach the watchers")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    random.seed(args.seed)
    args.watched = min(args.watched, args.clients)
    rig.raise_fd_limit(args.clients + args.watchers + 1000)  # the server inherits it too

    with rig.new_workdir("presence-load-") as work:
        users = {f"load-{i:05d}": rig.token_for(f"load-{i:05d}") for i in range(args.clients)}
        watchers = [f"watcher-{w}" for w in range(args.watchers)]
        users.update({w: rig.token_for(w) for w in watchers})
        auth = os.path.join(work, "auth.txt")
        rig.write_auth(auth, users, operators=watchers)
        extra = ["--max-connections", str(args.clients + args.watchers + 100)]
        with rig.PresenceServer(args.server, work, auth, extra_args=extra, exit_after=args.seconds + 600) as server:
            print(f"presence_server pid {server.proc.pid} on port {server.port}: {args.clients} clients, "
                  f"{args.watchers} watchers of {args.watched} users, {args.seconds:.0f} s at {args.rate:g} "
                  f"changes/s", flush=True)
            try:
                asyncio.run(Run(args, server.port).main(server.proc.pid))
            except SystemExit:
                server.dump()
                raise
    print("PASS")


if __name__ == "__main__":
    main()
