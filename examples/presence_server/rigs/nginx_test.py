#!/usr/bin/python3
"""The nginx front (deploy/nginx/presence.conf), tested with a real nginx.

Generates a self-signed certificate with openssl, starts presence_server on a
loopback port and Debian's nginx (not a daemon; its own prefix, pid and logs
in a temporary folder; a free loopback port) with the deploy config filled
in, then checks over https and wss, trusting only that certificate:
GET /presence answers, a request without a token is refused, /metrics is not
served to the internet, a WebSocket from another origin is refused, and a
WebSocket client gets its snapshot and then the diffs of a friend going online
(authenticated as the page does it, by its first message) and offline.

  nginx_test.py PRESENCE_SERVER [--nginx /usr/sbin/nginx]
"""

import argparse
import json
import os
import shutil
import ssl
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rig  # noqa: E402
import websockets  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
TEMPLATE = os.path.join(ROOT, "deploy", "nginx", "presence.conf")


def make_certificate(folder):
    cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return cert, key


def render_template(values):
    with open(TEMPLATE) as f:
        text = f.read()
    for name, value in values.items():
        text = text.replace(f"@{name}@", value)
    if "@" in "".join(line.split("#")[0] for line in text.splitlines()):
        rig.fail(f"{TEMPLATE}: a placeholder is left unfilled")
    return text


def write_nginx_conf(prefix, site_conf):
    """The few lines a system nginx.conf has around conf.d/*.conf, with every
    path (pid, logs, temporary files) in `prefix`."""
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(os.path.join(prefix, "tmp", d), exist_ok=True)
    site = os.path.join(prefix, "presence.conf")
    with open(site, "w") as f:
        f.write(site_conf)
    conf = os.path.join(prefix, "nginx.conf")
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers read the temp folders below
    with open(conf, "w") as f:
        f.write(f"""{user}daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log stderr notice;
events {{ worker_connections 512; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    include {site};
}}
""")
    return conf


async def check_through_nginx(port, cafile, tokens):
    tls = ssl.create_default_context(cafile=cafile)  # verifies the chain and the name
    host = "localhost"
    base = dict(ssl_context=tls, server_hostname=host)

    status, body = await rig.http_request("127.0.0.1", port, "GET", "/presence?user_ids=alice,bob",
                                          token=tokens["alice"], **base)
    if status != 200 or [u["user_id"] for u in body["users"]] != ["alice", "bob"]:
        rig.fail(f"GET /presence over https: {status} {body}")
    status, body = await rig.http_request("127.0.0.1", port, "GET", "/presence?user_ids=bob", **base)
    if status != 401 or body.get("error") != "unauthorized":
        rig.fail(f"GET /presence without a token over https: want 401 unauthorized, got {status} {body}")
    status, body = await rig.http_request("127.0.0.1", port, "GET", "/metrics", token=tokens["alice"], **base)
    if status != 404:
        rig.fail(f"GET /metrics through nginx: want 404 (operators only, never proxied), got {status}")
    status, body = await rig.http_request("127.0.0.1", port, "GET", "/", **base)
    if status != 200 or "<html" not in str(body).lower():
        rig.fail(f"GET / (the page) over https: {status}")
    print("https: GET /presence 200, no token 401, /metrics 404, the page 200")

    uri = f"wss://{host}:{port}/presence/stream"
    page = f"https://{host}:{port}"  # the Origin a browser on the page sends
    try:
        await rig.ws_connect(uri, tokens["alice"], ssl_context=tls, origin="https://evil.example")
        rig.fail("a WebSocket from the origin https://evil.example was accepted through nginx")
    except websockets.InvalidStatusCode as e:
        if e.status_code != 403:
            rig.fail(f"a WebSocket from https://evil.example: want 403, got {e.status_code}")
    print("wss: a WebSocket from another origin is refused (403)")
    alice = await rig.ws_connect(uri + "?device_id=alice-web", tokens["alice"], ssl_context=tls, origin=page)
    try:
        snapshot = await rig.welcome_and_snapshot(alice, ["bob"], 10)
        if any(u.get("user_id") == "bob" and u.get("state") == "online" for u in snapshot["users"]):
            rig.fail(f"bob is online in the snapshot before he connected: {snapshot}")
        print(f"wss: alice's snapshot (seq {snapshot['seq']})")
        await alice.send(json.dumps({"type": "heartbeat"}))

        def bob_is(state):
            return lambda m: m.get("type") == "diff" and any(
                u.get("user_id") == "bob" and u.get("state") == state for u in m["users"])

        # bob as the page does it: no header, the token in the first message.
        bob = await rig.ws_connect(uri + "?device_id=bob-phone&platform=mobile", tokens["bob"], ssl_context=tls,
                                   origin=page, auth_message=True)
        try:
            await rig.recv_until(bob, lambda m: m.get("type") == "welcome", 10, "bob's welcome")
            diff = await rig.recv_until(alice, bob_is("online"), 10, "the diff of bob going online")
            print(f"wss: alice's diff seq {diff['seq']}: bob online")
            status, body = await rig.http_request("127.0.0.1", port, "GET", "/presence?user_ids=bob",
                                                  token=tokens["alice"], **base)
            if status != 200 or body["users"][0]["state"] != "online":
                rig.fail(f"GET /presence over https after bob connected: {status} {body}")
            await bob.send(json.dumps({"type": "bye"}))
            diff = await rig.recv_until(alice, bob_is("offline"), 10, "the diff of bob's bye")
            print(f"wss: alice's diff seq {diff['seq']}: bob offline after his bye")
        finally:
            await bob.close()
    finally:
        await alice.close()


def main():
    rig.stop_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("server", help="the presence_server binary")
    ap.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    args = ap.parse_args()
    if not os.access(args.nginx, os.X_OK):
        rig.fail(f"no nginx at {args.nginx} (Debian: nginx; scripts/install-deps.sh installs it)")

    with rig.new_workdir("presence-nginx-") as work:
        cert, key = make_certificate(work)
        tokens = {u: rig.token_for(u) for u in ("alice", "bob")}
        auth = os.path.join(work, "auth.txt")
        rig.write_auth(auth, tokens, friends={"alice": ["bob"], "bob": ["alice"]})
        # The flags docs/example-server.md gives for a server behind nginx.
        behind_nginx = ["--allowed-host", "localhost", "--max-connections-per-ip", "50000",
                        "--trusted-proxy", "127.0.0.1"]
        with rig.PresenceServer(args.server, work, auth, extra_args=behind_nginx, exit_after=120) as server:
            port = rig.free_port()
            prefix = os.path.join(work, "nginx")
            os.makedirs(prefix)
            conf = write_nginx_conf(prefix, render_template({
                "LISTEN": f"127.0.0.1:{port}", "SERVER_NAME": "localhost", "CERT": cert, "KEY": key,
                "UPSTREAM": f"{server.host}:{server.port}"}))
            with rig.Process([args.nginx, "-p", prefix, "-e", "stderr", "-c", conf], "nginx") as nginx:
                nginx.wait_for_line(r"start worker process", 15)
                print(f"nginx on https://localhost:{port} -> presence_server on {server.host}:{server.port}")
                rig.run_checks(check_through_nginx(port, cert, tokens), nginx, server)
    print("PASS")


if __name__ == "__main__":
    main()
