#!/usr/bin/python3
"""apns_sim: an APNs provider-API simulator for tests (push.md sections 1 and 6).

HTTP/2 over TLS (ALPN h2) on --listen, validating requests as strictly as Apple
does: method, path, topic, push type, priority, apns-id, ES256 provider token
(kid, signature, iss, iat age) and payload. Accepted pushes are recorded.

Like APNs it advertises SETTINGS_MAX_CONCURRENT_STREAMS 1 on a new connection
and raises it after the first accepted push (push.md 1.1).

Control API, plain HTTP/1.1 on --control:
  GET /pushes            -> JSON list of accepted pushes
  DELETE /pushes         -> clear the list
  GET /stats             -> {"connections":N,"max_concurrent":N,"rejected":N}
  POST /fail      {"count":N,"status":503,"reason":"ServiceUnavailable"}
                         -> the next N valid pushes get that answer
  POST /fail      {"seconds":S,"status":503,"reason":"ServiceUnavailable"}
                         -> every valid push for the next S seconds gets it (an outage)
  POST /unregister {"token":hex} -> later pushes to it get 410 Unregistered
  POST /delay     {"ms":N} -> hold every answer N ms (to observe multiplexing)

Prints "apns_sim ready" on stdout once both ports listen.
Needs python3-h2 and python3-cryptography (Debian packages).
"""
import argparse
import asyncio
import json
import re
import sys
import time
import uuid

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

import simlib

MAX_PAYLOAD = 4096
PUSH_TYPES = {"alert", "background", "voip", "complication", "fileprovider", "mdm",
              "liveactivity", "location", "pushtotalk", "widgets", "controls"}
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
HEX_RE = re.compile(r"^[0-9a-fA-F]+$")
JWT_MAX_AGE_S = 3600
STREAMS_AFTER_AUTH = 1000


class State(simlib.BaseState):
    def __init__(self):
        super().__init__()
        self.pushes = []
        self.fail = []  # [(status, reason)], consumed in order
        self.fail_until = 0.0  # monotonic time an outage ends
        self.fail_answer = (503, "ServiceUnavailable")
        self.unregistered = {}  # token -> timestamp ms
        self.delay_ms = 0


class Verifier:
    def __init__(self, team_id, key_id, pub):
        self.team_id = team_id
        self.key_id = key_id
        self.pub = pub

    def check(self, auth):
        """Returns None when the token is good, else the 403 reason."""
        if auth is None:
            return "MissingProviderToken"
        if not auth.startswith("bearer "):
            return "InvalidProviderToken"
        try:
            header, claims, sig, signed = simlib.decode_jwt(auth[len("bearer "):])
        except simlib.JwtError:
            return "InvalidProviderToken"
        if header.get("alg") != "ES256" or header.get("kid") != self.key_id or len(sig) != 64:
            return "InvalidProviderToken"
        r = int.from_bytes(sig[:32], "big")
        s = int.from_bytes(sig[32:], "big")
        try:
            self.pub.verify(encode_dss_signature(r, s), signed, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return "InvalidProviderToken"
        if claims.get("iss") != self.team_id:
            return "InvalidProviderToken"
        iat = claims.get("iat")
        if not isinstance(iat, int) or isinstance(iat, bool):
            return "InvalidProviderToken"
        if time.time() - iat > JWT_MAX_AGE_S:
            return "ExpiredProviderToken"
        return None


class H2Protocol(simlib.H2Protocol):
    NAME = "apns_sim"
    MAX_PAYLOAD = MAX_PAYLOAD
    BODY_CAP = 2 * MAX_PAYLOAD
    INITIAL_SETTINGS = {simlib.MAX_CONCURRENT_STREAMS: 1}

    def __init__(self, state, verifier):
        super().__init__(state)
        self.verifier = verifier
        self.authed = False

    def on_request(self, sid, st):
        st["concurrent"] = len(self.streams)
        asyncio.get_event_loop().create_task(self.answer(sid, st))

    async def answer(self, sid, st):
        status, reason, apns_id = self.judge(st)
        delay = self.state.delay_ms
        if delay:
            await asyncio.sleep(delay / 1000.0)
        headers = [("apns-id", apns_id)]
        body = b""
        if status != 200:
            err = {"reason": reason}
            if status == 410:
                err["timestamp"] = self.state.unregistered.get(st.get("token"), int(time.time() * 1000))
            body = json.dumps(err).encode()
            headers.append(("content-type", "application/json"))
            headers.append(("content-length", str(len(body))))
        if not self.send_response(sid, status, headers, body):
            return
        if status == 200 and not self.authed:
            self.authed = True
            self.conn.update_settings({simlib.MAX_CONCURRENT_STREAMS: STREAMS_AFTER_AUTH})
        self.flush()

    def judge(self, st):
        """Returns (status, reason, apns_id) and records accepted pushes."""
        hdrs = {}
        dup = False
        for k, v in st["headers"]:
            if k in hdrs and not k.startswith(":"):
                dup = True
            hdrs[k] = v
        apns_id = hdrs.get("apns-id") or str(uuid.uuid4())

        def reject(status, reason):
            self.state.count_rejected()
            return status, reason, apns_id

        if dup:
            return reject(400, "DuplicateHeaders")
        if hdrs.get(":method") != "POST":
            return reject(405, "MethodNotAllowed")
        path = hdrs.get(":path", "")
        if not path.startswith("/3/device/"):
            return reject(404, "BadPath")
        token = path[len("/3/device/"):]
        st["token"] = token
        if not token:
            return reject(400, "MissingDeviceToken")
        if len(token) % 2 or not HEX_RE.match(token) or len(token) != 64:
            return reject(400, "BadDeviceToken")
        if "apns-id" in hdrs and not UUID_RE.match(hdrs["apns-id"]):
            return reject(400, "BadMessageId")
        if "apns-collapse-id" in hdrs and not 0 < len(hdrs["apns-collapse-id"].encode()) <= 64:
            return reject(400, "BadCollapseId")
        if "apns-expiration" in hdrs and not hdrs["apns-expiration"].isdigit():
            return reject(400, "BadExpirationDate")
        if not hdrs.get("apns-topic"):
            return reject(400, "MissingTopic")
        if "apns-push-type" in hdrs and hdrs["apns-push-type"] not in PUSH_TYPES:
            return reject(400, "InvalidPushType")
        if "apns-priority" in hdrs and hdrs["apns-priority"] not in ("1", "5", "10"):
            return reject(400, "BadPriority")
        bad_token = self.verifier.check(hdrs.get("authorization"))
        if bad_token:
            return reject(403, bad_token)
        body = bytes(st["body"])
        if not body:
            return reject(400, "PayloadEmpty")
        if len(body) > MAX_PAYLOAD or st.get("too_big"):
            return reject(413, "PayloadTooLarge")
        try:
            doc = json.loads(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return reject(400, "BadPayload")  # Apple answers 400 for malformed JSON
        if not isinstance(doc, dict):
            return reject(400, "BadPayload")
        with self.state.lock:
            if self.state.fail:
                status, reason = self.state.fail.pop(0)
                self.state.rejected += 1
                return status, reason, apns_id
            if time.monotonic() < self.state.fail_until:
                self.state.rejected += 1
                return self.state.fail_answer + (apns_id,)
            if token.lower() in self.state.unregistered:
                self.state.rejected += 1
                return 410, "Unregistered", apns_id
            self.state.pushes.append({
                "conn": self.conn_id,
                "concurrent": st.get("concurrent", 1),
                "headers": {k: v for k, v in st["headers"] if k != "authorization"},
                "authorization": hdrs.get("authorization", ""),
                "token": token,
                "at": time.time(),
                "payload": doc,
                "raw": body.decode("utf-8"),
            })
        return 200, "", apns_id


def control_routes(state):
    """The control API (see the module docstring); runs under state.lock."""

    def stats(_):
        return {"connections": state.connections, "max_concurrent": state.max_concurrent,
                "rejected": state.rejected}

    def clear(_):
        state.pushes.clear()
        return {}

    def fail(req):
        answer = (int(req.get("status", 503)), str(req.get("reason", "ServiceUnavailable")))
        if "seconds" in req:
            state.fail_answer = answer
            state.fail_until = time.monotonic() + float(req["seconds"])
        else:
            state.fail.extend([answer] * int(req.get("count", 1)))
        return {}

    def unregister(req):
        state.unregistered[str(req["token"]).lower()] = int(time.time() * 1000)
        return {}

    def delay(req):
        state.delay_ms = int(req.get("ms", 0))
        return {}

    return {("GET", "/pushes"): lambda _: state.pushes,
            ("GET", "/stats"): stats,
            ("DELETE", "/pushes"): clear,
            ("POST", "/fail"): fail,
            ("POST", "/unregister"): unregister,
            ("POST", "/delay"): delay}


def load_pub(args):
    if args.key_pub:
        with open(args.key_pub, "rb") as f:
            return serialization.load_pem_public_key(f.read())
    if args.p8:
        with open(args.p8, "rb") as f:
            return serialization.load_pem_private_key(f.read(), password=None).public_key()
    sys.exit("apns_sim: --key-pub or --p8 is required")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", required=True, help="host:port for HTTP/2 over TLS")
    ap.add_argument("--control", required=True, help="host:port for the control API")
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--team-id", required=True)
    ap.add_argument("--key-id", required=True)
    ap.add_argument("--key-pub", help="PEM public key of the provider token key")
    ap.add_argument("--p8", help="or the .p8 private key itself")
    args = ap.parse_args()
    verifier = Verifier(args.team_id, args.key_id, load_pub(args))
    state = State()
    simlib.run("apns_sim", args.listen, simlib.tls_server_context(args.cert, args.key, "h2"),
               lambda: H2Protocol(state, verifier),
               [(args.control, simlib.control_handler(state, control_routes(state)), None)])


if __name__ == "__main__":
    main()
