#!/usr/bin/python3
"""End to end on real protocols: a real redis-server, the Exchange and APNs
simulators, and ensd, all on loopback.

Usage: e2e_test.py ENSD_BINARY WORKDIR"""
import json
import os
import shutil
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tools"))
import ensstack  # noqa: E402

ENSD = None
WORK = None
ENSCTL = None
CANARY = "Canary-Pa55word-7f3e91"  # must never be seen in Redis or the logs
EMAIL = "alice@contoso.com"


class EndToEnd(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if os.path.isdir(WORK):
            shutil.rmtree(WORK)
        cls.s = ensstack.Stack(WORK, ENSD)
        cls.s.start()
        cls.tenant, cls.token = cls.s.create_tenant("Contoso")
        cls.s.ews_control("POST", "/mailboxes", {"email": EMAIL, "password": CANARY})

    @classmethod
    def tearDownClass(cls):
        cls.s.stop()

    def enroll(self, **kw):
        payload = self.s.enrollment(EMAIL, CANARY, **kw)
        return self.s.subscribe(self.token, payload)

    def ews_ops(self, op):
        return [r for r in self.s.ews_control("GET", "/requests") if r.get("op") == op]

    def deliver(self, subject, sender="Bob Jones"):
        return self.s.ews_control("POST", "/deliver", {"email": EMAIL, "fromName": sender,
                                                       "fromEmail": "bob@fabrikam.com",
                                                       "subject": subject})

    def test_1_notification_flow_restart_and_secrets(self):
        s = self.s
        st, resp = self.enroll()
        self.assertEqual(st, 200, resp)
        self.assertEqual(resp["subscription"], {"state": "active"})
        uid, did = resp["userId"], resp["deviceId"]
        self.assertTrue(resp["deviceKey"])
        subs = s.ews_control("GET", "/subscriptions?email=" + EMAIL)
        self.assertEqual(len(subs), 1)
        url = subs[0]["url"]
        self.assertTrue(url.startswith("https://127.0.0.1:%d/api/ens/v1/ews/" % s.ports["public"]))
        self.assertLess(len(url), 2083)
        self.assertNotIn(CANARY, url)
        # Every Exchange request identifies us.
        for r in s.ews_control("GET", "/requests"):
            self.assertTrue(r["userAgent"].startswith("MailNotificationService/"), r)

        # Idempotent: the same enrollment again asks nothing of Exchange and
        # gives the same ids, without a second deviceKey.
        n_sub = len(self.ews_ops("Subscribe"))
        st, again = self.enroll()
        self.assertEqual(st, 200, again)
        self.assertEqual((again["userId"], again["deviceId"]), (uid, did))
        self.assertNotIn("deviceKey", again)
        self.assertEqual(len(self.ews_ops("Subscribe")), n_sub)

        # A new mail becomes exactly this push.
        self.deliver("Lunch on Friday?")
        push = s.wait_pushes(1)[0]
        self.assertEqual(push["headers"][":path"], "/3/device/" + "ab" * 32)
        self.assertEqual(push["headers"][":method"], "POST")
        h = push["headers"]
        self.assertEqual(h["apns-push-type"], "alert")
        self.assertEqual(h["apns-priority"], "10")
        self.assertEqual(h["apns-topic"], "com.example.mail")
        self.assertEqual(push["payload"], {
            "aps": {"alert": {"title": "Bob Jones", "body": "Lunch on Friday?"}, "badge": 1,
                    "sound": "default", "mutable-content": 1, "thread-id": uid},
            "ens": {"type": "new-mail", "userId": uid}})

        # ensd stops cleanly on SIGTERM, within 5 s.
        code, took = s.stop_ensd()
        self.assertEqual(code, 0)
        self.assertLess(took, 5.0)

        # While it is down, mail arrives; after the restart the same callback
        # URL still opens and the next mail is pushed.
        s.start_ensd()
        self.deliver("Second mail", sender="Carol")
        pushes = s.wait_pushes(2, timeout=90)  # Exchange retries after 30 s at worst
        titles = [p["payload"]["aps"]["alert"]["title"] for p in pushes]
        self.assertIn("Carol", titles)
        second = next(p for p in pushes if p["payload"]["aps"]["alert"]["title"] == "Carol")
        self.assertEqual(second["payload"]["aps"]["alert"]["body"], "Second mail")
        self.assertEqual(second["payload"]["aps"]["badge"], 2)
        self.assertEqual(len(s.ews_control("GET", "/subscriptions?email=" + EMAIL)), 1)

        # The password is nowhere in Redis (live values and the AOF) nor in any log.
        s.redis_cli("BGREWRITEAOF")
        time.sleep(1.0)
        keys = [k for k in s.redis_cli("--raw", "KEYS", "*").split("\n") if k]
        self.assertTrue(any(k.startswith("ens:u:{") for k in keys), keys)  # the mailbox is there
        values = [subprocess.run(["redis-cli", "-p", str(s.ports["redis"]), "--raw", "DUMP", k],
                                 capture_output=True).stdout for k in keys]
        self.assertTrue(values)
        for v in values:
            self.assertNotIn(CANARY.encode(), v)
        blobs = b""
        for root, _, files in os.walk(os.path.join(WORK, "redis")):
            for f in files:
                with open(os.path.join(root, f), "rb") as fh:
                    blobs += fh.read()
        self.assertIn(b"ens:", blobs)  # the AOF really holds our data
        self.assertNotIn(CANARY.encode(), blobs)
        for name in ("ensd",):
            with open(os.path.join(WORK, name + ".log"), "rb") as fh:
                log = fh.read()
            self.assertNotIn(CANARY.encode(), log)
            self.assertNotIn(url.rsplit("/", 1)[1].encode(), log)  # nor the callback token

    def test_2_device_api_errors(self):
        s = self.s
        payload = s.enrollment(EMAIL, CANARY)
        st, body = s.subscribe("ens_not-a-token", payload)
        self.assertEqual((st, body["error"]), (401, "unauthorized"))
        st, b, _ = s.public("POST", "/v1/subscribe", b"not a jwe", {
            "Authorization": "Bearer " + self.token, "Content-Type": "application/jose"})
        self.assertEqual((st, json.loads(b)["error"]), (400, "bad_jwe"))
        st, body = s.subscribe(self.token, s.enrollment(EMAIL, CANARY, iat=int(time.time()) - 3600))
        self.assertEqual((st, body["error"]), (400, "stale_request"))
        bad = s.enrollment(EMAIL, CANARY)
        bad["device"]["platform"] = "symbian"
        st, body = s.subscribe(self.token, bad)
        self.assertEqual((st, body["error"]), (422, "invalid_field"))
        self.assertIn("device.platform", body["message"])
        # RSA-OAEP-256 with A128GCM is accepted too (and reaches validation).
        st, body = s.subscribe(self.token, bad, alg="RSA-OAEP-256", enc="A128GCM")
        self.assertEqual((st, body["error"]), (422, "invalid_field"))
        # Exchange refuses a wrong password: 502 ews_auth_failed.
        s.ews_control("POST", "/mailboxes", {"email": "mallory@contoso.com", "password": "right"})
        st, body = s.subscribe(self.token, s.enrollment("mallory@contoso.com", "wrong"))
        self.assertEqual((st, body["error"]), (502, "ews_auth_failed"))
        # No error answer echoes the credentials.
        self.assertNotIn("wrong", json.dumps(body))
        st, b, _ = s.public("GET", "/nope")
        self.assertEqual(st, 404)
        st, b, _ = s.public("GET", "/alive")
        self.assertEqual(st, 200)
        self.assertEqual(json.loads(b)["status"], "ok")

    def test_3_callbacks_that_do_not_open_get_unsubscribe(self):
        s = self.s
        soap = open(os.path.join(HERE, "..", "data", "soap", "notification_soap11.xml"), "rb").read() \
            if os.path.exists(os.path.join(HERE, "..", "data", "soap", "notification_soap11.xml")) else None
        if soap is None:
            soap = (b'<?xml version="1.0"?><soap11:Envelope xmlns:soap11="http://schemas.xmlsoap.org/soap/envelope/">'
                    b'<soap11:Body><m:SendNotification xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" '
                    b'xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"><m:ResponseMessages>'
                    b'<m:SendNotificationResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>'
                    b'<m:Notification><t:SubscriptionId>x</t:SubscriptionId><t:PreviousWatermark>w</t:PreviousWatermark>'
                    b'<t:MoreEvents>false</t:MoreEvents><t:StatusEvent><t:Watermark>w2</t:Watermark></t:StatusEvent>'
                    b'</m:Notification></m:SendNotificationResponseMessage></m:ResponseMessages></m:SendNotification>'
                    b'</soap11:Body></soap11:Envelope>')
        hdr = {"Content-Type": "text/xml; charset=utf-8"}
        # A token that does not parse, and a well-formed one that opens nothing.
        for tok in ("garbage", "A" * 82):
            st, b, _ = s.public("POST", "/v1/ews/" + tok, soap, hdr)
            self.assertEqual(st, 200)
            self.assertIn(b"<m:SubscriptionStatus>Unsubscribe</m:SubscriptionStatus>", b)
            self.assertLess(len(b), 1024)
        st, b, _ = s.public("POST", "/v1/ews/garbage", b"<not-soap", hdr)
        self.assertIn(st, (200, 400))  # a bad token is refused before the body matters


    def test_4_admin_inspect_block_unsubscribe(self):
        s = self.s
        st, resp = self.enroll(device_id="phone-4", token_hex="cd" * 32)
        self.assertEqual(st, 200, resp)
        uid, did, key = resp["userId"], resp["deviceId"], resp["deviceKey"]

        # Inspection by address and by id shows the live state.
        st, b, _ = s.admin("GET", "/admin/v1/users?email=alice%40contoso.com")
        self.assertEqual(st, 200, b)
        state = json.loads(b)
        self.assertEqual(state["userId"], uid)
        self.assertEqual(state["email"], EMAIL)
        self.assertEqual(state["tenantId"], self.tenant)
        self.assertEqual(state["subscription"]["state"], "active")
        self.assertTrue(state["subscription"]["id"])
        self.assertIn(did, [d["deviceId"] for d in state["devices"]])
        for d in state["devices"]:
            self.assertEqual(set(d) >= {"deviceId", "platform", "environment", "blocked", "lastPush"}, True)
        st, b, _ = s.admin("GET", "/admin/v1/users/" + uid)
        self.assertEqual((st, json.loads(b)["userId"]), (200, uid))
        self.assertEqual(s.admin("GET", "/admin/v1/users?email=nobody%40contoso.com")[0], 404)
        self.assertEqual(s.admin("GET", "/admin/v1/users/" + "A" * 22)[0], 404)
        self.assertEqual(s.admin("GET", "/admin/v1/users/" + uid, token="wrong-admin-token")[0], 401)

        # ensctl against the live server.
        out = subprocess.run([ENSCTL, "--config", s.config, "user", EMAIL], capture_output=True,
                             text=True, timeout=20)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn(did, out.stdout)
        self.assertIn("active", out.stdout)
        out = subprocess.run([ENSCTL, "--config", s.config, "--json", "user", uid], capture_output=True,
                             text=True, timeout=20)
        self.assertEqual(json.loads(out.stdout)["userId"], uid)

        # Block every device: no re-registration, and the subscription ends.
        for d in state["devices"]:
            st, b, _ = s.admin("POST", "/admin/v1/devices/%s/block" % d["deviceId"])
            self.assertEqual((st, json.loads(b)["blocked"]), (200, True))
        st, body = self.enroll(device_id="phone-4", token_hex="cd" * 32)
        self.assertEqual((st, body["error"]), (403, "device_blocked"))
        st, b, _ = s.admin("GET", "/admin/v1/users/" + uid)
        self.assertEqual(json.loads(b)["subscription"]["state"], "blocked")
        self.deliver("Nobody should see this")
        ensstack.wait_for(lambda: s.ews_control("GET", "/subscriptions?email=" + EMAIL) == [], 60,
                          "Exchange to drop the subscription after Unsubscribe")

        # Unblock, check in: a new subscription from the last watermark.
        for d in state["devices"]:
            self.assertEqual(s.admin("POST", "/admin/v1/devices/%s/unblock" % d["deviceId"])[0], 200)
        st, body = s.subscribe(self.token, s.enrollment(EMAIL, CANARY, device_id="phone-4",
                                                        token_hex="cd" * 32), path="/v1/checkin")
        self.assertEqual((st, body["subscription"]["state"]), (200, "active"))
        self.assertEqual(len(s.ews_control("GET", "/subscriptions?email=" + EMAIL)), 1)

        # Unsubscribe: wrong key 403, right key 200, then 404.
        hdr = {"Authorization": "Bearer " + self.token, "Content-Type": "application/json"}
        bad = json.dumps({"deviceId": did, "deviceKey": "x" * 43}).encode()
        st, b, _ = s.public("POST", "/v1/unsubscribe", bad, hdr)
        self.assertEqual((st, json.loads(b)["error"]), (403, "forbidden"))
        good = json.dumps({"deviceId": did, "deviceKey": key}).encode()
        st, b, _ = s.public("POST", "/v1/unsubscribe", good, hdr)
        self.assertEqual((st, json.loads(b)), (200, {"removed": True}))
        st, b, _ = s.public("POST", "/v1/unsubscribe", good, hdr)
        self.assertEqual(st, 404)
        st, b, _ = s.public("POST", "/v1/unsubscribe", good, {"Content-Type": "application/json"})
        self.assertEqual(st, 401)
        st, b, _ = s.public("POST", "/v1/unsubscribe", b"{}", hdr)
        self.assertEqual((st, json.loads(b)["error"]), (422, "invalid_field"))
        # The API token is judged before the body: a wrong one is 401 whatever the body
        # (API.md 1.3), and a well-formed deviceId nobody has is 404.
        wrong = {"Authorization": "Bearer " + "w" * 43, "Content-Type": "application/json"}
        for body in (b"not json", b"{}", good):
            st, b, _ = s.public("POST", "/v1/unsubscribe", body, wrong)
            self.assertEqual((st, json.loads(b)["error"]), (401, "unauthorized"), body)
        nobody = json.dumps({"deviceId": "A" * 22, "deviceKey": key}).encode()
        st, b, _ = s.public("POST", "/v1/unsubscribe", nobody, hdr)
        self.assertEqual((st, json.loads(b)["error"]), (404, "not_found"))

        # The operator removes the other device: the mailbox has none, Exchange is told Unsubscribe.
        others = [d["deviceId"] for d in state["devices"] if d["deviceId"] != did]
        for o in others:
            st, b, _ = s.admin("DELETE", "/admin/v1/devices/" + o)
            self.assertEqual((st, json.loads(b)), (200, {"removed": True}))
            self.assertEqual(s.admin("DELETE", "/admin/v1/devices/" + o)[0], 404)
        st, b, _ = s.admin("GET", "/admin/v1/users/" + uid)
        self.assertEqual(json.loads(b)["devices"], [])
        self.deliver("Also unseen")
        ensstack.wait_for(lambda: s.ews_control("GET", "/subscriptions?email=" + EMAIL) == [], 60,
                          "Exchange to drop the subscription of a mailbox without devices")

        # The counters moved.
        st, b, _ = s.admin("GET", "/metrics")
        text = b.decode()
        self.assertIn('ens_pushes_total{provider="apns",outcome="ok"}', text)
        def metric(prefix):
            rows = [l for l in text.splitlines() if l.startswith(prefix)]
            self.assertTrue(rows, prefix)
            return float(rows[0].split()[-1])
        self.assertGreaterEqual(metric('ens_callbacks_total{result="unsubscribe"}'), 2)
        self.assertGreaterEqual(metric('ens_ews_calls_total{op="Subscribe",outcome="ok"}'), 1)  # since the restart
        self.assertGreaterEqual(metric('ens_ews_calls_total{op="GetItem",outcome="ok"}'), 1)
        # a wrong password is refused by the ownership check, before any Subscribe
        self.assertGreaterEqual(metric('ens_ews_calls_total{op="GetFolder",outcome="auth_failed"}'), 1)
        # callback to push: every new-mail push since the restart was measured, in under 30 s
        self.assertGreaterEqual(metric("ens_callback_to_push_seconds_count"), 1)
        self.assertEqual(metric('ens_callback_to_push_seconds_bucket{le="30"}'),
                         metric("ens_callback_to_push_seconds_count"))
        self.assertGreaterEqual(metric("ens_actors_resident"), 1)
        states = sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith("ens_subscriptions{"))
        self.assertGreaterEqual(states, 1)
        time.sleep(1.2)  # Redis figures are copied once a second
        text = s.admin("GET", "/metrics")[1].decode()
        self.assertGreater(metric("ens_redis_round_trips_total"), 0)

    def test_5_every_remaining_status_code(self):
        s = self.s
        auth = {"Authorization": "Bearer " + self.token, "Content-Type": "application/jose"}
        good = s.enrollment(EMAIL, CANARY, device_id="phone-5", token_hex="ef" * 32)
        # 400 bad_request: not application/jose
        st, b, _ = s.public("POST", "/v1/subscribe", s.seal(good).encode(),
                            {"Authorization": "Bearer " + self.token, "Content-Type": "text/plain"})
        self.assertEqual((st, json.loads(b)["error"]), (400, "bad_request"))
        # 400 unknown_kid: sealed to a key the server never had
        from jwcrypto import jwe, jwk
        stranger = jwk.JWK.generate(kty="EC", crv="P-256")
        tok = jwe.JWE(json.dumps(good).encode(),
                      protected=json.dumps({"alg": "ECDH-ES", "enc": "A256GCM", "kid": "not-ours"}))
        tok.add_recipient(stranger)
        st, b, _ = s.public("POST", "/v1/subscribe", tok.serialize(compact=True).encode(), auth)
        self.assertEqual((st, json.loads(b)["error"]), (400, "unknown_kid"))
        # 502 autodiscover_failed: no ewsUrl
        p = dict(good)
        del p["ewsUrl"]
        st, body = s.subscribe(self.token, p)
        self.assertEqual((st, body["error"]), (502, "autodiscover_failed"))
        # 502 ews_unreachable: nothing listens there
        st, body = s.subscribe(self.token, s.enrollment(EMAIL, CANARY, device_id="phone-5",
                               ews_url="https://127.0.0.1:%d/EWS/Exchange.asmx" % ensstack.free_port()))
        self.assertEqual((st, body["error"]), (502, "ews_unreachable"))
        # 502 ews_error: Exchange answers with a fault
        s.ews_control("POST", "/mailboxes", {"email": "bob@contoso.com", "password": "pw-bob"})
        s.ews_control("POST", "/fail", {"count": 1, "status": 500})
        st, body = s.subscribe(self.token, s.enrollment("bob@contoso.com", "pw-bob", device_id="bob-1"))
        self.assertEqual((st, body["error"]), (502, "ews_error"))
        # 404 checkin of a device never enrolled
        st, body = s.subscribe(self.token, s.enrollment("bob@contoso.com", "pw-bob", device_id="bob-2"),
                               path="/v1/checkin")
        self.assertEqual((st, body["error"]), (404, "not_found"))
        # 405 wrong method, with the methods the path has in Allow (RFC 9110 15.5.6)
        st, _, h = s.public("GET", "/v1/subscribe")
        self.assertEqual((st, h.get("Allow")), (405, "POST"))
        st, _, h = s.public("POST", "/alive", b"{}")
        self.assertEqual((st, h.get("Allow")), (405, "GET, HEAD"))
        # HEAD wherever GET is served: the same head, no body; a Date on every answer
        st, b, h = s.public("HEAD", "/alive")
        self.assertEqual((st, b), (200, b""))
        self.assertGreater(int(h["Content-Length"]), 0)
        self.assertRegex(h.get("Date", ""), r"^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} "
                                            r"\d{2}:\d{2}:\d{2} GMT$")
        self.assertIn("Date", s.public("GET", "/nowhere")[2])

        # Callback: 400 malformed XML behind a token that parses; 413 over http.max_body_bytes.
        import base64
        tok = base64.urlsafe_b64encode(b"\x01" + b"\x00" * 60).rstrip(b"=").decode()
        st, b, _ = s.public("POST", "/v1/ews/" + tok, b"<not-xml", {"Content-Type": "text/xml"})
        self.assertEqual(st, 400)
        st, b, _ = s.public("POST", "/v1/ews/" + tok, b"<a/>" * (300 * 1024), {"Content-Type": "text/xml"})
        self.assertEqual(st, 413)

        # Admin: 422 on a bad tenant, 404 on tokens for an unknown tenant, 404 unknown device.
        st, b, _ = s.admin("POST", "/admin/v1/tenants", {"name": "X", "previewCap": "everything"})
        self.assertEqual((st, json.loads(b)["error"]), (422, "invalid_field"))
        self.assertEqual(s.admin("POST", "/admin/v1/tenants/%s/tokens" % ("B" * 22))[0], 404)
        self.assertEqual(s.admin("POST", "/admin/v1/devices/%s/block" % ("C" * 22))[0], 404)
        self.assertEqual(s.admin("GET", "/nothing-here")[0], 404)

        # 503 while Redis is down, for the device API and /ready; back to 200 when it returns.
        r = s.procs.pop("redis")
        r.terminate()
        r.wait()
        time.sleep(0.5)
        self.assertEqual(s.public("GET", "/ready")[0], 503)
        st, body = s.subscribe(self.token, good)
        self.assertEqual((st, body["error"]), (503, "unavailable"))
        s.start_redis()
        ensstack.wait_for(lambda: s.public("GET", "/ready")[0] == 200, 15, "ready again")
        st, body = s.subscribe(self.token, good)
        self.assertEqual(st, 200, body)

    def test_6_device_api_over_http2(self):
        s = self.s
        st, b, alpn = s.public_h2("GET", "/alive")
        self.assertEqual((alpn, st, json.loads(b)["status"]), ("h2", 200, "ok"))
        payload = s.enrollment(EMAIL, CANARY, device_id="phone-h2", token_hex="12" * 32)
        st, b, _ = s.public_h2("POST", "/v1/subscribe", s.seal(payload).encode(), {
            "authorization": "Bearer " + self.token, "content-type": "application/jose"})
        self.assertEqual(st, 200, b)
        self.assertEqual(json.loads(b)["subscription"]["state"], "active")
        st, b, _ = s.public_h2("GET", "/no-such-thing")
        self.assertEqual((st, json.loads(b)["error"]), (404, "not_found"))

    def test_7_lost_notification_is_replayed(self):
        """A notification lost between Exchange and ensd shows as a PreviousWatermark
        gap on the next one; ensd re-subscribes from its last watermark and the
        lost mail is still pushed, exactly once, as is the one that revealed it."""
        s = self.s
        carol = "carol@contoso.com"
        s.ews_control("POST", "/mailboxes", {"email": carol, "password": "pw-carol"})
        st, resp = s.subscribe(self.token, s.enrollment(carol, "pw-carol", device_id="carol-1",
                                                        token_hex="77" * 32))
        self.assertEqual(st, 200, resp)
        # wait for the first status event so the watermark chain has started
        ensstack.wait_for(lambda: any(x["delivered"] >= 1 for x in
                                      s.ews_control("GET", "/subscriptions?email=" + carol)), 20,
                          "the first status event")
        s.ews_control("POST", "/lose", {"email": carol})
        s.ews_control("POST", "/deliver", {"email": carol, "fromName": "Dave", "fromEmail": "d@x.com",
                                            "subject": "Lost on the way"})
        time.sleep(0.5)
        s.ews_control("POST", "/deliver", {"email": carol, "fromName": "Dave", "fromEmail": "d@x.com",
                                            "subject": "Reveals the gap"})

        def carol_subjects():
            return [p["payload"]["aps"]["alert"].get("body") for p in s.pushes()
                    if p["headers"][":path"].endswith("77" * 32)]
        ensstack.wait_for(lambda: "Lost on the way" in carol_subjects(), 30, "the replayed mail")
        time.sleep(1.0)  # any duplicate would arrive by now
        subjects = carol_subjects()
        self.assertEqual(subjects.count("Lost on the way"), 1, subjects)
        self.assertEqual(subjects.count("Reveals the gap"), 1, subjects)

    def test_8_android_devices_get_fcm_data_messages(self):
        s = self.s
        erin = "erin@contoso.com"
        token = "fcm-token_" + "x" * 40 + ":APA91b"
        s.ews_control("POST", "/mailboxes", {"email": erin, "password": "pw-erin"})
        st, resp = s.subscribe(self.token, s.enrollment(erin, "pw-erin", device_id="pixel-1",
                                                        token_hex=token, platform="android",
                                                        app_id="com.example.mail.android"))
        self.assertEqual(st, 200, resp)
        s.ews_control("POST", "/deliver", {"email": erin, "fromName": "Frank", "fromEmail": "f@x.com",
                                            "subject": "Android says hi"})
        msgs = ensstack.wait_for(lambda: s.fcm_control("GET", "/messages") or None, 20, "an FCM message")
        m = msgs[-1]
        self.assertEqual(m["path"], "/v1/projects/%s/messages:send" % ensstack.FCM_PROJECT)
        self.assertEqual(m["message"], {
            "token": token,
            "data": {"type": "new-mail", "title": "Frank", "body": "Android says hi", "badge": "1",
                     "userId": resp["userId"]},
            "android": {"priority": "high"}})
        # FCM says the token is gone: the device is removed.
        s.fcm_control("POST", "/unregister", {"token": token})
        s.ews_control("POST", "/deliver", {"email": erin, "fromName": "Frank", "fromEmail": "f@x.com",
                                            "subject": "Nobody left"})
        ensstack.wait_for(lambda: json.loads(s.admin("GET", "/admin/v1/users/" + resp["userId"])[1])["devices"] == [],
                          20, "the unregistered Android device to be removed")


if __name__ == "__main__":
    ENSD, WORK = sys.argv[1], sys.argv[2]
    ENSCTL = sys.argv[3] if len(sys.argv) > 3 else os.path.join(os.path.dirname(ENSD), "ensctl")
    unittest.main(argv=[sys.argv[0], "-v"])
