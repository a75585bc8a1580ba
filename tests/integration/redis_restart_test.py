#!/usr/bin/python3
"""Redis restarted under load, ten times: each time every scheduler reconnects,
/ready is honest, and no mail is lost.

A real redis-server (AOF on), the simulators and ensd with two schedulers on
loopback. While check-ins and mails flow, redis-server is killed with SIGKILL
and started again on the same port and data directory. After each restart:
/ready is 200 again within READY_WITHIN_S; a burst of check-ins on fresh
connections (spread over both schedulers by SO_REUSEPORT) all succeed; and
while Redis was gone /ready never said 200. At the end every mail the Exchange
simulator delivered has been pushed (it retries callbacks answered 503).

Usage: redis_restart_test.py ENSD_BINARY WORKDIR"""
import concurrent.futures
import json
import os
import re
import shutil
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tools"))
import ensstack  # noqa: E402

ENSD = None
WORK = None
PASSWORD = "Restart-Pa55word-1c9b"
MAILBOXES = ["user%d@contoso.com" % i for i in range(4)]
RESTARTS = 10
DOWN_S = 0.5          # Redis stays away this long each time
STEADY_S = 0.4        # traffic between recovery and the next kill
READY_WITHIN_S = 3.0  # /ready must be 200 again this soon after Redis answers
GRACE_S = 0.3         # /ready may lag the kill by this much, no more
BURST = 8             # check-ins after each recovery; all must succeed
DRAIN_S = 30          # time for Exchange's retries to deliver the last mails
# Generous limits: this test is about Redis, not about the rate limiter.
LIMITS = {"ENS_RATELIMIT_%s_%s" % (k, v): "1000000" for k in ("ADDRESS", "TOKEN", "MAILBOX")
          for v in ("PER_MINUTE", "BURST")}


def token_of(i):
    return ("%02x" % (0x10 + i)) * 32


class Recorder:
    """Runs fn() in a loop on a thread, recording (start, end, result)."""

    def __init__(self, fn, pause):
        self.fn, self.pause = fn, pause
        self.rows = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            t0 = time.time()
            try:
                r = self.fn()
            except Exception as e:  # noqa: BLE001 - a refused connection is a result too
                r = "error:" + type(e).__name__
            self.rows.append((t0, time.time(), r))
            self.stop.wait(self.pause)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=40)


class RedisRestarts(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if os.path.isdir(WORK):
            shutil.rmtree(WORK)
        cls.s = ensstack.Stack(WORK, ENSD, retry_base=0.2, env=LIMITS)
        cls.s.start()
        cls.tenant, cls.token = cls.s.create_tenant("Contoso")
        for i, email in enumerate(MAILBOXES):
            cls.s.ews_control("POST", "/mailboxes", {"email": email, "password": PASSWORD})
            st, body = cls.enroll(i, "/v1/subscribe")
            assert st == 200, (st, body)
        # wait for the first status event: the subscriptions are live
        ensstack.wait_for(lambda: all(
            sub["delivered"] >= 1
            for sub in cls.s.ews_control("GET", "/subscriptions")), 20, "first status events")

    @classmethod
    def tearDownClass(cls):
        cls.s.stop()

    @classmethod
    def enroll(cls, i, path="/v1/checkin"):
        payload = cls.s.enrollment(MAILBOXES[i], PASSWORD, device_id="device-%d" % i,
                                   token_hex=token_of(i))
        return cls.s.subscribe(cls.token, payload, path=path)

    def ready(self):
        return self.s.public("GET", "/ready")[0]

    def kill_redis(self):
        p = self.s.procs.pop("redis")
        p.kill()
        p.wait()

    def test_ten_restarts_under_load(self):
        s = self.s
        n = [0]
        delivered = []

        def checkin():
            n[0] += 1
            return self.enroll(n[0] % len(MAILBOXES))[0]

        def mail():
            i = len(delivered)
            subject = "restart mail %d" % i
            s.ews_control("POST", "/deliver", {
                "email": MAILBOXES[i % len(MAILBOXES)], "fromName": "Bob",
                "fromEmail": "bob@fabrikam.com", "subject": subject})
            delivered.append((i % len(MAILBOXES), subject))
            return 200

        outages = []  # (redis killed, new redis-server spawned): Redis certainly gone between
        recovery = []
        ready_at = []  # when /ready said 200 again after each restart
        with Recorder(self.ready, 0.05) as ready, Recorder(checkin, 0.05) as load, \
                Recorder(mail, 0.15):
            for _ in range(RESTARTS):
                time.sleep(STEADY_S)
                t_kill = time.time()
                self.kill_redis()
                time.sleep(DOWN_S)
                outages.append((t_kill, time.time()))
                s.start_redis()
                t_up = time.time()  # answering PING
                ensstack.wait_for(lambda: self.ready() == 200, READY_WITHIN_S + 5, "/ready 200")
                ready_at.append(time.time())
                recovery.append(ready_at[-1] - t_up)
                # Every scheduler serves: fresh connections land on both.
                with concurrent.futures.ThreadPoolExecutor(BURST) as pool:
                    burst = list(pool.map(lambda i: self.enroll(i % len(MAILBOXES)),
                                          range(BURST)))
                self.assertEqual([st for st, _ in burst], [200] * BURST, burst)
        print("recovery after each restart (s):", ["%.2f" % r for r in recovery])
        self.assertLess(max(recovery), READY_WITHIN_S, recovery)

        # /ready never said 200 while Redis was gone (after a short grace).
        lies = [(t0, r) for t0, t1, r in ready.rows for k, u in outages
                if t0 > k + GRACE_S and t1 < u and r == 200]
        self.assertEqual(lies, [])
        saw_503 = sum(1 for t0, t1, r in ready.rows for k, u in outages
                      if t0 > k + GRACE_S and t1 < u and r == 503)
        self.assertGreater(saw_503, RESTARTS)  # the polls did land in the outages

        # Check-ins under load: answered 200 or, while Redis was gone, 503; nothing else.
        statuses = [r for _, _, r in load.rows]
        self.assertTrue(set(statuses) <= {200, 503}, sorted(set(map(str, statuses))))
        # And the converse of an honest /ready: once it said 200, every check-in
        # until the next kill succeeded, whichever scheduler took it.
        kills = [k for k, _ in outages[1:]] + [time.time()]
        steady = [r for t0, t1, r in load.rows for a, k in zip(ready_at, kills)
                  if t0 > a and t1 < k]
        self.assertGreater(len(steady), RESTARTS)
        self.assertEqual([r for r in steady if r != 200], [])

        # Every scheduler lost its connection at every restart (a clean close,
        # or a reset when a command was in flight) and is connected now. The
        # figures are copied once a second: wait for the last restart's.
        def losses():
            st, body, _ = s.admin("GET", "/metrics")
            self.assertEqual(st, 200)
            m = body.decode()
            n = sum(int(re.search(r'ens_redis_disconnects_total\{reason="%s"\} (\d+)' % why,
                                  m).group(1)) for why in ("closed", "poll_error", "timeouts"))
            return m if n >= 2 * RESTARTS else None

        metrics = ensstack.wait_for(losses, 3, "a Redis loss per scheduler per restart")
        print(" ".join(re.findall(r'ens_redis_disconnects_total\{reason="\w+"\} \d+', metrics)))
        self.assertIn('ens_redis_connected{sched="0"} 1', metrics)
        self.assertIn('ens_redis_connected{sched="1"} 1', metrics)
        self.assertIn("ens_ready 1", metrics)

        # Nothing lost: each delivered mail reaches its device.
        want = {(token_of(i), subj) for i, subj in delivered}

        def pushed():
            got = {(p["headers"][":path"].rsplit("/", 1)[1],
                    p["payload"].get("aps", {}).get("alert", {}).get("body"))
                   for p in s.pushes()}
            return got

        try:
            ensstack.wait_for(lambda: want <= pushed(), DRAIN_S, "every mail pushed")
        except TimeoutError:
            missing = sorted(want - pushed(), key=lambda x: x[1])
            self.fail("%d of %d mails never pushed: %s" % (len(missing), len(want),
                                                             json.dumps(missing[:10])))
        print("%d mails delivered and pushed, %d check-ins (%d answered 503)"
              % (len(want), len(statuses), statuses.count(503)))


if __name__ == "__main__":
    ENSD, WORK = sys.argv[1], sys.argv[2]
    del sys.argv[1:3]
    unittest.main(verbosity=2)
