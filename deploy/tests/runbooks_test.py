#!/usr/bin/env python3
"""Runs the sh blocks of docs/runbooks.md as they are written, block by
block, against a running presence_server (and a file store folder it
wrote), and checks what each prints and what the server answers after.
A runbook with a block more or less than this test knows fails it: every
step is exercised.

usage: runbooks_test.py BIN_DIR   (where presencectl, presence_server and
presence_inspect are: build/examples/presence_server)"""
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Server, wait_for, wait_settled  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN_DIR = None
OPS = "tok-ops-0123456789"
AUTH = "user ops tok-ops-0123456789\noperator ops\nuser alice tok-alice-0123456789 bob\nuser bob tok-bob-0123456789 alice\n"
SIMS = ["sim-0001", "sim-0002", "sim-0003"]


def runbook_blocks():
    """Section title -> its sh blocks, in order (list-item indentation removed)."""
    with open(os.path.join(ROOT, "docs", "runbooks.md")) as f:
        text = f.read()
    sections = {}
    for part in re.split(r"^## ", text, flags=re.M)[1:]:
        title, body = part.split("\n", 1)
        blocks = []
        for m in re.finditer(r"^( *)```sh\n(.*?)^\1```", body, re.M | re.S):
            indent = len(m.group(1))
            blocks.append("\n".join(line[indent:] for line in m.group(2).splitlines()))
        sections[title.strip()] = blocks
    return sections


BLOCKS = runbook_blocks()


def run_block(block, **env_vars):
    env = dict(os.environ)
    env["PATH"] = BIN_DIR + os.pathsep + env["PATH"]
    env.update({k: str(v) for k, v in env_vars.items()})
    return subprocess.run(["bash", "-euo", "pipefail", "-c", block], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env, timeout=120)


class ServerRunbooks(unittest.TestCase):
    server = None

    @classmethod
    def setUpClass(cls):
        cls.server = Server(os.path.join(BIN_DIR, "presence_server"), AUTH, ["--simulate", str(len(SIMS))])

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def run_ok(self, block, **env_vars):
        r = run_block(block, PRESENCE_SERVER=self.server.url.rstrip("/"), PRESENCE_TOKEN=OPS, **env_vars)
        self.assertEqual(r.returncode, 0, f"{block}\n--- stderr:\n{r.stderr}")
        return r.stdout

    def http(self, method, path, token, body=None):
        import urllib.request
        req = urllib.request.Request(self.server.url.rstrip("/") + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
        req.add_header("Authorization", "Bearer " + token)
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read().decode())

    def test_draining_a_gateway(self):
        drain, check = BLOCKS["Draining a gateway"]
        before = wait_settled(self.server, OPS, SIMS)
        out = self.run_ok(drain, GATEWAY="simulator")
        m = re.fullmatch(r"drained (\d+) device\(s\) of gateway simulator\n", out)
        self.assertTrue(m and int(m.group(1)) >= 1, out)

        def offline_by_disconnect():
            out = self.run_ok(check, GATEWAY="simulator", USER_ID="sim-0001")
            history = json.loads(self.server.get("/presence/history?user_id=sim-0001", OPS))["transitions"]
            drained = [t for t in history if t["at_ms"] >= before and t["state"] == "offline"
                       and t["cause"] == "disconnect"]
            metric = re.search(r'^presence_transitions_total\{cause="disconnect"\} (\d+)$', out, re.M)
            return drained and "-> offline" in out and "cause disconnect" in out and metric \
                and int(metric.group(1)) >= 1
        wait_for("sim-0001 offline by the drain, in the runbook's output", offline_by_disconnect,
                 deadline_s=30)

    def test_revoking_faulty_overrides(self):
        get, revoke_user, revoke_between = BLOCKS["Revoking faulty overrides"]
        for state in ("dnd", "away"):
            self.http("POST", "/presence/override", "tok-alice-0123456789", {"state": state})
        self.assertTrue(self.run_ok(get, USER_ID="alice").startswith("alice\t"))
        self.assertEqual(self.run_ok(revoke_user, USER_ID="alice"), "revoked 2 override(s) of alice\n")
        alice = self.http("GET", "/presence?user_ids=alice", "tok-alice-0123456789")["users"][0]
        self.assertEqual(alice["overrides"], [])

        # bob: one override inside [T1, T2], one set after T2.
        first = self.http("POST", "/presence/override", "tok-bob-0123456789", {"state": "dnd"})
        listed = self.http("GET", "/presence?user_ids=bob", "tok-bob-0123456789")["users"][0]["overrides"]
        set_at = [o["set_at_ms"] for o in listed if o["override_id"] == first["override_id"]][0]
        wait_for("the server's clock past the first override",
                 lambda: self.http("GET", "/presence?user_ids=bob", "tok-bob-0123456789")["now_ms"] > set_at)
        second = self.http("POST", "/presence/override", "tok-bob-0123456789", {"state": "away"})
        t1 = subprocess.run(["date", "-u", "-d", f"@{(set_at - 1000) // 1000}", "+%Y-%m-%dT%H:%M:%SZ"],
                            stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
        out = self.run_ok(revoke_between, T1=t1, T2=set_at)
        self.assertTrue(out.startswith("revoked 1 override(s) set between "), out)
        left = self.http("GET", "/presence?user_ids=bob", "tok-bob-0123456789")["users"][0]["overrides"]
        self.assertEqual([o["override_id"] for o in left], [second["override_id"]])

    def test_erasing_a_user(self):
        erase, check = BLOCKS["Erasing a user"]
        wait_for("sim-0002's history", lambda: json.loads(
            self.server.get("/presence/history?user_id=sim-0002", OPS))["transitions"])
        before = json.loads(self.server.get("/presence?user_ids=sim-0002", OPS))["now_ms"]
        self.assertEqual(self.run_ok(erase, USER_ID="sim-0002"), "erased sim-0002\n")
        history = json.loads(self.run_ok(check, USER_ID="sim-0002"))["transitions"]
        self.assertEqual([t for t in history if t["at_ms"] <= before], [])


class FileStoreRunbook(unittest.TestCase):
    def test_recovering_a_damaged_file_store_folder(self):
        backup, inspect, recover, check = BLOCKS["Recovering a damaged file store folder"]
        with tempfile.TemporaryDirectory() as tmp:
            data = os.path.join(tmp, "data")
            auth = os.path.join(tmp, "auth.conf")
            with open(auth, "w") as f:
                f.write(AUTH)
            subprocess.run([os.path.join(BIN_DIR, "presence_server"), "--port", "0", "--auth", auth,
                            "--simulate", "2", "--data-dir", data, "--exit-after", "2"],
                           stdout=subprocess.DEVNULL, check=True, timeout=60)
            segment = os.path.join(data, "segment-000001.log")
            size = os.path.getsize(segment)
            with open(segment, "r+b") as f:  # one flipped byte in the middle of the log
                f.seek(size // 2)
                b = f.read(1)
                f.seek(size // 2)
                f.write(bytes([b[0] ^ 0xFF]))
            with open(segment, "rb") as f:
                damaged = f.read()
            env = {"DATA_DIR": data, "AUTH_FILE": auth}

            r = run_block(backup, **env)
            self.assertEqual(r.returncode, 0, r.stderr)
            copies = [d for d in os.listdir(tmp) if d.startswith("data.damaged-")]
            self.assertEqual(len(copies), 1, os.listdir(tmp))
            with open(os.path.join(tmp, copies[0], "segment-000001.log"), "rb") as f:
                self.assertEqual(f.read(), damaged)

            r = run_block(inspect, **env)
            self.assertEqual(r.returncode, 0, r.stderr)  # exit 3, accepted by the block
            self.assertIn("checksums DAMAGED", r.stdout)
            self.assertIn("corrupt frames 1", r.stdout)
            self.assertIn("problem ", r.stdout)

            r = run_block(recover, **env)
            self.assertEqual(r.returncode, 0, r.stderr)

            r = run_block(check, **env)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("checksums ok", r.stdout)
            self.assertIn("corrupt frames 0", r.stdout)
            self.assertLess(os.path.getsize(segment), size)  # cut at the damaged frame


class EveryStepIsRun(unittest.TestCase):
    def test_the_runbooks_have_the_blocks_this_test_runs(self):
        self.assertEqual({t: len(b) for t, b in BLOCKS.items()}, {
            "Draining a gateway": 2,
            "Revoking faulty overrides": 3,
            "Erasing a user": 2,
            "Recovering a damaged file store folder": 4,
            # Engine calls, run by adapters/kafka/tests/kafka_runbook_test.cc.
            "Replaying Kafka for a rebuild": 0,
            "Moving partitions between engines": 0,
        })


if __name__ == "__main__":
    BIN_DIR = os.path.abspath(sys.argv[1])
    unittest.main(argv=[sys.argv[0], "-v"])
