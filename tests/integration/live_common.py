"""Shared parts of the live protocol tests (apns_live.py, fcm_live.py): paths,
check/report bookkeeping, free loopback ports, and a simulator process from
tools/ started on them and driven through its control API.

Env: ENS_TEST_DATA (tests/data), ENS_SOURCE_DIR (repo root).
"""
import json
import os
import socket
import subprocess
import urllib.request

PY = "/usr/bin/python3"
SRC = os.environ.get("ENS_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
DATA = os.environ.get("ENS_TEST_DATA", os.path.join(SRC, "tests", "data"))
PKI = os.path.join(DATA, "pki")
SERVER_CERT = ["--cert", os.path.join(PKI, "server.pem"), "--key", os.path.join(PKI, "server.key")]

failures = []


def check(cond, what):
    """Prints "ok   what" or "FAIL what"; failures are counted for report()."""
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def report(name):
    """Prints the summary line; returns the exit status."""
    passed = "all" if not failures else f"{len(failures)} failed"
    print(f"{name}: {passed}")
    return 1 if failures else 0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def sim_path(name):
    """tools/<name>.py"""
    return os.path.join(SRC, "tools", name + ".py")


class SimProcess:
    """tools/<name>.py started with args plus --control on a free port; returns
    once it has printed "<name> ready" (SystemExit if it does not)."""

    def __init__(self, name, args):
        self.cport = free_port()
        self.proc = subprocess.Popen(
            [PY, sim_path(name), *args, "--control", f"127.0.0.1:{self.cport}"],
            stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if f"{name} ready" not in line:
            self.stop()
            raise SystemExit("simulator did not start")

    def ctl(self, method, path, body=None):
        """A control API call; returns the decoded JSON answer."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.cport}{path}", data=data,
                                     method=method)
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read() or b"null")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=5)
