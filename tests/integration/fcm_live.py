#!/usr/bin/python3
"""Live FCM test: tools/fcm_sim.py on free loopback ports, pushes sent by
fcm_live_driver (protocols/fcm over real TLS + HTTP/2, OAuth over TLS + HTTP/1.1).

usage: fcm_live.py PATH/TO/fcm_live_driver
Env: ENS_TEST_DATA (tests/data), ENS_SOURCE_DIR (repo root).
"""
import json
import os
import subprocess
import sys
import tempfile

from live_common import PKI, PY, SERVER_CERT, SimProcess, check, free_port, report, sim_path

SIM = sim_path("fcm_sim")
PROJECT = "ens-live"
TOK = ["cXr4Dev%02d:APA91bHsimulatedRegistrationToken_%02d" % (i, i) for i in range(8)]
EXPECTED = ('{"message":{"token":"%s","data":{"type":"new-mail","title":"Ann \\"A\\" Smith",'
            '"body":"H\u00e9llo \u2713","badge":"3","userId":"u1"},'
            '"android":{"priority":"high"}}}')


def make_service_account(path, token_url):
    subprocess.run([PY, SIM, "--make-service-account", path,
                    "--project-id", PROJECT, "--token-url", token_url], check=True)


class Sim(SimProcess):
    def __init__(self, tmp):
        self.port, self.tport = free_port(), free_port()
        self.token_url = f"https://127.0.0.1:{self.tport}/token"
        self.sa = os.path.join(tmp, "sa.json")
        make_service_account(self.sa, self.token_url)
        super().__init__("fcm_sim", [
            "--listen", f"127.0.0.1:{self.port}", "--token-listen", f"127.0.0.1:{self.tport}",
            "--token-url", self.token_url, *SERVER_CERT, "--service-account", self.sa])


def drive(driver, sim, *steps, on_pause=None):
    """Runs the driver; returns (results, fetches). on_pause runs at each "pause" step."""
    cmd = [driver, f"https://127.0.0.1:{sim.port}", sim.token_url, os.path.join(PKI, "ca.pem"),
           sim.sa, *steps]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    results, fetches = [], None
    for line in p.stdout:
        if not line.startswith("{"):
            continue
        obj = json.loads(line)
        if "pause" in obj:
            if on_pause:
                on_pause()
            p.stdin.write("\n")
            p.stdin.flush()
        elif "fetches" in obj:
            fetches = obj["fetches"]
        else:
            results.append(obj)
    p.stdin.close()
    err = p.stderr.read()
    rc = p.wait(timeout=30)
    if rc != 0:
        print(err, file=sys.stderr)
    check(rc == 0, f"driver exits 0 for {steps}")
    return results, fetches


def main():
    driver = sys.argv[1]
    with tempfile.TemporaryDirectory() as tmp:
        sim = Sim(tmp)
        try:
            run(driver, sim)
        finally:
            sim.stop()
    return report("fcm_live")


def run(driver, sim):
    # 1. One push: the token is fetched, the message recorded byte for byte.
    res, fetches = drive(driver, sim, TOK[0])
    check(len(res) == 1 and res[0]["class"] == "ok" and res[0]["status"] == 200,
          "a valid push is accepted (200, ok)")
    check(len(res) == 1 and res[0]["name"].startswith(f"projects/{PROJECT}/messages/"),
          "the message name is reported")
    check(fetches == 1, "one access token was fetched")
    msgs = sim.ctl("GET", "/messages")
    check(len(msgs) == 1, "the simulator recorded exactly one message")
    if msgs:
        h = msgs[0]["headers"]
        check(h.get(":method") == "POST", ":method POST")
        check(h.get(":path") == f"/v1/projects/{PROJECT}/messages:send",
              ":path /v1/projects/<project>/messages:send")
        check(h.get("content-type", "").startswith("application/json"), "content-type json")
        check(msgs[0]["raw"] == EXPECTED % TOK[0], "payload bytes exactly as API.md section 3")
    sim.ctl("DELETE", "/messages")

    # 2. Several pushes of one client share one token and one connection.
    before = sim.ctl("GET", "/stats")
    res, fetches = drive(driver, sim, ",".join(TOK[1:4]), TOK[4])
    after = sim.ctl("GET", "/stats")
    check(len(res) == 4 and all(r["class"] == "ok" for r in res), "four pushes accepted")
    check(fetches == 1 and after["tokens_issued"] - before["tokens_issued"] == 1,
          "the pushes share one access token")
    check(after["connections"] - before["connections"] == 1, "and one HTTP/2 connection")
    check(sorted(m["message"]["token"] for m in sim.ctl("GET", "/messages")) == sorted(TOK[1:5]),
          "every message reached its token")
    sim.ctl("DELETE", "/messages")

    # 3. An unregistered token, and one that is not a registration token at all.
    sim.ctl("POST", "/unregister", {"token": TOK[5]})
    res, _ = drive(driver, sim, TOK[5], "short")
    check(len(res) == 2 and res[0]["status"] == 404 and res[0]["error_code"] == "UNREGISTERED"
          and res[0]["error_status"] == "NOT_FOUND" and res[0]["class"] == "unregistered",
          "404 UNREGISTERED -> FCM_UNREGISTERED")
    check(len(res) == 2 and res[1]["status"] == 400 and res[1]["class"] == "unregistered",
          "400 not a valid FCM registration token -> FCM_UNREGISTERED")

    # 4. 503 UNAVAILABLE is transient and Retry-After is reported; 429 too.
    sim.ctl("POST", "/fail", {"count": 1, "status": 503, "errorStatus": "UNAVAILABLE",
                              "retryAfter": 7})
    sim.ctl("POST", "/fail", {"count": 1, "status": 429, "errorStatus": "QUOTA_EXCEEDED"})
    res, _ = drive(driver, sim, TOK[6], TOK[6])
    check(len(res) == 2 and res[0]["status"] == 503 and res[0]["class"] == "retry"
          and res[0]["retry_after"] == 7 and res[0]["error_code"] == "UNAVAILABLE",
          "503 UNAVAILABLE -> FCM_RETRY with Retry-After 7")
    check(len(res) == 2 and res[1]["status"] == 429 and res[1]["class"] == "retry"
          and res[1]["error_code"] == "QUOTA_EXCEEDED", "429 QUOTA_EXCEEDED -> FCM_RETRY")

    # 5. 401 THIRD_PARTY_AUTH_ERROR is a configuration alarm, not retried.
    sim.ctl("POST", "/fail", {"count": 1, "status": 401, "errorStatus": "THIRD_PARTY_AUTH_ERROR"})
    res, fetches = drive(driver, sim, TOK[6])
    check(len(res) == 1 and res[0]["class"] == "fatal" and fetches == 1,
          "401 THIRD_PARTY_AUTH_ERROR -> FCM_FATAL, no token refresh")

    # 6. The tokens expire under a running client: 401 UNAUTHENTICATED, then
    #    a fresh token and one resend that gets through.
    sim.ctl("DELETE", "/messages")
    before = sim.ctl("GET", "/stats")
    res, fetches = drive(driver, sim, TOK[7], "pause", TOK[7],
                         on_pause=lambda: sim.ctl("POST", "/expire-tokens"))
    after = sim.ctl("GET", "/stats")
    check(len(res) == 2 and all(r["class"] == "ok" for r in res),
          "both pushes succeed across the token expiry")
    check(fetches == 2 and after["unauthenticated"] - before["unauthenticated"] == 1,
          "the 401 UNAUTHENTICATED made the client fetch a new token once")
    check(len(sim.ctl("GET", "/messages")) == 2, "the simulator recorded both messages")

    # 7. A key the token endpoint does not know: the push ends with ENS_EAUTH, fatal.
    good = sim.sa
    sim.sa = os.path.join(os.path.dirname(good), "other.json")
    make_service_account(sim.sa, sim.token_url)
    res, fetches = drive(driver, sim, TOK[0])
    sim.sa = good
    check(len(res) == 1 and res[0]["err"] == "EAUTH" and res[0]["class"] == "fatal"
          and fetches == 0, "a refused assertion -> ENS_EAUTH, FCM_FATAL")


if __name__ == "__main__":
    sys.exit(main())
