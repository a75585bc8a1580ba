#!/usr/bin/python3
"""Live APNs test: tools/apns_sim.py on free loopback ports, pushes sent by
apns_live_driver (protocols/apns over real TLS + HTTP/2).

usage: apns_live.py PATH/TO/apns_live_driver
Env: ENS_TEST_DATA (tests/data), ENS_SOURCE_DIR (repo root).
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

SRC = os.environ.get("ENS_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
DATA = os.environ.get("ENS_TEST_DATA", os.path.join(SRC, "tests", "data"))
PKI = os.path.join(DATA, "pki")
TEAM, KID, TOPIC = "TEAM123456", "KEY1234567", "com.example.ens"
TOK = ["%064x" % (0xA0 + i) for i in range(8)]
EXPECTED_RAW = ('{"aps":{"alert":{"title":"Ann \\"A\\" Smith","body":"H\u00e9llo \u2713"},'
                '"badge":3,"sound":"default","mutable-content":1,"thread-id":"u1"},'
                '"ens":{"type":"new-mail","userId":"u1"}}')

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Sim:
    def __init__(self):
        self.port, self.cport = free_port(), free_port()
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", os.path.join(SRC, "tools", "apns_sim.py"),
             "--listen", f"127.0.0.1:{self.port}", "--control", f"127.0.0.1:{self.cport}",
             "--cert", os.path.join(PKI, "server.pem"), "--key", os.path.join(PKI, "server.key"),
             "--team-id", TEAM, "--key-id", KID, "--key-pub", os.path.join(PKI, "apns-pub.pem")],
            stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if "apns_sim ready" not in line:
            raise SystemExit("simulator did not start")

    def ctl(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.cport}{path}", data=data,
                                     method=method)
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read() or b"null")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=5)


def drive(driver, sim, *steps):
    cmd = [driver, f"https://127.0.0.1:{sim.port}", os.path.join(PKI, "ca.pem"),
           os.path.join(PKI, "apns.p8"), TEAM, KID, TOPIC, *steps]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        print(p.stderr, file=sys.stderr)
    check(p.returncode == 0, f"driver exits 0 for {steps}")
    return [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]


def main():
    driver = sys.argv[1]
    sim = Sim()
    try:
        # 1. One push: exact headers and payload as recorded by the simulator.
        res = drive(driver, sim, TOK[0])
        check(len(res) == 1 and res[0]["class"] == "ok" and res[0]["status"] == 200,
              "a valid push is accepted (200, ok)")
        pushes = sim.ctl("GET", "/pushes")
        check(len(pushes) == 1, "the simulator recorded exactly one push")
        if pushes:
            h = pushes[0]["headers"]
            check(h.get(":method") == "POST", ":method POST")
            check(h.get(":path") == "/3/device/" + TOK[0], ":path /3/device/<token>")
            check(h.get("apns-topic") == TOPIC, "apns-topic")
            check(h.get("apns-push-type") == "alert", "apns-push-type alert")
            check(h.get("apns-priority") == "10", "apns-priority 10")
            check(h.get("apns-id") == res[0]["apns_id"], "apns-id sent and echoed back")
            check(pushes[0]["authorization"].startswith("bearer "), "authorization bearer JWT")
            check(pushes[0]["raw"] == EXPECTED_RAW, "payload bytes exactly as API.md section 3")
        sim.ctl("DELETE", "/pushes")

        # 2. An unregistered token is classified for removal.
        sim.ctl("POST", "/unregister", {"token": TOK[1]})
        res = drive(driver, sim, TOK[1])
        check(len(res) == 1 and res[0]["status"] == 410 and res[0]["reason"] == "Unregistered"
              and res[0]["class"] == "unregistered" and res[0]["timestamp"] > 0,
              "410 Unregistered -> APNS_UNREGISTERED with timestamp")

        # 3. A 503 is transient.
        sim.ctl("POST", "/fail", {"count": 1, "status": 503, "reason": "ServiceUnavailable"})
        res = drive(driver, sim, TOK[2])
        check(len(res) == 1 and res[0]["status"] == 503 and res[0]["class"] == "retry",
              "503 ServiceUnavailable -> APNS_RETRY")

        # 4. Probe first, then two pushes multiplexed on one connection.
        sim.ctl("DELETE", "/pushes")
        sim.ctl("POST", "/delay", {"ms": 300})
        conns_before = sim.ctl("GET", "/stats")["connections"]
        res = drive(driver, sim, TOK[3], TOK[4] + "," + TOK[5])
        sim.ctl("POST", "/delay", {"ms": 0})
        check(len(res) == 3 and all(r["class"] == "ok" for r in res), "three pushes accepted")
        pushes = sim.ctl("GET", "/pushes")
        stats = sim.ctl("GET", "/stats")
        check(len({p["conn"] for p in pushes}) == 1 and len(pushes) == 3,
              "all pushes of one client share one connection")
        check(stats["connections"] - conns_before == 1, "exactly one new connection was opened")
        check(max(p["concurrent"] for p in pushes) == 2,
              "the two pushes after the probe were in flight together")

        # 5. ExpiredProviderToken: re-sign, reconnect, resend once; the push gets through.
        sim.ctl("DELETE", "/pushes")
        sim.ctl("POST", "/fail", {"count": 1, "status": 403, "reason": "ExpiredProviderToken"})
        res = drive(driver, sim, TOK[6])
        pushes = sim.ctl("GET", "/pushes")
        check(len(res) == 1 and res[0]["class"] == "ok" and len(pushes) == 1,
              "403 ExpiredProviderToken is re-signed and resent once")
    finally:
        sim.stop()
    passed = "all" if not failures else f"{len(failures)} failed"
    print(f"apns_live: {passed}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
