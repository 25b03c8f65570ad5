"""Processes for the deploy tests: a presence_server on a free port, and a
real Prometheus scraping it. Every wait is on a condition with a deadline."""
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request


def wait_for(what, check, deadline_s=60.0, every_s=0.1):
    """Calls check() until it answers something truthy; fails after the deadline."""
    end = time.monotonic() + deadline_s
    last_error = None
    while time.monotonic() < end:
        try:
            got = check()
            if got:
                return got
        except Exception as e:  # noqa: BLE001 - kept for the failure message
            last_error = e
        time.sleep(every_s)
    raise AssertionError(f"timed out after {deadline_s} s waiting for {what}"
                         + (f" (last error: {last_error})" if last_error else ""))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """presence_server --port 0 with an auth file; its URL read from stdout."""

    def __init__(self, binary, auth_text, extra_args=(), data_dir=None):
        self.tmp = tempfile.TemporaryDirectory(prefix="presence-deploy-")
        self.data_dir = data_dir or os.path.join(self.tmp.name, "data")
        auth = os.path.join(self.tmp.name, "auth.conf")
        with open(auth, "w") as f:
            f.write(auth_text)
        self.log = open(os.path.join(self.tmp.name, "server.log"), "w+")
        self.proc = subprocess.Popen(
            [binary, "--port", "0", "--auth", auth, "--data-dir", self.data_dir,
             "--exit-after", "300", *extra_args],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"listening on (http://\S+/)", line)
        if not m:
            self.stop()
            raise AssertionError(f"presence_server did not start: {line!r}; log: {self.read_log()}")
        self.url = m.group(1)
        self.port = int(self.url.rsplit(":", 1)[1].rstrip("/"))

    def read_log(self):
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.log.close()

    def get(self, path, token=None):
        req = urllib.request.Request(self.url.rstrip("/") + path)
        if token:
            req.add_header("Authorization", "Bearer " + token)
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read().decode()


class Prometheus:
    """Debian's prometheus, with `config` (YAML text) and `files` beside it."""

    def __init__(self, config, files=None):
        self.tmp = tempfile.TemporaryDirectory(prefix="presence-prometheus-")
        for name, text in (files or {}).items():
            with open(os.path.join(self.tmp.name, name), "w") as f:
                f.write(text)
        cfg = os.path.join(self.tmp.name, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write(config)
        self.log = open(os.path.join(self.tmp.name, "prometheus.log"), "w+")
        # A free port can be taken between the check and the listen: retry.
        for _ in range(5):
            self.port = free_port()
            self.proc = subprocess.Popen(
                ["prometheus", "--config.file", cfg,
                 "--storage.tsdb.path", os.path.join(self.tmp.name, "tsdb"),
                 "--web.listen-address", f"127.0.0.1:{self.port}"],
                stdout=self.log, stderr=subprocess.STDOUT)
            try:
                wait_for("Prometheus to be ready", self._ready, deadline_s=60)
                return
            except AssertionError:
                if self.proc.poll() is None:
                    raise AssertionError(f"Prometheus never became ready; log: {self.read_log()}")
        raise AssertionError(f"Prometheus did not start; log: {self.read_log()}")

    def _ready(self):
        if self.proc.poll() is not None:
            raise AssertionError("prometheus exited")
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
            return r.status == 200

    def read_log(self):
        self.log.seek(0)
        return self.log.read()

    def api(self, path, **params):
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus answered {body}")
        return body["data"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def wait_settled(server, token, users):
    """Waits until every user is online and its last transition is over
    1.5 s old (past min_dwell, so that its next change is published at the
    next tick); returns the server's now_ms then."""
    def settled():
        answer = json.loads(server.get("/presence?user_ids=" + ",".join(users), token))
        if any(u["state"] != "online" for u in answer["users"]):
            return None
        for user in users:
            h = json.loads(server.get(f"/presence/history?user_id={user}", token))["transitions"]
            if not h or h[-1]["at_ms"] > answer["now_ms"] - 1500:
                return None
        return answer["now_ms"]
    return wait_for(f"{', '.join(users)} online and settled", settled)
