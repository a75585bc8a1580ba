#!/usr/bin/python3
"""Enrollment proves who you are, tried as an attacker would: inside the tenant
with a valid API token and valid credentials of one's own, as a delegate, as a
password guesser, by replaying a captured JWE, and against a restarting server.

A real redis-server, the Exchange and APNs simulators and ensd, on loopback.

Usage: enroll_guard_test.py ENSD_BINARY WORKDIR"""
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import unittest

from jwcrypto import jwe, jwk

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tools"))
import ensstack  # noqa: E402

ENSD = None
WORK = None
ALICE, MALLORY, EVE, BOB = ("alice@contoso.com", "mallory@contoso.com", "eve@contoso.com",
                            "bob@contoso.com")
PASSWORDS = {ALICE: "alice-Pa55", MALLORY: "mallory-Pa55", EVE: "eve-Pa55", BOB: "bob-Pa55"}


class Device:
    """A mail app's side: seals payloads to the server's keys (fetched once) and
    posts them over one kept-alive TLS connection."""

    def __init__(self, stack, token):
        self.s = stack
        self.token = token
        keys = stack.jwks()["keys"]
        self.key = next(k for k in keys if k.get("alg") == "ECDH-ES")
        self.pub = jwk.JWK(**self.key)
        self.conn = None

    def seal(self, payload):
        hdr = {"alg": "ECDH-ES", "enc": "A256GCM", "kid": self.key["kid"]}
        tok = jwe.JWE(json.dumps(payload).encode(), protected=json.dumps(hdr))
        tok.add_recipient(self.pub)
        return tok.serialize(compact=True).encode()

    def post(self, body, path="/v1/subscribe"):
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection("127.0.0.1", self.s.ports["public"],
                                                        context=self.s.ctx, timeout=30)
            try:
                self.conn.request("POST", "/api/ens" + path, body, {
                    "Authorization": "Bearer " + self.token,
                    "Content-Type": "application/jose"})
                r = self.conn.getresponse()
                data = r.read()
                return r.status, json.loads(data) if data else None, dict(r.getheaders())
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def enroll(self, email, password, path="/v1/subscribe", **kw):
        return self.post(self.seal(self.s.enrollment(email, password, **kw)), path)


class EnrollGuard(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if os.path.isdir(WORK):
            shutil.rmtree(WORK)
        # The per-address and per-token budgets are raised so that one test
        # client can play many attackers; the mailbox limit stays at its default.
        cls.s = ensstack.Stack(WORK, ENSD, retry_base=1.0,
                               env={"ENS_RATELIMIT_ADDRESS_BURST": "100000",
                                               "ENS_RATELIMIT_ADDRESS_PER_MINUTE": "600000",
                                               "ENS_RATELIMIT_TOKEN_BURST": "100000",
                                               "ENS_RATELIMIT_TOKEN_PER_MINUTE": "600000"})
        cls.s.start()
        cls.tenant, cls.token = cls.s.create_tenant("Contoso")
        for email, pw in PASSWORDS.items():
            cls.s.ews_control("POST", "/mailboxes", {"email": email, "password": pw})
        cls.dev = Device(cls.s, cls.token)

    @classmethod
    def tearDownClass(cls):
        cls.s.stop()

    def inspect(self, email):
        st, b, _ = self.s.admin("GET", "/admin/v1/users?email=%s&tenant=%s"
                                % (email.replace("@", "%40"), self.tenant))
        self.assertEqual(st, 200, b)
        return json.loads(b)

    def ews_requests(self):
        return self.s.ews_control("GET", "/requests")

    def metric(self, prefix):
        st, b, _ = self.s.admin("GET", "/metrics")
        rows = [l for l in b.decode().splitlines() if l.startswith(prefix)]
        self.assertTrue(rows, prefix)
        return float(rows[0].split()[-1])

    def test_1_another_users_address_with_ones_own_password_is_refused(self):
        s = self.s
        st, resp, _ = self.dev.enroll(ALICE, PASSWORDS[ALICE], device_id="alice-phone",
                                      token_hex="a1" * 32)
        self.assertEqual(st, 200, resp)
        before = self.inspect(ALICE)
        subs = s.ews_control("GET", "/subscriptions?email=" + ALICE)
        self.assertEqual(len(subs), 1)
        # Every request to Exchange names the mailbox it is about.
        for r in self.ews_requests():
            if r["ok"]:
                self.assertEqual(r["anchorMailbox"], ALICE, r)

        # Mallory, same tenant, valid API token, valid password of her own.
        n_req = len(self.ews_requests())
        st, resp, _ = self.dev.enroll(ALICE, PASSWORDS[MALLORY], username=MALLORY,
                                      device_id="mallory-phone", token_hex="ee" * 32)
        self.assertEqual((st, resp["error"]), (403, "mailbox_mismatch"), resp)
        self.assertNotIn(PASSWORDS[MALLORY], json.dumps(resp))
        # Nothing changed: the same devices, the same subscription, no Subscribe by her.
        after = self.inspect(ALICE)
        self.assertEqual([d["deviceId"] for d in after["devices"]],
                         [d["deviceId"] for d in before["devices"]])
        self.assertEqual(after["subscription"]["id"], before["subscription"]["id"])
        self.assertEqual(s.ews_control("GET", "/subscriptions?email=" + ALICE), subs)
        self.assertEqual(s.ews_control("GET", "/subscriptions?email=" + MALLORY), [])
        new = self.ews_requests()[n_req:]
        self.assertEqual([r["op"] for r in new], ["GetFolder"], new)
        # Mail still reaches Alice's phone alone, with Alice's mail.
        s.ews_control("POST", "/deliver", {"email": ALICE, "fromName": "CFO",
                                           "subject": "board minutes"})
        s.ews_control("POST", "/deliver", {"email": MALLORY, "fromName": "Mallory",
                                           "subject": "bait"})
        pushes = s.wait_pushes(1)
        time.sleep(1.0)
        pushes = s.pushes()
        self.assertEqual([p["headers"][":path"] for p in pushes], ["/3/device/" + "a1" * 32])
        self.assertEqual(pushes[0]["payload"]["aps"]["alert"]["title"], "CFO")

    def test_2_a_delegate_is_not_the_owner(self):
        s = self.s
        s.ews_control("POST", "/delegates", {"email": ALICE, "delegate": EVE})
        st, resp, _ = self.dev.enroll(ALICE, PASSWORDS[EVE], username=EVE,
                                      device_id="eve-phone", token_hex="e5" * 32)
        self.assertEqual((st, resp["error"]), (403, "mailbox_mismatch"), resp)
        self.assertNotIn("eve-phone", json.dumps(self.inspect(ALICE)))
        # A check-in of an unknown device is refused before anything else.
        st, resp, _ = self.dev.enroll(ALICE, PASSWORDS[EVE], path="/v1/checkin",
                                      username=EVE, device_id="eve-phone")
        self.assertEqual(st, 404, resp)

    def test_3_the_fingerprint_never_admits(self):
        s = self.s
        # The same device, unchanged: idempotent, no call to Exchange.
        n_req = len(self.ews_requests())
        st, resp, _ = self.dev.enroll(ALICE, PASSWORDS[ALICE], path="/v1/checkin",
                                      device_id="alice-phone", token_hex="a1" * 32)
        self.assertEqual(st, 200, resp)
        self.assertEqual(len(self.ews_requests()), n_req)
        # A second phone with the very same credentials is still verified.
        st, resp, _ = self.dev.enroll(ALICE, PASSWORDS[ALICE], device_id="alice-tablet",
                                      token_hex="a2" * 32)
        self.assertEqual(st, 200, resp)
        self.assertEqual([r["op"] for r in self.ews_requests()[n_req:]], ["GetFolder"])
        # The same device moving its pushes elsewhere is verified too, and a
        # wrong password cannot do it even for a known device.
        n_req = len(self.ews_requests())
        st, resp, _ = self.dev.enroll(ALICE, "wrong", path="/v1/checkin",
                                      device_id="alice-phone", token_hex="bad0" * 16)
        self.assertEqual((st, resp["error"]), (502, "ews_auth_failed"), resp)
        new = self.ews_requests()[n_req:]
        self.assertEqual([(r["user"], r["ok"]) for r in new], [(ALICE, False)], new)
        self.assertEqual(len(self.inspect(ALICE)["devices"]), 2)
        # Pushes still go to the two proven tokens, and nowhere else.
        first = len(s.pushes())
        s.ews_control("POST", "/deliver", {"email": ALICE, "fromName": "Check", "subject": "fp"})
        ensstack.wait_for(lambda: len(s.pushes()) >= first + 2, 20, "two pushes")
        time.sleep(0.5)
        paths = sorted(p["headers"][":path"] for p in s.pushes()[first:])
        self.assertEqual(paths, ["/3/device/" + "a1" * 32, "/3/device/" + "a2" * 32])

    def test_4_a_replayed_jwe_is_refused(self):
        body = self.dev.seal(self.s.enrollment(ALICE, PASSWORDS[ALICE], device_id="alice-phone",
                                               token_hex="a1" * 32))
        st, resp, _ = self.dev.post(body, "/v1/checkin")
        self.assertEqual(st, 200, resp)
        before = self.metric("ens_enrollment_replays_total")
        for _ in range(3):
            st, resp, _ = self.dev.post(body, "/v1/checkin")
            self.assertEqual((st, resp["error"]), (400, "stale_request"), resp)
        self.assertEqual(self.metric("ens_enrollment_replays_total"), before + 3)
        # Another base64 spelling of the same tag (the last character's unused
        # bits flipped) is either refused as malformed or known as the same.
        head, tag = body.rsplit(b".", 1)
        alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        last = alphabet.index(tag[-1:])
        respelled = head + b"." + tag[:-1] + alphabet[last ^ 1:(last ^ 1) + 1]
        st, resp, _ = self.dev.post(respelled, "/v1/checkin")
        self.assertEqual(st, 400, resp)
        self.assertIn(resp["error"], ("stale_request", "bad_jwe"))

    def test_5_five_thousand_wrong_passwords(self):
        s = self.s
        st, resp, _ = self.dev.enroll(BOB, PASSWORDS[BOB], device_id="bob-phone",
                                      token_hex="b0" * 32)
        self.assertEqual(st, 200, resp)
        bob_before = self.inspect(BOB)
        n_req = len(self.ews_requests())
        # Sealing 5,000 JWEs is the slow part: do it in parallel with posting.
        results = {}
        retry_after = []
        lock = threading.Lock()

        def attack(start, count):
            d = Device(s, self.token)
            for i in range(start, start + count):
                st, resp, hdrs = d.enroll(BOB, "guess-%05d" % i, device_id="evil-%05d" % i,
                                          token_hex="%064x" % i)
                with lock:
                    results[st] = results.get(st, 0) + 1
                    if st == 429:
                        retry_after.append(hdrs.get("Retry-After"))
        threads = [threading.Thread(target=attack, args=(k * 1250, 1250)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(sum(results.values()), 5000)
        self.assertNotIn(200, results, results)
        self.assertGreater(results.get(429, 0), 4900, results)
        self.assertTrue(all(r and r.isdigit() and int(r) >= 1 for r in retry_after))
        # Exchange saw at most the mailbox's burst plus what refilled meanwhile.
        guesses = [r for r in self.ews_requests()[n_req:] if r["user"] == BOB]
        self.assertLessEqual(len(guesses), 20, len(guesses))
        bob_after = self.inspect(BOB)
        self.assertEqual([d["deviceId"] for d in bob_after["devices"]],
                         [d["deviceId"] for d in bob_before["devices"]])
        self.assertGreaterEqual(self.metric('ens_rate_limited_total{limit="mailbox"}'), 4900)

    def test_6_callbacks_around_a_crash_are_never_unsubscribed(self):
        """kill -9, then restart while Exchange keeps calling: a callback that
        arrives before the keys are loaded finds the port shut (or 503), never
        Unsubscribe, and every mail of the outage is pushed."""
        s = self.s
        subs = s.ews_control("GET", "/subscriptions?email=" + ALICE)
        self.assertEqual(len(subs), 1)
        p = s.procs.pop("ensd")
        p.kill()
        p.wait()
        first = len(s.pushes())
        for i in range(5):
            s.ews_control("POST", "/deliver", {"email": ALICE, "fromName": "Outage %d" % i,
                                               "subject": "during the restart"})
        # Hammer the callback URL from the moment ensd starts: every answer
        # must be a refused connection, a 503 or OK. (A status event with no
        # watermark: it changes nothing, so the hammering itself is harmless.)
        answers = []
        stop = threading.Event()
        path = "/api/ens/v1/ews/" + subs[0]["url"].rsplit("/", 1)[1]
        soap = (b'<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/'
                b'envelope/"><s:Body><m:SendNotification xmlns:m="http://schemas.microsoft.com/'
                b'exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/'
                b'services/2006/types"><m:ResponseMessages><m:SendNotificationResponseMessage '
                b'ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:Notification>'
                b'<t:SubscriptionId>' + subs[0]["id"].encode() + b'</t:SubscriptionId>'
                b'<t:MoreEvents>false</t:MoreEvents><t:StatusEvent/></m:Notification>'
                b'</m:SendNotificationResponseMessage></m:ResponseMessages></m:SendNotification>'
                b'</s:Body></s:Envelope>')

        def hammer():
            while not stop.is_set():
                try:
                    c = http.client.HTTPSConnection("127.0.0.1", s.ports["public"],
                                                    context=s.ctx, timeout=5)
                    c.request("POST", path, soap, {"Content-Type": "text/xml"})
                    r = c.getresponse()
                    answers.append((r.status, r.read()))
                    c.close()
                except (ConnectionRefusedError, ConnectionResetError, ssl.SSLError,
                        socket.timeout, http.client.RemoteDisconnected):
                    answers.append(("refused", b""))
                    time.sleep(0.005)
        t = threading.Thread(target=hammer)
        t.start()
        try:
            s.start_ensd()
            time.sleep(0.5)
        finally:
            stop.set()
            t.join()
        self.assertTrue(answers)
        for st, body in answers:
            self.assertNotIn(b"Unsubscribe", body, (st, body))
            self.assertIn(st, ("refused", 200, 503), (st, body))
        self.assertTrue(any(st == 200 for st, _ in answers), answers[-5:])
        # Exchange kept the subscription; every mail of the outage arrives.
        self.assertEqual([x["id"] for x in s.ews_control("GET", "/subscriptions?email=" + ALICE)],
                         [subs[0]["id"]])
        ensstack.wait_for(lambda: len(s.pushes()) >= first + 5, 60, "the outage's mails")
        titles = [p["payload"]["aps"]["alert"]["title"] for p in s.pushes()[first:]
                  if "alert" in p["payload"]["aps"]]
        for i in range(5):
            self.assertIn("Outage %d" % i, titles)

    def test_7_an_attribute_bomb_costs_nothing(self):
        """One callback element with 80,000 attributes (869 KB, under the body
        limit) at a live callback URL: libxml2 alone spent 10 s of a loop
        thread on it. Four at once are each refused as malformed well within
        a second, while the same thread keeps serving, and the subscription
        stays as it was."""
        s = self.s
        st, resp, _ = self.dev.enroll(ALICE, PASSWORDS[ALICE], device_id="alice-phone",
                                      token_hex="a1" * 32)
        self.assertEqual(st, 200, resp)
        subs = s.ews_control("GET", "/subscriptions?email=" + ALICE)
        self.assertEqual(len(subs), 1)
        path = "/api/ens/v1/ews/" + subs[0]["url"].rsplit("/", 1)[1]
        bomb = (b'<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/'
                b'envelope/"><s:Body><m:SendNotification xmlns:m="http://schemas.microsoft.com/'
                b'exchange/services/2006/messages"><m:Notification'
                + b"".join(b' a%d=""' % i for i in range(80000))
                + b'/></m:SendNotification></s:Body></s:Envelope>')
        self.assertGreater(len(bomb), 750 * 1024)
        results = []

        def send():
            c = http.client.HTTPSConnection("127.0.0.1", s.ports["public"], context=s.ctx,
                                            timeout=30)
            c.connect()
            t0 = time.monotonic()
            try:
                c.request("POST", path, bomb, {"Content-Type": "text/xml"})
                r = c.getresponse()
                r.read()
                results.append((r.status, time.monotonic() - t0))
            except (OSError, http.client.HTTPException) as e:
                results.append((repr(e), time.monotonic() - t0))
            c.close()
        threads = [threading.Thread(target=send) for _ in range(4)]
        for t in threads:
            t.start()
        alive = []
        while any(t.is_alive() for t in threads):
            t0 = time.monotonic()
            st, _, _ = s.public("GET", "/alive")
            alive.append((st, time.monotonic() - t0))
        for t in threads:
            t.join()
        self.assertEqual(len(results), 4)
        for st, took in results:
            self.assertEqual(st, 400)
            self.assertLess(took, 1.0, results)  # sending 869 KB included; libxml2 took 10 s
        for st, took in alive:
            self.assertEqual(st, 200)
            self.assertLess(took, 1.0, alive)
        self.assertEqual([x["id"] for x in s.ews_control("GET", "/subscriptions?email=" + ALICE)],
                         [subs[0]["id"]])


if __name__ == "__main__":
    ENSD, WORK = sys.argv[1], sys.argv[2]
    unittest.main(argv=sys.argv[:1] + sys.argv[3:], verbosity=2)
