#!/usr/bin/python3
"""Live APNs test: tools/apns_sim.py on free loopback ports, pushes sent by
apns_live_driver (protocols/apns over real TLS + HTTP/2).

usage: apns_live.py PATH/TO/apns_live_driver
Env: ENS_TEST_DATA (tests/data), ENS_SOURCE_DIR (repo root).
"""
import json
import os
import subprocess
import sys

from live_common import PKI, SERVER_CERT, SimProcess, check, free_port, report

TEAM, KID, TOPIC = "TEAM123456", "KEY1234567", "com.example.ens"
TOK = ["%064x" % (0xA0 + i) for i in range(8)]
EXPECTED_RAW = ('{"aps":{"alert":{"title":"Ann \\"A\\" Smith","body":"H\u00e9llo \u2713"},'
                '"badge":3,"sound":"default","mutable-content":1,"thread-id":"u1"},'
                '"ens":{"type":"new-mail","userId":"u1"}}')


class Sim(SimProcess):
    def __init__(self):
        self.port = free_port()
        super().__init__("apns_sim", [
            "--listen", f"127.0.0.1:{self.port}", *SERVER_CERT,
            "--team-id", TEAM, "--key-id", KID, "--key-pub", os.path.join(PKI, "apns-pub.pem")])


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
    return report("apns_live")


if __name__ == "__main__":
    sys.exit(main())
