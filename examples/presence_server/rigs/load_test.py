#!/usr/bin/python3
"""A bounded load test of presence_server with an independent client.

N WebSocket clients (one user and one device each, from source addresses
127.0.0.x, --per-address each, so that no per-IP cap is shared by all)
connect on loopback and send one heartbeat a second; W watchers (operators)
subscribe to up to 1000 of the users, spread evenly. The latency from a state
change to its diff is measured at every watcher:

  * connect:   a watched client begins to connect -> it is online at the watcher
  * override:  POST /presence/override (DND) sent -> dnd
  * clear:     DELETE /presence/override?all=true sent -> online
  * bye:       {"type":"bye"} sent -> offline
  * reconnect: a new connection begun -> online

The bulk of the clients heartbeat in a child process; the watchers and the
few users that take the steady-phase changes (R a second for S seconds) are in
this one, so that the load's own event-loop lag does not land in the figures
(CLOCK_MONOTONIC is one clock for both). The engine publishes at most one
change per user per min_dwell (1 s; docs/design.md rule 7), so changes of one
user are spaced wider than that: the figures are propagation, not the dwell.

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

DWELL_S = 1.1  # a little over the engine's default min_dwell of 1 s
BEAT = json.dumps({"type": "heartbeat"})


def user_of(i):
    return f"load-{i:05d}"


async def heartbeats(ws, counts=None):
    """One heartbeat a second on `ws`, at a random phase, until it closes;
    `counts` (a Clients) adds up what was sent and how late."""
    loop = asyncio.get_running_loop()
    due = loop.time() + random.random()  # spread over the second
    while True:
        await asyncio.sleep(max(0.0, due - loop.time()))
        if counts:
            counts.lateness.append(loop.time() - due)
        await ws.send(BEAT)
        if counts:
            counts.sent += 1
        due += 1.0


class Clients:
    """Heartbeating clients in this process: client i is user load-i, from
    the i // per_address-th source address."""

    def __init__(self, uri, per_address, parallel):
        self.uri = uri
        self.per_address = per_address
        self.addresses = {}
        self.sockets = {}      # user -> its WebSocket
        self.beating = {}      # user -> its heartbeat task
        self.dropped = []      # users the server disconnected
        self.sent = 0
        self.lateness = []     # how late each heartbeat left, seconds: this process's own lag
        self.stopping = False
        self.gate = asyncio.Semaphore(parallel)

    async def connect(self, i, began=None):
        """Connects client i; `began(user)` is called right before its
        handshake starts."""
        user = user_of(i)
        async with self.gate:
            if began:
                began(user)
            source = rig.loopback_addresses(2 + i // self.per_address, 1)[0]
            ws = await rig.ws_connect(self.uri + f"?device_id={user}-d", rig.token_for(user),
                                      local_addr=source, open_timeout=60)
            await rig.recv_until(ws, lambda m: m.get("type") == "welcome", 30, f"{user}'s welcome")
        self.sockets[user] = ws
        self.beating[user] = asyncio.create_task(self._beat(user, ws))

    async def bye(self, user):
        self.beating.pop(user).cancel()
        ws = self.sockets.pop(user)
        await ws.send(json.dumps({"type": "bye"}))
        await ws.wait_closed()

    async def _beat(self, user, ws):
        try:
            await heartbeats(ws, self)
        except websockets.ConnectionClosed as e:
            if not self.stopping:
                self.dropped.append(f"{user}: {e}")

    async def close(self):
        self.stopping = True
        for task in self.beating.values():
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in self.sockets.values()), return_exceptions=True)


def bulk_process(uri, indices, watched, per_address, parallel, conn):
    """The child: connects clients `indices`, reports when each watched one
    began connecting, heartbeats until told to stop, reports its counts."""

    async def go():
        clients = Clients(uri, per_address, parallel)
        began = {}

        def note(user):
            if user in watched:
                began[user] = time.monotonic()

        t = time.monotonic()
        await asyncio.gather(*(clients.connect(i, note) for i in indices))
        conn.send(("ready", began, time.monotonic() - t))
        await rig.pipe_recv(conn, 600, "the start of the steady phase")
        clients.lateness.clear()
        sent0, t0 = clients.sent, time.monotonic()
        await rig.pipe_recv(conn, 600, "the end of the steady phase")
        conn.send(("done", (clients.sent - sent0) / (time.monotonic() - t0),
                   rig.percentile(clients.lateness, 99), clients.dropped))
        await clients.close()

    asyncio.run(go())


class Run:
    def __init__(self, args, port):
        self.args = args
        self.port = port
        self.uri = f"ws://127.0.0.1:{port}/presence/stream"
        step = max(1, -(-args.clients // args.watched))
        self.watched = [user_of(i) for i in range(0, args.clients, step)][:args.watched]
        # A few watched users take every steady-phase change, in turn.
        self.changers = self.watched[:max(8, int(4 * args.rate))]
        self.pending = {}   # user -> [kind, wanted state, t0, watchers not yet reached, done future]
        self.first_online = [dict() for _ in range(args.watchers)]  # per watcher: user -> when
        self.latency = collections.defaultdict(list)  # kind -> seconds, one per (change, watcher)
        self.missed = []
        self.stopping = False

    # -- what the watchers see -------------------------------------------
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
        if state == "online":
            self.first_online[watcher].setdefault(user, now)
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
        beating = asyncio.create_task(heartbeats(ws))  # a watcher is a client too: silent 30 s, it is dropped
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
        finally:
            beating.cancel()

    # -- the steady phase's changes --------------------------------------
    async def change(self, clients, user):
        """The next change of a changer: online -> dnd -> online -> offline
        (bye) -> online (reconnect)."""
        self.busy.add(user)
        token = rig.token_for(user)
        step = self.cycle[user] % 4
        self.cycle[user] += 1
        status, body = 200, None
        if step == 0:
            fut = self.expect(user, "override", "dnd")
            status, body = await rig.http_request("127.0.0.1", self.port, "POST", "/presence/override",
                                                  token=token, body={"state": "dnd", "duration_ms": 600000})
        elif step == 1:
            fut = self.expect(user, "clear", "online")
            status, body = await rig.http_request("127.0.0.1", self.port, "DELETE",
                                                  "/presence/override?all=true", token=token)
        elif step == 2:
            fut = self.expect(user, "bye", "offline")
            await clients.bye(user)
        else:
            futs = []
            await clients.connect(int(user[len("load-"):]),
                                  lambda u: futs.append(self.expect(u, "reconnect", "online")))
            fut = futs[0]
        if status != 200:
            rig.fail(f"change {step} of {user}: HTTP {status} {body}")
        await self.settle(user, fut)
        self.settled[user] = time.monotonic()
        self.busy.discard(user)

    async def main(self, server_pid):
        args = self.args
        loop = asyncio.get_running_loop()
        watchers = []
        for w in range(args.watchers):
            ready = loop.create_future()
            watchers.append(asyncio.create_task(self.watcher(w, ready)))
            await asyncio.wait_for(asyncio.shield(ready), 30)

        # The bulk connects in the child while the changers connect here.
        changer_set = set(self.changers)
        bulk = [i for i in range(args.clients) if user_of(i) not in changer_set]
        with rig.child_process(bulk_process, self.uri, bulk, set(self.watched) - changer_set,
                               args.per_address, args.parallel) as conn:
            await self.run(conn, server_pid, watchers)

    async def run(self, conn, server_pid, watchers):
        args = self.args
        clients = Clients(self.uri, args.per_address, args.parallel)
        futs = []
        await asyncio.gather(*(clients.connect(int(u[len("load-"):]),
                                               lambda u: futs.append((u, self.expect(u, "connect", "online"))))
                               for u in self.changers))
        _, began, ramp = await rig.pipe_recv(conn, 600, "the bulk's connections")
        await asyncio.gather(*(self.settle(u, f) for u, f in futs))
        deadline = time.monotonic() + args.deadline
        for w in range(args.watchers):
            while not all(u in self.first_online[w] for u in began):
                if time.monotonic() > deadline:
                    left = [u for u in began if u not in self.first_online[w]]
                    rig.fail(f"{len(left)} connect(s) never reached watcher {w}, e.g. {left[:3]}")
                await asyncio.sleep(0.02)  # a poll of the condition above
            self.latency["connect"] += [self.first_online[w][u] - t for u, t in began.items()]
        print(f"connected {args.clients} clients in {ramp:.1f} s ({args.clients / ramp:.0f}/s, "
              f"{args.parallel} handshakes at a time); connect -> online at {args.watchers} watchers: "
              f"{rig.summary_ms(self.latency['connect'])}", flush=True)

        # The steady phase: every client beats once a second; R changes a
        # second, the first a dwell after the connects were published.
        self.cycle = collections.Counter()
        self.busy = set()
        self.settled = {u: time.monotonic() for u in self.changers}
        skipped = 0
        conn.send("start")
        cpu0, start = cpu_seconds(server_pid), time.monotonic()
        t0 = start + DWELL_S
        changes = []
        for k in range(int(args.seconds * args.rate)):
            await asyncio.sleep(max(0.0, t0 + k / args.rate - time.monotonic()))
            now = time.monotonic()
            idle = [u for u in self.changers if u not in self.busy and now - self.settled[u] > DWELL_S]
            if not idle:
                skipped += 1
                continue
            changes.append(asyncio.create_task(self.change(clients, random.choice(idle))))
        await asyncio.sleep(max(0.0, t0 + args.seconds - time.monotonic()))
        conn.send("stop")
        elapsed = time.monotonic() - start
        cpu = cpu_seconds(server_pid) - cpu0
        rss = rss_mib(server_pid)
        _, beats_per_s, bulk_lag, dropped = await rig.pipe_recv(conn, 60, "the bulk's counts")
        await asyncio.gather(*changes)

        print(f"steady {elapsed:.1f} s: {beats_per_s:.0f} heartbeats/s from the bulk (its own lag p99 "
              f"{bulk_lag * 1000:.0f} ms; here {rig.percentile(clients.lateness, 99) * 1000:.0f} ms); "
              f"server CPU {100 * cpu / elapsed:.0f}% of a core, RSS {rss:.0f} MiB")
        for kind in ("override", "clear", "bye", "reconnect"):
            print(f"  {kind:9s} -> diff at each watcher: {rig.summary_ms(self.latency[kind])}")
        steady = [v for k in ("override", "clear", "bye", "reconnect") for v in self.latency[k]]
        print(f"  every steady change -> diff: {rig.summary_ms(steady)}"
              f"{f' ({skipped} changes skipped: every changer busy)' if skipped else ''}", flush=True)

        self.stopping = True
        dropped += clients.dropped
        if dropped:
            rig.fail(f"{len(dropped)} heartbeating client(s) were disconnected, e.g. {dropped[:3]}")
        if self.missed:
            rig.fail(f"{len(self.missed)} change(s) missed, e.g. {self.missed[:3]}")
        await clients.close()
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
    rig.raise_fd_limit(args.clients + args.watchers + 1000)  # the child inherits it

    with rig.new_workdir("presence-load-") as work:
        users = {user_of(i): rig.token_for(user_of(i)) for i in range(args.clients)}
        watchers = [f"watcher-{w}" for w in range(args.watchers)]
        users.update({w: rig.token_for(w) for w in watchers})
        auth = os.path.join(work, "auth.txt")
        rig.write_auth(auth, users, operators=watchers)
        extra = ["--max-connections", str(args.clients + args.watchers + 100)]
        with rig.PresenceServer(args.server, work, auth, extra_args=extra, exit_after=args.seconds + 600) as server:
            print(f"presence_server pid {server.proc.pid} on port {server.port}: {args.clients} clients, "
                  f"{args.watchers} watchers of {args.watched} users, {args.seconds:.0f} s at {args.rate:g} "
                  f"changes/s", flush=True)
            rig.run_checks(Run(args, server.port).main(server.proc.pid), server)
    print("PASS")


if __name__ == "__main__":
    main()
