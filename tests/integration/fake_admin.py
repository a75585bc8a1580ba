#!/usr/bin/python3
"""A tiny fake of the ENS admin API (API.md section 4) for ensctl's tests.

It checks the bearer token, records every request and answers canned JSON.
Import it (FakeAdmin) or run it: fake_admin.py --token T [--port N] prints the port.
"""
import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

USER = {
    "userId": "u_42",
    "email": "alice@contoso.com",
    "tenantId": "t_1",
    "badge": 3,
    "devices": [
        {"deviceId": "d_ios_1", "platform": "ios", "environment": "production",
         "blocked": False, "lastPush": {"at": 1764000000, "result": "ok"}},
        {"deviceId": "d_and_2", "platform": "android", "environment": "production",
         "blocked": True, "lastPush": None},
    ],
    "subscription": {"id": "AAMkSub1", "state": "active", "lastStatusAt": 1764000300,
                     "watermarkAge": 120, "expiresAt": 1764086400},
    "counters": {"pushes": 12, "callbacks": 40},
}

METRICS = (
    "# HELP ens_pushes_total Pushes sent\n"
    "# TYPE ens_pushes_total counter\n"
    'ens_pushes_total{platform="ios",result="ok"} 12\n'
    'ens_http_seconds_bucket{le="0.1"} 3\n'
    "ens_users 7\n"
)


def route(method, path, body):
    """Returns (status, content type, body bytes) for one request."""
    if method == "POST" and path == "/admin/v1/tenants":
        req = json.loads(body or b"{}")
        return 201, "application/json", json.dumps({"id": "t_123", "name": req.get("name")})
    if method == "POST" and path == "/admin/v1/tenants/t_123/tokens":
        return 201, "application/json", json.dumps({"token": "ens_api_SECRETTOKEN"})
    if method == "GET" and path in ("/admin/v1/users?email=alice%40contoso.com",
                                    "/admin/v1/users/u_42"):
        return 200, "application/json", json.dumps(USER)
    if method == "POST" and path in ("/admin/v1/devices/d_ios_1/block",
                                     "/admin/v1/devices/d_ios_1/unblock"):
        return 200, "application/json", json.dumps({"deviceId": "d_ios_1",
                                                    "blocked": path.endswith("/block")})
    if method == "DELETE" and path == "/admin/v1/devices/d_ios_1":
        return 200, "application/json", json.dumps({"removed": True})
    if method == "POST" and path == "/admin/v1/keys/rotate":
        return 200, "application/json", json.dumps({"enrollmentKid": "k2", "sealingKid": "s2"})
    if method == "GET" and path == "/metrics":
        return 200, "text/plain; version=0.0.4", METRICS
    return 404, "application/json", json.dumps({"error": "not_found",
                                                "message": "no such user or device"})


class FakeAdmin:
    def __init__(self, token, port=0):
        self.token = token
        self.requests = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle_one(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                fake.requests.append({"method": self.command, "path": self.path,
                                      "headers": dict(self.headers), "body": body})
                if self.headers.get("Authorization") != "Bearer " + fake.token:
                    status, ctype, out = 401, "application/json", json.dumps(
                        {"error": "unauthorized", "message": "bad admin token"})
                else:
                    status, ctype, out = route(self.command, self.path, body)
                data = out.encode() if isinstance(out, str) else out
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = handle_one

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        # a short poll interval keeps shutdown() (one per test) fast
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--token", required=True)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    fake = FakeAdmin(args.token, args.port)
    print(fake.port, flush=True)
    fake.server.serve_forever()
