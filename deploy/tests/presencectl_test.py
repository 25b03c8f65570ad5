#!/usr/bin/env python3
"""presencectl, command by command, against a running presence_server (and
inspect against file store folders the server wrote). Each test runs the
real CLI as an operator would, and checks what it prints, its exit status,
and what the server then answers over its own HTTP API.

usage: presencectl_test.py PRESENCECTL PRESENCE_SERVER_BINARY"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Server, free_port, wait_for, wait_settled  # noqa: E402

CTL = SERVER_BIN = None
TOKENS = {"ops": "tok-ops-0123456789", "alice": "tok-alice-0123456789", "bob": "tok-bob-0123456789"}
AUTH = """user ops tok-ops-0123456789
operator ops
user alice tok-alice-0123456789 bob
user bob tok-bob-0123456789 alice
"""
SIMS = ["sim-0001", "sim-0002", "sim-0003"]


def ctl(*args, token=TOKENS["ops"], server=None):
    env = dict(os.environ)
    env.pop("PRESENCE_TOKEN", None)
    if token:
        env["PRESENCE_TOKEN"] = token
    if server or PresencectlTest.server:
        env["PRESENCE_SERVER"] = server or PresencectlTest.server.url
    return subprocess.run([CTL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env, timeout=60)


def http(method, path, token, body=None):
    """The server's own API, as a user (not through presencectl)."""
    req = urllib.request.Request(PresencectlTest.server.url.rstrip("/") + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read().decode())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode())


def states(users):
    """user -> state, through presencectl get."""
    r = ctl("get", *users)
    if r.returncode != 0:
        raise AssertionError(r.stderr)
    return {line.split("\t")[0]: line.split("\t")[1] for line in r.stdout.splitlines()}


def own_overrides(user):
    status, body = http("GET", f"/presence?user_ids={user}", TOKENS[user])
    assert status == 200, body
    return body["users"][0]["overrides"], body["now_ms"]


class PresencectlTest(unittest.TestCase):
    server = None

    @classmethod
    def setUpClass(cls):
        cls.server = Server(SERVER_BIN, AUTH, ["--simulate", str(len(SIMS))])

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def assertRefused(self, r, code):
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(code, r.stderr)

    def test_help_and_usage_errors(self):
        r = ctl("--help")
        self.assertEqual(r.returncode, 0)
        for command in ["get U", "history U", "overrides revoke --user U", "--set-between T1 T2",
                        "drain GATEWAY", "rebuild", "erase U", "inspect DATA_DIR", "exit status"]:
            self.assertIn(command, r.stdout)
        self.assertEqual(ctl().returncode, 2)                       # no command
        self.assertEqual(ctl("overrides").returncode, 2)            # no action
        self.assertEqual(ctl("overrides", "revoke").returncode, 2)  # neither --user nor --set-between
        r = ctl("history", "sim-0001", "--since", "5 years")
        self.assertEqual(r.returncode, 2)
        self.assertIn("not a duration", r.stderr)
        r = ctl("overrides", "revoke", "--set-between", "yesterday", "now")
        self.assertEqual(r.returncode, 2)
        self.assertIn("not a time", r.stderr)
        r = ctl("overrides", "revoke", "--set-between", "2000", "1000")
        self.assertEqual(r.returncode, 2)
        self.assertIn("T1 is after T2", r.stderr)

    def test_tokens_and_reachability(self):
        self.assertRefused(ctl("drain", "simulator", token=TOKENS["alice"]), "forbidden")
        self.assertRefused(ctl("rebuild", token="no-such-token"), "unauthorized")
        r = ctl("rebuild", token=None)
        self.assertEqual(r.returncode, 2)
        self.assertIn("token is needed", r.stderr)
        r = ctl("get", "alice", server=f"http://127.0.0.1:{free_port()}")
        self.assertEqual(r.returncode, 4)
        self.assertIn("cannot reach", r.stderr)
        # The operator API takes the token as a bearer only, never in the URL.
        req = urllib.request.Request(self.server.url + "operator/rebuild?token=tok-ops-0123456789", method="POST", data=b"")
        with self.assertRaises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        self.assertEqual(e.exception.code, 401)

    def test_get(self):
        wait_for("the simulated users online", lambda: set(states(SIMS).values()) == {"online"})
        r = ctl("get", "sim-0001", "alice")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertTrue(lines[0].startswith("sim-0001\tonline\tlast_seen "), lines)
        self.assertIn("devices web:1", lines[0])
        r = ctl("--json", "get", "sim-0001")
        self.assertEqual(json.loads(r.stdout)["users"][0]["state"], "online")
        self.assertRefused(ctl("get", "nobody"), "unknown_user")

    def test_history(self):
        def online_transition():
            r = ctl("history", "sim-0001", "--since", "1h")
            return r.returncode == 0 and "offline -> online" in r.stdout and r.stdout
        out = wait_for("sim-0001's transition online", online_transition)
        self.assertIn("cause signal", out)  # an operator reads the full trail
        self.assertTrue(out.startswith("sim-0001: "), out)
        self.assertIn("0 transition(s)", ctl("history", "alice", "--since", "90s").stdout)
        self.assertRefused(ctl("history", "nobody"), "unknown_user")

    def test_overrides_revoke_user(self):
        for state in ("dnd", "away"):
            status, body = http("POST", "/presence/override", TOKENS["alice"], {"state": state})
            self.assertEqual(status, 200, body)
        self.assertEqual(len(own_overrides("alice")[0]), 2)
        r = ctl("overrides", "revoke", "--user", "alice")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "revoked 2 override(s) of alice")
        self.assertEqual(own_overrides("alice")[0], [])
        self.assertEqual(ctl("overrides", "revoke", "--user", "alice").stdout.strip(),
                         "revoked 0 override(s) of alice")
        self.assertRefused(ctl("overrides", "revoke", "--user", "nobody"), "unknown_user")

    def test_overrides_revoke_set_between(self):
        _, before = own_overrides("bob")
        status, body = http("POST", "/presence/override", TOKENS["bob"], {"state": "dnd"})
        self.assertEqual(status, 200, body)
        listed, after = own_overrides("bob")
        self.assertEqual(len(listed), 1)
        set_at = listed[0]["set_at_ms"]
        self.assertTrue(before <= set_at <= after)
        # A window that ends before it was set leaves it.
        r = ctl("overrides", "revoke", "--set-between", "0", str(set_at - 1))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.startswith("revoked 0 override(s)"), r.stdout)
        self.assertEqual(len(own_overrides("bob")[0]), 1)
        # One around it (its start as ISO 8601) revokes it.
        start_iso = subprocess.run(
            [sys.executable, "-c", "import datetime,sys;print(datetime.datetime.fromtimestamp("
             "int(sys.argv[1])/1000,datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'))", str(set_at)],
            stdout=subprocess.PIPE, text=True).stdout.strip()
        r = ctl("overrides", "revoke", "--set-between", start_iso, str(after))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.startswith("revoked 1 override(s)"), r.stdout)
        self.assertEqual(own_overrides("bob")[0], [])

    def test_rebuild(self):
        status, body = http("POST", "/presence/override", TOKENS["alice"],
                            {"state": "invisible", "duration_ms": 3600000})
        self.assertEqual(status, 200, body)
        r = ctl("rebuild")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"^rebuilt: \d+ user\(s\), \d+ device record\(s\) loaded")
        # alice and the simulated users, each with a record in the store.
        self.assertGreaterEqual(int(r.stdout.split()[1]), 1 + len(SIMS), r.stdout)
        # The override came back from the store.
        listed, _ = own_overrides("alice")
        self.assertIn(body["override_id"], [o["override_id"] for o in listed])
        ctl("overrides", "revoke", "--user", "alice")

    def test_drain(self):
        self.assertRefused(ctl("drain", "no-such-gateway"), "unknown_gateway")

        before = wait_settled(self.server, TOKENS["ops"], SIMS)
        r = ctl("drain", "simulator")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"^drained \d+ device\(s\) of gateway simulator$")
        drained = int(r.stdout.split()[1])
        self.assertGreaterEqual(drained, 1, r.stdout)

        # Each drained device was disconnected cleanly: its user went offline
        # (cause disconnect) after the drain. The simulated clients reconnect
        # at once, as real clients of a drained gateway would (elsewhere).
        def disconnected():
            n = 0
            for user in SIMS:
                h = json.loads(ctl("--json", "history", user).stdout)["transitions"]
                n += any(t["at_ms"] >= before and t["state"] == "offline" and t["cause"] == "disconnect"
                         for t in h)
            return n >= drained
        wait_for("the drained users published offline", disconnected, deadline_s=30)

    def test_erase(self):
        r = ctl("erase", "sim-0002")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--yes", r.stderr)
        wait_for("sim-0002's history", lambda: "offline -> online" in ctl("history", "sim-0002").stdout)
        _, before = own_overrides("ops")
        r = ctl("erase", "sim-0002", "--yes")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "erased sim-0002")
        # Nothing of it from before the erase is left (a simulated client may
        # start anew afterwards).
        r = ctl("--json", "history", "sim-0002")
        old = [t for t in json.loads(r.stdout)["transitions"] if t["at_ms"] <= before]
        self.assertEqual(old, [])


def folder_digest(path):
    h = {}
    for name in sorted(os.listdir(path)):
        with open(os.path.join(path, name), "rb") as f:
            h[name] = hashlib.sha256(f.read()).hexdigest()
    return h


class InspectTest(unittest.TestCase):
    def test_inspect(self):
        with tempfile.TemporaryDirectory() as tmp:
            data = os.path.join(tmp, "data")
            auth = os.path.join(tmp, "auth")
            with open(auth, "w") as f:
                f.write(AUTH)
            subprocess.run([SERVER_BIN, "--port", "0", "--auth", auth, "--simulate", "2", "--data-dir", data,
                            "--exit-after", "2"], stdout=subprocess.DEVNULL, check=True, timeout=60)
            r = ctl("inspect", data, token=None)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("checksums ok", r.stdout)
            self.assertIn("users 2", r.stdout)
            self.assertIn("device sim-0001/web-1 platform web", r.stdout)
            self.assertIn("transition sim-0001 at_ms", r.stdout)
            # A flipped byte in the log: reported, and the folder untouched.
            segment = os.path.join(data, "segment-000001.log")
            size = os.path.getsize(segment)
            with open(segment, "r+b") as f:
                f.seek(size // 2)
                b = f.read(1)
                f.seek(size // 2)
                f.write(bytes([b[0] ^ 0xFF]))
            digest = folder_digest(data)
            r = ctl("inspect", data, token=None)
            self.assertEqual(r.returncode, 3, r.stderr)
            self.assertIn("checksums DAMAGED", r.stdout)
            self.assertIn("corrupt frames 1", r.stdout)
            self.assertIn("problem ", r.stdout)
            self.assertEqual(folder_digest(data), digest)
            r = ctl("inspect", os.path.join(tmp, "missing"), token=None)
            self.assertEqual(r.returncode, 2)
            self.assertIn("no such folder", r.stderr)


if __name__ == "__main__":
    CTL, SERVER_BIN = sys.argv[1], sys.argv[2]
    unittest.main(argv=[sys.argv[0], "-v"])
