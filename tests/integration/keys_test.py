#!/usr/bin/python3
"""Key rotation end to end (API.md 1.1 and 4, docs/keys.md): a real
redis-server, the Exchange and APNs simulators, and ensd.

After POST /admin/v1/keys/rotate the old keys keep working: a JWE sealed to
an old kid still enrolls, and a mailbox enrolled before the rotation (its
callback token sealed under the old sealing key) still gets its pushes, also
after an ensd restart. New enrollments use the new keys; ensctl rotates the
live server; other ensd on the same Redis follow.

Usage: keys_test.py ENSD_BINARY ENSCTL_BINARY WORKDIR"""
import base64
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import unittest

from jwcrypto import jwe, jwk

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tools"))
import ensstack  # noqa: E402

ENSD = ENSCTL = WORK = None
PASSWORD = "Rotate-Pa55word-51c2"


def token_skid(url):
    """The sealing key id inside a callback URL's token:
    version(1) | skid(4) | uid(16) | cred(8) | K(32), base64url."""
    tok = url.rsplit("/", 1)[1]
    raw = base64.urlsafe_b64decode(tok + "=" * (-len(tok) % 4))
    return raw[1:5].hex()


def kids(jwks, alg):
    return [k["kid"] for k in jwks["keys"] if k["alg"] == alg]


class KeyRotation(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if os.path.isdir(WORK):
            shutil.rmtree(WORK)
        cls.s = ensstack.Stack(WORK, ENSD, ENSCTL)
        cls.s.start()
        cls.tenant, cls.token = cls.s.create_tenant("Contoso")
        for who in ("alice", "bob", "carol", "dave"):
            cls.s.ews_control("POST", "/mailboxes",
                              {"email": who + "@contoso.com", "password": PASSWORD})
        cls.peers = {}
        cls.peer_admin = {}

    @classmethod
    def tearDownClass(cls):
        cls.s.stop()

    # ---- helpers ----

    def post_jwe(self, body):
        st, b, _ = self.s.public("POST", "/v1/subscribe", body.encode(), {
            "Authorization": "Bearer " + self.token, "Content-Type": "application/jose"})
        return st, json.loads(b) if b else None

    def seal_to(self, key, payload):
        """A JWE made by hand to one given public JWK (e.g. a key from before a rotation)."""
        hdr = {"alg": key["alg"], "enc": "A256GCM", "kid": key["kid"]}
        tok = jwe.JWE(json.dumps(payload).encode(), protected=json.dumps(hdr))
        tok.add_recipient(jwk.JWK(**key))
        return tok.serialize(compact=True)

    def enrollment(self, who, n):
        return self.s.enrollment(who + "@contoso.com", PASSWORD, device_id="dev-" + who,
                                 token_hex="%02x" % n * 32)

    def sub_url(self, who):
        subs = self.s.ews_control("GET", "/subscriptions?email=%s@contoso.com" % who)
        self.assertEqual(len(subs), 1, subs)
        return subs[0]["url"]

    def start_peer(self, name):
        """Another ensd on the same Redis and master key, on its own ports."""
        s = self.s
        with open(s.config) as f:
            cfg = json.load(f)
        pub, adm = ensstack.free_port(), ensstack.free_port()
        cfg["listen"] = {"public": "127.0.0.1:%d" % pub, "admin": "127.0.0.1:%d" % adm}
        cfg["http"]["public_url"] = "https://127.0.0.1:%d/api/ens" % pub
        path = os.path.join(s.dir, name + ".json")
        with open(path, "w") as f:
            json.dump(cfg, f, indent=2)
        s._spawn(name, [ENSD, "--config", path], env=dict(os.environ))
        self.peers[name] = pub
        self.peer_admin[name] = adm
        ensstack.wait_for(lambda: self.peer_get(name, "/ready")[0] == 200, 20, name + " /ready")

    def peer_get(self, name, path):
        url = "https://127.0.0.1:%d/api/ens%s" % (self.peers[name], path)
        st, b, _ = self.s._request("GET", url, ctx=self.s.ctx)
        return st, b

    def peer_jwks(self, name):
        st, b = self.peer_get(name, "/v1/keys")
        self.assertEqual(st, 200, b)
        return json.loads(b)

    def deliver(self, who, subject):
        self.s.ews_control("POST", "/deliver", {"email": who + "@contoso.com",
                                                "fromName": "Bob Jones",
                                                "fromEmail": "bob@fabrikam.com",
                                                "subject": subject})

    def wait_push(self, n, subject, timeout):
        """Waits for a push with this subject to the device with push token n."""
        path = "/3/device/" + "%02x" % n * 32
        return ensstack.wait_for(
            lambda: [p for p in self.s.pushes() if p["headers"][":path"] == path and
                     p["payload"]["aps"]["alert"].get("body") == subject],
            timeout, "push %r to device %d" % (subject, n))

    # ---- the test ----

    def test_rotation(self):
        s = self.s
        old = s.jwks()
        old_ec, old_rsa = kids(old, "ECDH-ES"), kids(old, "RSA-OAEP-256")
        self.assertEqual((len(old_ec), len(old_rsa)), (1, 1), old)
        old_key = {k["alg"]: k for k in old["keys"]}

        # Before the rotation: alice enrolls; a device seals two enrollments
        # to the current (soon old) keys and sends them later.
        st, resp = s.subscribe(self.token, self.enrollment("alice", 1))
        self.assertEqual(st, 200, resp)
        old_skid = token_skid(self.sub_url("alice"))
        late_ec = self.seal_to(old_key["ECDH-ES"], self.enrollment("carol", 3))
        late_rsa = self.seal_to(old_key["RSA-OAEP-256"], self.enrollment("dave", 4))

        # A second ensd, up before the rotation, must notice it by itself.
        self.start_peer("ensd-b")
        self.assertEqual(self.peer_jwks("ensd-b"), old)

        st, b, _ = s.admin("POST", "/admin/v1/keys/rotate", {})
        self.assertEqual(st, 200, b)
        rot = json.loads(b)
        self.assertEqual(rot["generation"], 2)
        self.assertEqual(len(rot["enrollment"]), 4, rot)
        self.assertNotEqual(rot["sealingKeyId"], old_skid)
        self.assertEqual(len(rot["sealingKeyId"]), 8)

        # The JWKS has the new keys first and the old ones still.
        new = s.jwks()
        ec, rsa = kids(new, "ECDH-ES"), kids(new, "RSA-OAEP-256")
        self.assertEqual((len(ec), len(rsa)), (2, 2), new)
        self.assertEqual((ec[1], rsa[1]), (old_ec[0], old_rsa[0]))
        self.assertNotIn(ec[0], old_ec)
        self.assertEqual(new["keys"][0]["kid"], ec[0])
        self.assertEqual([{"kid": k["kid"], "alg": k["alg"]} for k in new["keys"]],
                         rot["enrollment"])

        # JWEs to the old kids still enroll.
        st, resp = self.post_jwe(late_ec)
        self.assertEqual(st, 200, resp)
        st, resp = self.post_jwe(late_rsa)
        self.assertEqual(st, 200, resp)
        # Those enrolled after the rotation get tokens under the new sealing key.
        self.assertEqual(token_skid(self.sub_url("carol")), rot["sealingKeyId"])
        self.assertEqual(token_skid(self.sub_url("dave")), rot["sealingKeyId"])
        st, resp = s.subscribe(self.token, self.enrollment("bob", 2))  # to the new EC key
        self.assertEqual(st, 200, resp)
        self.assertEqual(token_skid(self.sub_url("bob")), rot["sealingKeyId"])
        # An unknown kid is still refused.
        bogus = dict(old_key["ECDH-ES"], kid="not-a-kid")
        st, resp = self.post_jwe(self.seal_to(bogus, self.enrollment("carol", 3)))
        self.assertEqual((st, resp["error"]), (400, "unknown_kid"))

        # alice's token was sealed under the old sealing key: it still opens.
        self.assertEqual(token_skid(self.sub_url("alice")), old_skid)
        self.deliver("alice", "After the rotation")
        self.wait_push(1, "After the rotation", 30)

        # ensctl rotates the live server.
        p = subprocess.run([ENSCTL, "--config", s.config, "--json", "keys", "rotate"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        rot3 = json.loads(p.stdout)
        self.assertEqual(rot3["generation"], 3)
        self.assertEqual(len(rot3["enrollment"]), 6)
        p = subprocess.run([ENSCTL, "--config", s.config, "keys", "rotate"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("keys rotated", p.stdout)
        latest = s.jwks()
        self.assertEqual(len(latest["keys"]), 8)

        # Redis holds the counter and one wrapped blob per generation, never a
        # key in the clear (a PKCS#8 DER starts 30 82 / 30 81 with version 0).
        self.assertEqual(s.redis_cli("--raw", "GET", "ens:keys:gen").strip(), "4")
        for g in (2, 3, 4):
            blob = subprocess.run(["redis-cli", "-p", str(s.ports["redis"]), "--raw", "GET",
                                   "ens:keys:ring.%d" % g], capture_output=True).stdout
            self.assertGreater(len(blob), 1000)
            self.assertNotIn(b"\x02\x01\x00\x30", blob)  # PKCS#8 version + AlgorithmIdentifier

        # A restarted ensd loads every generation; alice's old token still opens.
        code, _ = s.stop_ensd()
        self.assertEqual(code, 0)
        s.start_ensd()
        self.assertEqual(s.jwks(), latest)
        self.deliver("alice", "After the restart")
        self.wait_push(1, "After the restart", 90)  # Exchange retries within 30 s

        # An ensd started after the rotations serves the new JWKS at once...
        self.start_peer("ensd-c")
        self.assertEqual(self.peer_jwks("ensd-c"), latest)
        # ...and the one that was running picks them up within its check period.
        ensstack.wait_for(lambda: self.peer_jwks("ensd-b") == latest, 45,
                          "ensd-b to load the rotated keys")

        # Two rotations at once on two ensd each add their own generation.
        def rotate_at(port, out):
            url = "http://127.0.0.1:%d/admin/v1/keys/rotate" % port
            out.append(s._request("POST", url, b"{}", {
                "Authorization": "Bearer " + s.admin_token(),
                "Content-Type": "application/json"}))
        results = []
        threads = [threading.Thread(target=rotate_at, args=(port, results))
                   for port in (s.ports["admin"], self.peer_admin["ensd-b"])]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual([r[0] for r in results], [200, 200], results)
        gens = sorted(json.loads(r[1])["generation"] for r in results)
        self.assertEqual(gens, [5, 6])
        self.assertEqual(s.redis_cli("--raw", "GET", "ens:keys:gen").strip(), "6")
        final = s.jwks()
        if len(final["keys"]) != 12:  # ours committed first: the other shows up by the check
            final = ensstack.wait_for(lambda: (lambda j: j if len(j["keys"]) == 12 else None)(
                s.jwks()), 45, "ensd to load generation 6")
        ensstack.wait_for(lambda: self.peer_jwks("ensd-b") == final, 45, "ensd-b at generation 6")

        # All stop cleanly (ASan leak checks run at exit).
        code, _ = s.stop_ensd()
        self.assertEqual(code, 0)
        for name in ("ensd-b", "ensd-c"):
            proc = s.procs.pop(name)
            proc.terminate()
            self.assertEqual(proc.wait(timeout=10), 0, name)
        with open(os.path.join(WORK, "ensd.log"), "rb") as f:
            log = f.read()
        self.assertNotIn(PASSWORD.encode(), log)
        self.assertIn(b"generation=6", log)


if __name__ == "__main__":
    ENSD, ENSCTL, WORK = sys.argv[1], sys.argv[2], sys.argv[3]
    unittest.main(argv=[sys.argv[0], "-v"])
