"""Shared parts of the example server's test rigs (issue 19): the nginx front
(nginx_test.py), the load test (load_test.py) and the slowloris test
(slowloris_test.py).

The rigs are independent clients: Python's standard library and the
`websockets` package (Debian's python3-websockets, run by /usr/bin/python3),
nothing of the server's code. Every wait has a deadline; nothing sleeps to
synchronise. Every process a rig starts dies with it: it is stopped on every
exit path, and the kernel kills it (PR_SET_PDEATHSIG) should the rig itself be
killed.
"""

import asyncio
import contextlib
import ctypes
import json
import multiprocessing
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import websockets

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent():
    """preexec_fn for a child: the kernel sends it SIGKILL when the rig dies."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def stop_on_sigterm():
    """Turns SIGTERM (ctest's timeout, a CI cancel) into SystemExit, so that
    the rig's `finally` blocks stop what it started."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def raise_fd_limit(wanted):
    """Raises this process's soft RLIMIT_NOFILE to `wanted` (each client holds
    one socket); fails clearly when the hard limit is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:  # root (CAP_SYS_RESOURCE, as in CI) may raise the hard limit too
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return
        except (ValueError, OSError):
            fail(f"the hard fd limit is {hard}; this run needs {wanted} (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def free_port(host="127.0.0.1"):
    """A port free on `host` right now (for programs that cannot take port 0
    and print what they got, like nginx)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def loopback_addresses(first, count):
    """`count` source addresses 127.0.x.y counting up from 127.0.0.`first`
    (Linux routes all of 127.0.0.0/8 to lo), for clients that must not share
    one per-IP limit."""
    out = []
    n = first
    while len(out) < count:
        out.append(f"127.0.{n // 256}.{n % 256}")
        n += 1
        if n % 256 in (0, 255):
            n += 1
    return out


def percentile(values, p):
    """The p-th percentile (nearest rank) of `values`, or None when empty."""
    if not values:
        return None
    s = sorted(values)
    rank = max(1, -(-len(s) * p // 100))  # ceil(len * p / 100)
    return s[int(rank) - 1]


def summary_ms(values):
    """'n=.. p50=.. p99=.. max=.. ms' of latencies in seconds."""
    if not values:
        return "n=0"
    f = lambda v: f"{v * 1000:.1f}"
    return (f"n={len(values)} p50={f(percentile(values, 50))} p99={f(percentile(values, 99))} "
            f"max={f(max(values))} ms")


def socket_count(pid):
    """How many sockets process `pid` holds (from /proc: the server's own view
    of how many connections it has accepted)."""
    n = 0
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(f"{fd_dir}/{fd}").startswith("socket:"):
                n += 1
        except OSError:
            pass  # closed while listing
    return n


def write_auth(path, users, friends=None, operators=(), topics=None):
    """Writes a presence_server --auth file. `users`: {user_id: token};
    `friends`: {user_id: [users it may watch]}; `operators`: user ids that
    may read everyone; `topics`: {topic: [users]}."""
    friends = friends or {}
    with open(path, "w") as f:
        for user, token in users.items():
            f.write(" ".join(["user", user, token, *friends.get(user, [])]) + "\n")
        for topic, members in (topics or {}).items():
            f.write(f"topic {topic} {' '.join(members)}\n")
        for user in operators:
            f.write(f"operator {user}\n")


def token_for(user):
    """A token for a test user: unique, and longer than the server's minimum
    of 16 bytes."""
    return f"tok-{user}-0123456789abcdef"


class Process:
    """A child process whose stdout is collected line by line, stopped on
    every exit path (a context manager) and killed with the rig."""

    def __init__(self, argv, name, stdin=subprocess.DEVNULL, rlimit_nofile=None, cwd=None):
        def preexec():
            die_with_parent()
            if rlimit_nofile is not None:
                _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
                resource.setrlimit(resource.RLIMIT_NOFILE, (rlimit_nofile, hard))

        self.name = name
        self.lines = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     preexec_fn=preexec, cwd=cwd, text=True, errors="replace")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for_line(self, pattern, timeout):
        """The first match of regex `pattern` in the output; fails (with the
        output) when the process exits or `timeout` passes first."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    m = rx.search(line)
                    if m:
                        return m
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if self.proc.poll() is not None and not self._reader.is_alive():
                    self.dump()
                    fail(f"{self.name} exited with {self.proc.returncode} before printing /{pattern}/")
                if left <= 0:
                    self.dump()
                    fail(f"{self.name} printed no /{pattern}/ within {timeout} s")
                self._cond.wait(min(left, 0.5))

    def alive(self):
        return self.proc.poll() is None

    def dump(self):
        with self._cond:
            text = "\n".join(self.lines[-60:])
        print(f"---- {self.name} output (last lines) ----\n{text}\n----", file=sys.stderr, flush=True)

    def stop(self, timeout=10):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(2)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class PresenceServer(Process):
    """presence_server on a free loopback port (--port 0; the port is read
    from its "listening on" line), with its file store in `workdir`. It stops
    by itself after `exit_after` seconds should everything else fail."""

    def __init__(self, binary, workdir, auth_file, extra_args=(), exit_after=300, rlimit_nofile=None):
        argv = [binary, "--bind", "127.0.0.1", "--port", "0", "--data-dir", os.path.join(workdir, "data"),
                "--auth", auth_file, "--exit-after", str(exit_after), *extra_args]
        super().__init__(argv, "presence_server", rlimit_nofile=rlimit_nofile)
        m = self.wait_for_line(r"listening on http://([0-9.]+):([0-9]+)/", 30)
        self.host, self.port = m.group(1), int(m.group(2))


@contextlib.contextmanager
def child_process(target, *args):
    """Runs target(*args, conn) in a spawned Python process that dies with
    this one; yields this end of the pipe `conn` is the other end of. The
    load a rig makes runs there, so that its event loop's lag does not land
    in what the rig measures here (CLOCK_MONOTONIC is one clock for both)."""
    ctx = multiprocessing.get_context("spawn")
    here, there = ctx.Pipe()
    child = ctx.Process(target=_child_main, args=(target, args, there), daemon=True)
    child.start()
    there.close()  # so that a dead child reads as EOF here
    try:
        yield here
    finally:
        child.terminate()
        child.join(10)


def _child_main(target, args, conn):
    die_with_parent()
    target(*args, conn)


async def pipe_recv(conn, timeout, what):
    """The next object from a multiprocessing pipe, without blocking the
    event loop; fails naming `what` after `timeout` s or when the other
    process is gone."""
    try:
        return await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, conn.recv), timeout)
    except asyncio.TimeoutError:
        fail(f"{what}: not within {timeout} s")
    except EOFError:
        fail(f"{what}: the other process is gone")


def run_checks(coroutine, *processes):
    """Runs the rig's asyncio part; when it fails in any way, prints the
    last output of `processes` (the server, nginx) before failing."""
    try:
        asyncio.run(coroutine)
    except BaseException as e:
        for p in processes:
            p.dump()
        if isinstance(e, (SystemExit, KeyboardInterrupt)):
            raise
        fail(f"{type(e).__name__}: {e}")


def new_workdir(prefix):
    return tempfile.TemporaryDirectory(prefix=prefix)


async def ws_connect(uri, token, ssl_context=None, local_addr=None, origin=None, open_timeout=10,
                     auth_message=False):
    """A WebSocket to presence_server's stream, authenticated the way a
    non-browser client does (Authorization: Bearer) or, with `auth_message`,
    the way the page does (a first message {"type":"auth","token":...}). No
    library pings: only the client's own heartbeats keep it alive, as the
    server's idle rule wants."""
    kwargs = {}
    if local_addr is not None:
        kwargs["local_addr"] = (local_addr, 0)
    headers = {} if auth_message else {"Authorization": f"Bearer {token}"}
    ws = await websockets.connect(
        uri, extra_headers=headers, ssl=ssl_context, origin=origin,
        open_timeout=open_timeout, ping_interval=None, close_timeout=2, max_size=1 << 24,
        compression=None, **kwargs)
    if auth_message:
        await ws.send(json.dumps({"type": "auth", "token": token}))
    return ws


async def recv_json(ws, timeout):
    """The next message as JSON; asyncio.TimeoutError after `timeout` s."""
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_until(ws, predicate, timeout, what):
    """Reads messages until `predicate(message)`; returns that message. Fails
    naming `what` when `timeout` seconds pass first or the socket closes."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            fail(f"{what}: not within {timeout} s")
        try:
            msg = await recv_json(ws, left)
        except asyncio.TimeoutError:
            fail(f"{what}: not within {timeout} s")
        except websockets.ConnectionClosed as e:
            fail(f"{what}: the connection closed ({e})")
        if msg.get("type") == "error":
            fail(f"{what}: the server answered {msg}")
        if predicate(msg):
            return msg


async def welcome_and_snapshot(ws, users, timeout, request_id=1):
    """Waits for the welcome, subscribes to `users`, and returns the
    snapshot."""
    await recv_until(ws, lambda m: m.get("type") == "welcome", timeout, "the welcome")
    await ws.send(json.dumps({"type": "subscribe", "id": request_id, "users": list(users)}))
    return await recv_until(ws, lambda m: m.get("type") == "snapshot", timeout, "the snapshot")


async def http_request(host, port, method, path, token=None, body=None, ssl_context=None,
                       server_hostname=None, timeout=10):
    """One HTTP/1.1 request on its own connection: (status, parsed JSON or
    text). A small client of its own, so that no server code checks itself."""
    async def go():
        reader, writer = await asyncio.open_connection(host, port, ssl=ssl_context,
                                                       server_hostname=server_hostname if ssl_context else None)
        try:
            data = b"" if body is None else json.dumps(body).encode()
            head = [f"{method} {path} HTTP/1.1", f"Host: {server_hostname or host}:{port}",
                    "Connection: close", f"Content-Length: {len(data)}"]
            if token:
                head.append(f"Authorization: Bearer {token}")
            if body is not None:
                head.append("Content-Type: application/json")
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
        header, _, payload = raw.partition(b"\r\n\r\n")
        status = int(header.split(b" ", 2)[1])
        if b"transfer-encoding: chunked" in header.lower():
            payload = _dechunk(payload)
        text = payload.decode(errors="replace")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    return await asyncio.wait_for(go(), timeout)


def _dechunk(payload):
    out = b""
    while payload:
        size_line, _, rest = payload.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        payload = rest[size + 2:]
    return out
