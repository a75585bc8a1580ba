#!/usr/bin/python3
"""fcm_sim: an FCM HTTP v1 + Google OAuth2 simulator for tests (push.md sections 2 and 6).

FCM: HTTP/2 over TLS (ALPN h2) on --listen, POST /v1/projects/<project>/messages:send,
validated strictly: a bearer token the token endpoint issued and that has not
expired (else 401 UNAUTHENTICATED), the right project (else 404), a JSON object
body with message.token and message.data of string values (else 400
INVALID_ARGUMENT), android.priority in {high, normal}. Tokens that are not
registration-token shaped get 400 INVALID_ARGUMENT "not a valid FCM registration
token"; unregistered ones 404 UNREGISTERED with the FcmError detail. Accepted
messages are recorded.

OAuth: HTTPS (HTTP/1.1) on --token-listen, POST /token with
grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<RS256 JWT>.
The assertion is verified against the service account's public key (alg, iss,
scope, aud, iat/exp with exp - iat <= 3600); the answer is
{"access_token","expires_in":3599,"token_type":"Bearer"}.

Control API, plain HTTP/1.1 on --control:
  GET /messages          -> JSON list of accepted messages
  DELETE /messages       -> clear the list
  GET /stats             -> {"connections","tokens_issued","rejected","unauthenticated"}
  POST /fail {"count":N,"status":503,"errorStatus":"UNAVAILABLE","retryAfter":S}
                         -> the next N valid messages get that error
  POST /unregister {"token":T} -> later messages to T get 404 UNREGISTERED
  POST /expire-tokens    -> every access token issued so far stops working

Prints "fcm_sim ready" on stdout once all ports listen.
Helper: fcm_sim.py --make-service-account FILE --project-id P [--token-uri URL]
writes a test service-account JSON with a fresh RSA-2048 key.
Needs python3-h2 and python3-cryptography (Debian packages).
"""
import argparse
import json
import os
import re
import secrets
import sys
import time
import urllib.parse

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

import simlib

MAX_PAYLOAD = 4096
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_LIFE_S = 3599
ASSERTION_MAX_LIFE_S = 3600
CLOCK_SKEW_S = 300
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
REG_TOKEN_RE = re.compile(r"^[A-Za-z0-9_:.-]{16,4096}$")
PATH_RE = re.compile(r"^/v1/projects/([^/]+)/messages:send$")
# errorCode -> (HTTP status, canonical error.status), per Firebase's error table.
ERRORS = {
    "UNSPECIFIED_ERROR": (500, "UNKNOWN"),
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT"),
    "UNREGISTERED": (404, "NOT_FOUND"),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED"),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED"),
    "UNAVAILABLE": (503, "UNAVAILABLE"),
    "INTERNAL": (500, "INTERNAL"),
    "THIRD_PARTY_AUTH_ERROR": (401, "UNAUTHENTICATED"),
}


class State(simlib.BaseState):
    def __init__(self):
        super().__init__()
        self.messages = []
        self.fail = []  # [(status, errorCode, retryAfter)], consumed in order
        self.unregistered = set()
        self.tokens = {}  # access token -> expiry (unix seconds)
        self.tokens_issued = 0
        self.unauthenticated = 0
        self.next_msg = 1000


def error_body(status, canonical, message, code=None):
    err = {"code": status, "message": message, "status": canonical}
    if code:
        err["details"] = [{"@type": FCM_ERROR_TYPE, "errorCode": code}]
    return json.dumps({"error": err}).encode()


class Account:
    def __init__(self, path):
        with open(path, "rb") as f:
            sa = json.load(f)
        self.project_id = sa["project_id"]
        self.client_email = sa["client_email"]
        key = serialization.load_pem_private_key(sa["private_key"].encode(), password=None)
        self.pub = key.public_key()

    def check_assertion(self, jwt, aud):
        """Returns None when the assertion is good, else a description."""
        try:
            header, claims, sig, signed = simlib.decode_jwt(jwt)
        except simlib.JwtError as e:
            return str(e)
        if header.get("alg") != "RS256" or header.get("typ", "JWT") != "JWT":
            return "alg must be RS256"
        try:
            self.pub.verify(sig, signed, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return "Invalid JWT Signature."
        if claims.get("iss") != self.client_email:
            return "bad iss"
        if SCOPE not in str(claims.get("scope", "")).split(" "):
            return "bad scope"
        if claims.get("aud") != aud:
            return f"bad aud {claims.get('aud')!r}, want {aud!r}"
        iat, exp = claims.get("iat"), claims.get("exp")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (iat, exp)):
            return "iat/exp must be integers"
        now = time.time()
        if exp - iat > ASSERTION_MAX_LIFE_S or exp <= iat:
            return "exp - iat must be 1..3600"
        if iat > now + CLOCK_SKEW_S or exp < now - CLOCK_SKEW_S:
            return "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe"
        return None


class H2Protocol(simlib.H2Protocol):
    NAME = "fcm_sim"
    MAX_PAYLOAD = MAX_PAYLOAD
    BODY_CAP = 4 * MAX_PAYLOAD

    def __init__(self, state, account):
        super().__init__(state)
        self.account = account

    def on_request(self, sid, st):
        status, body, extra = self.judge(st)
        self.send_response(sid, status, [("content-type", "application/json; charset=UTF-8"),
                                         ("content-length", str(len(body)))] + extra, body)

    def judge(self, st):
        """Returns (status, body, extra headers) and records accepted messages."""
        hdrs = {}
        for k, v in st["headers"]:
            if k in hdrs and not k.startswith(":"):
                return self.reject(400, "INVALID_ARGUMENT", f"duplicate header {k}")
            hdrs[k] = v

        if hdrs.get(":method") != "POST":
            return self.reject(405, "INVALID_ARGUMENT", "method not allowed", code=False)
        m = PATH_RE.match(hdrs.get(":path", ""))
        if not m:
            return self.reject(404, "NOT_FOUND", "not found", code=False)
        auth = hdrs.get("authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        with self.state.lock:
            expiry = self.state.tokens.get(token)
            if expiry is None or expiry < time.time():
                self.state.unauthenticated += 1
                self.state.rejected += 1
                return 401, error_body(
                    401, "UNAUTHENTICATED",
                    "Request had invalid authentication credentials. Expected OAuth 2 access "
                    "token, login cookie or other valid authentication credential."), []
        if m.group(1) != self.account.project_id:
            return self.reject(403, "PERMISSION_DENIED",
                               "Permission denied on project", code=False)
        if not hdrs.get("content-type", "").startswith("application/json"):
            return self.reject(400, "INVALID_ARGUMENT", "content-type must be application/json")
        body = bytes(st["body"])
        if len(body) > MAX_PAYLOAD or st.get("too_big"):
            return self.reject(400, "INVALID_ARGUMENT", "Message is too big")
        try:
            doc = json.loads(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return self.reject(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        problem = self.check_message(doc)
        if problem:
            return self.reject(400, "INVALID_ARGUMENT", problem)
        reg = doc["message"]["token"]
        if not REG_TOKEN_RE.match(reg):
            return self.reject(400, "INVALID_ARGUMENT",
                               "The registration token is not a valid FCM registration token")
        with self.state.lock:
            if self.state.fail:
                status, code, retry_after = self.state.fail.pop(0)
                self.state.rejected += 1
                canonical = ERRORS.get(code, (status, code))[1]
                extra = [("retry-after", str(retry_after))] if retry_after is not None else []
                return status, error_body(status, canonical, f"simulated {code}", code), extra
            if reg in self.state.unregistered:
                self.state.rejected += 1
                return 404, error_body(404, "NOT_FOUND", "Requested entity was not found.",
                                       "UNREGISTERED"), []
            self.state.next_msg += 1
            name = f"projects/{self.account.project_id}/messages/{self.state.next_msg}"
            self.state.messages.append({
                "name": name,
                "path": hdrs[":path"],
                "headers": {k: v for k, v in st["headers"] if k != "authorization"},
                "message": doc["message"],
                "raw": body.decode("utf-8"),
            })
        return 200, json.dumps({"name": name}).encode(), []

    @staticmethod
    def check_message(doc):
        if not isinstance(doc, dict) or set(doc) - {"message", "validate_only"}:
            return "Invalid JSON payload received. Unknown name at the top level."
        msg = doc.get("message")
        if not isinstance(msg, dict):
            return "message is required"
        targets = [k for k in ("token", "topic", "condition") if k in msg]
        if targets != ["token"]:
            return "exactly one of token, topic, condition (and this simulator wants token)"
        if not isinstance(msg["token"], str) or not msg["token"]:
            return "message.token must be a non-empty string"
        data = msg.get("data")
        if not isinstance(data, dict):
            return "message.data is required"
        for k, v in data.items():
            if not isinstance(v, str):
                return f"Invalid value at 'message.data[{k}].value' (TYPE_STRING)"
            if k == "from" or k.startswith("gcm") or k.startswith("google"):
                return f"Invalid data key {k}: reserved"
        android = msg.get("android")
        if android is not None:
            if not isinstance(android, dict):
                return "message.android must be an object"
            if "priority" in android and android["priority"] not in ("high", "normal"):
                return "Invalid value at 'message.android.priority'"
        return None

    def reject(self, status, canonical, message, code=True):
        self.state.count_rejected()
        return status, error_body(status, canonical, message,
                                  canonical if code else None), []


def token_handler(state, account, aud):
    class Handler(simlib.JsonHandler):
        protocol_version = "HTTP/1.1"
        content_type = "application/json; charset=utf-8"
        close_after_reply = True

        def do_POST(self):
            n = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(n) if 0 < n <= 65536 else b""
            if self.path != "/token":
                return self.reply(404, {"error": "not_found"})
            if not self.headers.get("content-type", "").startswith(
                    "application/x-www-form-urlencoded"):
                return self.reply(400, {"error": "invalid_request",
                                        "error_description": "bad content-type"})
            try:
                form = urllib.parse.parse_qs(raw.decode("ascii"), strict_parsing=True)
            except (ValueError, UnicodeDecodeError):
                return self.reply(400, {"error": "invalid_request"})
            if form.get("grant_type") != [GRANT] or len(form.get("assertion", [])) != 1:
                return self.reply(400, {"error": "unsupported_grant_type",
                                        "error_description": "Invalid grant_type"})
            problem = account.check_assertion(form["assertion"][0], aud)
            if problem:
                print(f"fcm_sim: assertion refused: {problem}", file=sys.stderr)
                return self.reply(400, {"error": "invalid_grant", "error_description": problem})
            tok = "ya29.sim-" + secrets.token_urlsafe(32)
            with state.lock:
                state.tokens[tok] = time.time() + TOKEN_LIFE_S
                state.tokens_issued += 1
            self.reply(200, {"access_token": tok, "expires_in": TOKEN_LIFE_S,
                             "token_type": "Bearer"})

    return Handler


def control_routes(state):
    """The control API (see the module docstring); runs under state.lock."""

    def stats(_):
        return {"connections": state.connections, "tokens_issued": state.tokens_issued,
                "rejected": state.rejected, "unauthenticated": state.unauthenticated}

    def clear(_):
        state.messages.clear()
        return {}

    def fail(req):
        n = int(req.get("count", 1))
        status = int(req.get("status", 503))
        code = str(req.get("errorStatus", "UNAVAILABLE"))
        ra = req.get("retryAfter")
        state.fail.extend([(status, code, None if ra is None else int(ra))] * n)
        return {}

    def unregister(req):
        state.unregistered.add(str(req["token"]))
        return {}

    def expire_tokens(_):
        state.tokens.clear()
        return {}

    return {("GET", "/messages"): lambda _: state.messages,
            ("GET", "/stats"): stats,
            ("DELETE", "/messages"): clear,
            ("POST", "/fail"): fail,
            ("POST", "/unregister"): unregister,
            ("POST", "/expire-tokens"): expire_tokens}


def make_service_account(path, project_id, email, token_uri):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    sa = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": email or f"ens-push@{project_id}.iam.gserviceaccount.com",
        "client_id": str(secrets.randbelow(10 ** 20)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(sa, f, indent=2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--make-service-account", metavar="FILE",
                    help="write a test service-account JSON and exit")
    ap.add_argument("--project-id", default="ens-test")
    ap.add_argument("--client-email")
    ap.add_argument("--listen", help="host:port for FCM (HTTP/2 over TLS)")
    ap.add_argument("--token-listen", help="host:port for the OAuth token endpoint (HTTPS)")
    ap.add_argument("--token-url", help="the aud the assertion must carry "
                    "(default https://<token-listen>/token)")
    ap.add_argument("--control", help="host:port for the control API")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--service-account", help="the service-account JSON whose key signs")
    args = ap.parse_args()
    if args.make_service_account:
        make_service_account(args.make_service_account, args.project_id, args.client_email,
                             args.token_url or "https://oauth2.googleapis.com/token")
        return
    for opt in ("listen", "token_listen", "control", "cert", "key", "service_account"):
        if not getattr(args, opt):
            ap.error(f"--{opt.replace('_', '-')} is required")
    account = Account(args.service_account)
    state = State()
    aud = args.token_url or f"https://{args.token_listen}/token"
    simlib.run("fcm_sim", args.listen, simlib.tls_server_context(args.cert, args.key, "h2"),
               lambda: H2Protocol(state, account),
               [(args.token_listen, token_handler(state, account, aud),
                 simlib.tls_server_context(args.cert, args.key, "http/1.1")),
                (args.control, simlib.control_handler(state, control_routes(state)), None)])


if __name__ == "__main__":
    main()
