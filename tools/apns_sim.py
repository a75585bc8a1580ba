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
  POST /unregister {"token":hex} -> later pushes to it get 410 Unregistered
  POST /delay     {"ms":N} -> hold every answer N ms (to observe multiplexing)

Prints "apns_sim ready" on stdout once both ports listen.
Needs python3-h2 and python3-cryptography (Debian packages).
"""
import argparse
import asyncio
import base64
import binascii
import http.server
import json
import re
import ssl
import sys
import threading
import time
import uuid

import h2.config
import h2.connection
import h2.events
import h2.settings
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

MAX_PAYLOAD = 4096
PUSH_TYPES = {"alert", "background", "voip", "complication", "fileprovider", "mdm",
              "liveactivity", "location", "pushtotalk", "widgets", "controls"}
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
HEX_RE = re.compile(r"^[0-9a-fA-F]+$")
JWT_MAX_AGE_S = 3600
STREAMS_AFTER_AUTH = 1000


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.pushes = []
        self.fail = []  # [(status, reason)], consumed in order
        self.unregistered = {}  # token -> timestamp ms
        self.delay_ms = 0
        self.connections = 0
        self.max_concurrent = 0
        self.rejected = 0


def b64url_decode(s):
    s += "=" * (-len(s) % 4)
    return base64.urlsafe_b64decode(s.encode("ascii"))


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
        parts = auth[len("bearer "):].split(".")
        if len(parts) != 3:
            return "InvalidProviderToken"
        try:
            header = json.loads(b64url_decode(parts[0]))
            claims = json.loads(b64url_decode(parts[1]))
            sig = b64url_decode(parts[2])
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return "InvalidProviderToken"
        if not isinstance(header, dict) or not isinstance(claims, dict):
            return "InvalidProviderToken"
        if header.get("alg") != "ES256" or header.get("kid") != self.key_id or len(sig) != 64:
            return "InvalidProviderToken"
        r = int.from_bytes(sig[:32], "big")
        s = int.from_bytes(sig[32:], "big")
        try:
            self.pub.verify(encode_dss_signature(r, s), (parts[0] + "." + parts[1]).encode("ascii"),
                            ec.ECDSA(hashes.SHA256()))
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


class H2Protocol(asyncio.Protocol):
    next_id = 0

    def __init__(self, state, verifier):
        self.state = state
        self.verifier = verifier
        self.conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.streams = {}
        self.transport = None
        self.authed = False
        H2Protocol.next_id += 1
        self.conn_id = H2Protocol.next_id

    def connection_made(self, transport):
        self.transport = transport
        with self.state.lock:
            self.state.connections += 1
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1})
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data and self.transport and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data):
        try:
            events = self.conn.receive_data(data)
        except Exception as e:  # a protocol error: h2 has queued a GOAWAY
            print(f"apns_sim: h2 error {e!r}", file=sys.stderr)
            self.flush()
            self.transport.close()
            return
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                self.streams[ev.stream_id] = {"headers": ev.headers, "body": bytearray()}
                open_now = len(self.streams)
                with self.state.lock:
                    self.state.max_concurrent = max(self.state.max_concurrent, open_now)
            elif isinstance(ev, h2.events.DataReceived):
                st = self.streams.get(ev.stream_id)
                if st is not None:
                    st["body"] += ev.data
                    if len(st["body"]) > 2 * MAX_PAYLOAD:
                        st["too_big"] = True
                        st["body"] = st["body"][:MAX_PAYLOAD + 1]
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                st = self.streams.get(ev.stream_id)
                if st is not None:
                    st["concurrent"] = len(self.streams)
                    asyncio.get_event_loop().create_task(self.answer(ev.stream_id, st))
            elif isinstance(ev, h2.events.StreamReset):
                self.streams.pop(ev.stream_id, None)
        self.flush()

    def connection_lost(self, exc):
        self.transport = None

    async def answer(self, sid, st):
        status, reason, apns_id = self.judge(st)
        delay = self.state.delay_ms
        if delay:
            await asyncio.sleep(delay / 1000.0)
        self.streams.pop(sid, None)
        if self.transport is None:
            return
        headers = [(":status", str(status)), ("apns-id", apns_id)]
        body = b""
        if status != 200:
            err = {"reason": reason}
            if status == 410:
                err["timestamp"] = self.state.unregistered.get(st.get("token"), int(time.time() * 1000))
            body = json.dumps(err).encode()
            headers.append(("content-type", "application/json"))
            headers.append(("content-length", str(len(body))))
        try:
            self.conn.send_headers(sid, headers, end_stream=not body)
            if body:
                self.conn.send_data(sid, body, end_stream=True)
        except Exception as e:  # the stream was reset meanwhile
            print(f"apns_sim: cannot answer stream {sid}: {e!r}", file=sys.stderr)
        if status == 200 and not self.authed:
            self.authed = True
            self.conn.update_settings(
                {h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: STREAMS_AFTER_AUTH})
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
            with self.state.lock:
                self.state.rejected += 1
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
            if token.lower() in self.state.unregistered:
                self.state.rejected += 1
                return 410, "Unregistered", apns_id
            self.state.pushes.append({
                "conn": self.conn_id,
                "concurrent": st.get("concurrent", 1),
                "headers": {k: v for k, v in st["headers"] if k != "authorization"},
                "authorization": hdrs.get("authorization", ""),
                "token": token,
                "payload": doc,
                "raw": body.decode("utf-8"),
            })
        return 200, "", apns_id


def control_handler(state):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):
            pass

        def reply(self, code, obj):
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def body(self):
            n = int(self.headers.get("content-length") or 0)
            return json.loads(self.rfile.read(n) or b"{}")

        def do_GET(self):
            with state.lock:
                if self.path == "/pushes":
                    return self.reply(200, state.pushes)
                if self.path == "/stats":
                    return self.reply(200, {"connections": state.connections,
                                            "max_concurrent": state.max_concurrent,
                                            "rejected": state.rejected})
            self.reply(404, {"error": "not found"})

        def do_DELETE(self):
            if self.path == "/pushes":
                with state.lock:
                    state.pushes.clear()
                return self.reply(200, {})
            self.reply(404, {"error": "not found"})

        def do_POST(self):
            try:
                req = self.body()
            except ValueError:
                return self.reply(400, {"error": "bad json"})
            with state.lock:
                if self.path == "/fail":
                    n = int(req.get("count", 1))
                    state.fail.extend([(int(req.get("status", 503)),
                                        str(req.get("reason", "ServiceUnavailable")))] * n)
                    return self.reply(200, {})
                if self.path == "/unregister":
                    state.unregistered[str(req["token"]).lower()] = int(time.time() * 1000)
                    return self.reply(200, {})
                if self.path == "/delay":
                    state.delay_ms = int(req.get("ms", 0))
                    return self.reply(200, {})
            self.reply(404, {"error": "not found"})

    return Handler


def split_hostport(s):
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


async def main_async(args):
    if args.key_pub:
        with open(args.key_pub, "rb") as f:
            pub = serialization.load_pem_public_key(f.read())
    elif args.p8:
        with open(args.p8, "rb") as f:
            pub = serialization.load_pem_private_key(f.read(), password=None).public_key()
    else:
        sys.exit("apns_sim: --key-pub or --p8 is required")
    state = State()
    verifier = Verifier(args.team_id, args.key_id, pub)

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.cert, args.key)
    ctx.set_alpn_protocols(["h2"])
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2

    host, port = split_hostport(args.listen)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: H2Protocol(state, verifier), host, port, ssl=ctx)

    chost, cport = split_hostport(args.control)
    httpd = http.server.ThreadingHTTPServer((chost, cport), control_handler(state))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()

    print("apns_sim ready", flush=True)
    async with server:
        await server.serve_forever()


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
    try:
        asyncio.run(main_async(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
