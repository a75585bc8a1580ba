#!/usr/bin/python3
"""A push service that fails or crawls costs neither a notification nor a
duplicate: retries are bounded by the push's expiry, not by a count of tries,
and a try past its stream deadline is reset and tried again with the same
apns-id and apns-collapse-id, so the device shows it once.

A real redis-server, the Exchange and APNs simulators and ensd, on loopback.

Usage: push_outage_test.py ENSD_BINARY WORKDIR CASE [--short]
  CASE outage  APNs answers 503 for 2 minutes while mail arrives, then recovers:
               every mail is pushed, exactly once
       slow    APNs answers every push after 20 s (past the 15 s stream deadline):
               every mail is shown once on the device
       expiry  APNs fails for longer than push.expiry_s: the pushes are dropped and
               counted as expired, never sent after it
  --short      the same shapes at a tenth of the times (the sanitizer build)"""
import collections
import json
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tools"))
import ensstack  # noqa: E402

ALICE = "alice@contoso.com"
PASSWORD = "alice-Pa55"
TOKEN = "a1" * 32


def log(msg):
    print("push_outage: " + msg, flush=True)


def start(work, ensd, env):
    if os.path.isdir(work):
        shutil.rmtree(work)
    s = ensstack.Stack(work, ensd, env=env)
    s.start()
    _, api_token = s.create_tenant("Contoso")
    s.ews_control("POST", "/mailboxes", {"email": ALICE, "password": PASSWORD})
    st, resp = s.subscribe(api_token, s.enrollment(ALICE, PASSWORD, device_id="alice-phone",
                                                   token_hex=TOKEN))
    if st != 200:
        raise AssertionError("enrollment answered %d %s" % (st, resp))
    return s


def deliver(s, i):
    s.ews_control("POST", "/deliver", {"email": ALICE, "fromName": "Sender %d" % i,
                                       "fromEmail": "s%d@fabrikam.com" % i,
                                       "subject": "mail %d" % i})


def metric(s, name):
    st, b, _ = s.admin("GET", "/metrics")
    for line in b.decode().splitlines():
        parts = line.split()
        if parts and parts[0] == name:
            return float(parts[-1])
    raise AssertionError("no metric %s" % name)


def pushes_metric(s, outcome):
    return metric(s, 'ens_pushes_total{provider="apns",outcome="%s"}' % outcome)


def mail_pushes(s):
    return [p for p in s.pushes() if "alert" in p["payload"]["aps"]]


def check_headers(pushes):
    """Every try of a push carries its apns-id as its collapse id and an expiry."""
    now = time.time()
    for p in pushes:
        h = p["headers"]
        assert h.get("apns-collapse-id") == h.get("apns-id"), h
        exp = int(h.get("apns-expiration", "0"))
        assert now < exp <= now + 3600 + 5, h


def case_outage(ensd, work, scale):
    outage = 120 * scale
    cap_ms = int(20000 * scale)
    n = 10
    s = start(work, ensd, {"ENS_PUSH_RETRY_MAX_MS": str(cap_ms)})
    try:
        s.apns_control("POST", "/fail", {"seconds": outage, "status": 503,
                                         "reason": "ServiceUnavailable"})
        t0 = time.monotonic()
        log("APNs answers 503 for %.0f s; %d mails arrive during it" % (outage, n))
        for i in range(n):
            deliver(s, i)
            time.sleep(outage / 2 / n)
        time.sleep(max(0.0, outage - (time.monotonic() - t0) - 1))
        assert mail_pushes(s) == [], "a push got through during the outage"
        rejected = s.apns_control("GET", "/stats")["rejected"]
        assert rejected >= n, "APNs refused only %d pushes: no outage" % rejected
        # After recovery every push's next try comes within the back-off cap.
        ensstack.wait_for(lambda: len(mail_pushes(s)) >= n, outage + 2 * cap_ms / 1000 + 30,
                          "the %d mails after the outage" % n)
        time.sleep(2 * cap_ms / 1000)  # late duplicates would land by now
        got = mail_pushes(s)
        subjects = collections.Counter(p["payload"]["aps"]["alert"]["body"] for p in got)
        assert subjects == collections.Counter("mail %d" % i for i in range(n)), subjects
        assert len({p["headers"]["apns-id"] for p in got}) == n
        check_headers(got)
        assert pushes_metric(s, "ok") == n, pushes_metric(s, "ok")
        assert pushes_metric(s, "expired") == 0
        log("PASS: %d refused tries during %.0f s of 503, then each of the %d mails once, "
            "%.0f s after the outage began" % (rejected, outage, n, time.monotonic() - t0))
    finally:
        s.stop()


def case_slow(ensd, work, scale):
    delay_ms = int(20000 * scale)
    stream_ms = int(15000 * scale)
    n = 5
    s = start(work, ensd, {"ENS_PUSH_STREAM_TIMEOUT_MS": str(stream_ms)})
    try:
        s.apns_control("POST", "/delay", {"ms": delay_ms})
        log("APNs answers after %d ms, the stream deadline is %d ms; %d mails" %
            (delay_ms, stream_ms, n))
        t0 = time.monotonic()
        for i in range(n):
            deliver(s, i)
        ensstack.wait_for(lambda: pushes_metric(s, "ok") >= n, 12 * delay_ms / 1000 + 30,
                          "APNs to answer %d pushes 200" % n)
        # Tries still in flight when the last 200 came are answered by now.
        time.sleep(delay_ms / 1000 + 2)
        got = mail_pushes(s)
        check_headers(got)
        # The device shows one notification per collapse id: what it shows.
        shown = {}
        for p in got:
            cid = p["headers"]["apns-collapse-id"]
            if cid in shown:
                assert shown[cid]["raw"] == p["raw"], "one collapse id, two payloads"
            shown[cid] = p
        subjects = collections.Counter(p["payload"]["aps"]["alert"]["body"]
                                       for p in shown.values())
        assert subjects == collections.Counter("mail %d" % i for i in range(n)), subjects
        assert pushes_metric(s, "ok") == n, pushes_metric(s, "ok")
        assert pushes_metric(s, "expired") == 0
        log("PASS: %d mails shown once each after %.0f s; APNs saw %d tries (a try reset "
            "past its deadline may have reached it: its collapse id folds it)" %
            (n, time.monotonic() - t0, len(got)))
    finally:
        s.stop()


def case_expiry(ensd, work, scale):
    expiry_s = 10
    n = 3
    s = start(work, ensd, {"ENS_PUSH_EXPIRY_S": str(expiry_s), "ENS_PUSH_RETRY_MAX_MS": "2000"})
    try:
        s.apns_control("POST", "/fail", {"seconds": expiry_s + 8, "status": 503,
                                         "reason": "ServiceUnavailable"})
        for i in range(n):
            deliver(s, i)
        ensstack.wait_for(lambda: pushes_metric(s, "expired") >= n, expiry_s + 20,
                          "%d pushes counted expired" % n)
        time.sleep(8 + 3)  # past the outage: nothing expired may be sent now
        assert mail_pushes(s) == [], "an expired push was sent"
        assert pushes_metric(s, "ok") == 0
        assert pushes_metric(s, "expired") == n
        log("PASS: %d pushes failing past push.expiry_s=%d dropped and counted" % (n, expiry_s))
    finally:
        s.stop()


def main():
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    ensd, work, case = sys.argv[1], sys.argv[2], sys.argv[3]
    scale = 0.1 if "--short" in sys.argv[4:] else 1.0
    cases = {"outage": case_outage, "slow": case_slow, "expiry": case_expiry}
    cases[case](ensd, os.path.join(work, case), scale)
    return 0


if __name__ == "__main__":
    sys.exit(main())
