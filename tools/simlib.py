"""simlib: the machinery the push-service simulators share (apns_sim.py, fcm_sim.py).

A simulator is an HTTP/2-over-TLS server that judges each request by the rules
of the service it imitates, plus a plain-HTTP/1.1 control API that tests use to
read what was accepted and to script failures. This module holds everything
that is not a protocol rule:

  b64url_decode(s)          base64url without padding (JWT parts)
  decode_jwt(token)         compact JWS -> (header, claims, signature, signed bytes)
  split_hostport(s)         "host:port" / "[v6]:port" -> (host, port)
  tls_server_context(...)   a TLS >= 1.2 server context with one ALPN protocol
  BaseState                 lock + the counters every simulator reports
  H2Protocol                asyncio + h2 server: connection and stream
                            bookkeeping, body caps, sending responses; a
                            simulator subclasses it and implements on_request
  JsonHandler               http.server handler that answers JSON
  control_handler(...)      a JsonHandler serving a {(method, path): fn} table
  serve_http(...)           ThreadingHTTPServer (optionally TLS) in a thread
  run(...)                  listen, start the HTTP servers, print "<name> ready"
                            on stdout, serve until killed

Standard library plus python3-h2 (Debian package).
"""
import asyncio
import base64
import binascii
import http.server
import itertools
import json
import ssl
import sys
import threading

import h2.config
import h2.connection
import h2.events
import h2.settings

MAX_CONCURRENT_STREAMS = h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS


def b64url_decode(s):
    """Decodes unpadded base64url text (raises ValueError/binascii.Error)."""
    s += "=" * (-len(s) % 4)
    return base64.urlsafe_b64decode(s.encode("ascii"))


class JwtError(ValueError):
    """decode_jwt's refusal; str() is "not a JWT", "undecodable JWT" or
    "JWT parts are not objects"."""


def decode_jwt(token):
    """Splits a compact JWS "h.c.s" into (header, claims, signature bytes, signing
    input bytes) without verifying anything; header and claims are JSON objects.
    Raises JwtError."""
    parts = token.split(".")
    if len(parts) != 3:
        raise JwtError("not a JWT")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        sig = b64url_decode(parts[2])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise JwtError("undecodable JWT") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise JwtError("JWT parts are not objects")
    return header, claims, sig, (parts[0] + "." + parts[1]).encode("ascii")


def split_hostport(s):
    """"127.0.0.1:8443" -> ("127.0.0.1", 8443); "[::1]:8443" -> ("::1", 8443)."""
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


def tls_server_context(cert, key, alpn):
    """A server-side TLS (>= 1.2) context for cert/key offering the one ALPN protocol."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols([alpn])
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class BaseState:
    """Shared simulator state. Subclasses add their own fields; every field is
    read and written under self.lock (the control API runs in other threads)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.connections = 0     # HTTP/2 connections accepted
        self.max_concurrent = 0  # most streams open at once on one connection
        self.rejected = 0        # requests answered with an error

    def count_rejected(self):
        with self.lock:
            self.rejected += 1


class H2Protocol(asyncio.Protocol):
    """One HTTP/2 server connection.

    Collects each stream's headers and body; when a request is complete it
    calls self.on_request(stream_id, st) with st = {"headers": [(k, v)...],
    "body": bytearray, "too_big": True if the body passed BODY_CAP}. The stream
    counts as open until send_response() (or a reset) closes it. Subclasses set:

      NAME              prefix of the messages on stderr
      MAX_PAYLOAD       the service's payload limit
      BODY_CAP          bodies longer than this are cut to MAX_PAYLOAD + 1
                        bytes and flagged too_big (bounds memory use)
      INITIAL_SETTINGS  settings sent right after the preface, or None
    """
    NAME = "sim"
    MAX_PAYLOAD = 4096
    BODY_CAP = 2 * 4096
    INITIAL_SETTINGS = None
    _conn_ids = itertools.count(1)

    def __init__(self, state):
        self.state = state
        self.conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.streams = {}
        self.transport = None
        self.conn_id = next(H2Protocol._conn_ids)

    def on_request(self, sid, st):
        """A request is complete; answer it (now or later) with send_response."""
        raise NotImplementedError

    def connection_made(self, transport):
        self.transport = transport
        with self.state.lock:
            self.state.connections += 1
        self.conn.initiate_connection()
        if self.INITIAL_SETTINGS:
            self.conn.update_settings(self.INITIAL_SETTINGS)
        self.flush()

    def connection_lost(self, exc):
        self.transport = None

    def flush(self):
        """Writes whatever h2 has queued."""
        data = self.conn.data_to_send()
        if data and self.transport and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data):
        try:
            events = self.conn.receive_data(data)
        except Exception as e:  # a protocol error: h2 has queued a GOAWAY
            print(f"{self.NAME}: h2 error {e!r}", file=sys.stderr)
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
                    if len(st["body"]) > self.BODY_CAP:
                        st["too_big"] = True
                        st["body"] = st["body"][:self.MAX_PAYLOAD + 1]
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                st = self.streams.get(ev.stream_id)
                if st is not None:
                    self.on_request(ev.stream_id, st)
            elif isinstance(ev, h2.events.StreamReset):
                self.streams.pop(ev.stream_id, None)
        self.flush()

    def send_response(self, sid, status, headers, body=b""):
        """Closes stream sid with :status, headers and body (no DATA frame when
        body is empty). Does not flush: the caller does, after anything else it
        wants in the same write. Returns False if the connection is gone."""
        self.streams.pop(sid, None)
        if self.transport is None:
            return False
        try:
            self.conn.send_headers(sid, [(":status", str(status))] + list(headers),
                                   end_stream=not body)
            if body:
                self.conn.send_data(sid, body, end_stream=True)
        except Exception as e:  # the stream was reset meanwhile
            print(f"{self.NAME}: cannot answer stream {sid}: {e!r}", file=sys.stderr)
        return True


class JsonHandler(http.server.BaseHTTPRequestHandler):
    """An http.server handler with JSON helpers and no access log."""
    content_type = "application/json"
    close_after_reply = False  # send "connection: close" and close

    def log_message(self, fmt, *args):
        pass

    def reply(self, code, obj):
        self.reply_raw(code, json.dumps(obj).encode())

    def reply_raw(self, code, data):
        self.send_response(code)
        self.send_header("content-type", self.content_type)
        self.send_header("content-length", str(len(data)))
        if self.close_after_reply:
            self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(data)
        if self.close_after_reply:
            self.close_connection = True

    def json_body(self):
        """The request body as JSON; an empty body is {}. Raises ValueError."""
        n = int(self.headers.get("content-length") or 0)
        return json.loads(self.rfile.read(n) or b"{}")


def control_handler(state, routes):
    """A handler class for a control API.

    routes maps (method, path) -> fn(req) for GET, DELETE and POST; fn runs
    with state.lock held and returns the JSON answer (status 200). req is the
    parsed JSON body for POST (400 {"error":"bad json"} if it does not parse),
    None otherwise. Unknown paths get 404 {"error":"not found"}."""

    class Handler(JsonHandler):
        def dispatch(self, method, req=None):
            fn = routes.get((method, self.path))
            if fn is None:
                return self.reply(404, {"error": "not found"})
            with state.lock:
                data = json.dumps(fn(req)).encode()
            self.reply_raw(200, data)

        def do_GET(self):
            self.dispatch("GET")

        def do_DELETE(self):
            self.dispatch("DELETE")

        def do_POST(self):
            try:
                req = self.json_body()
            except ValueError:
                return self.reply(400, {"error": "bad json"})
            self.dispatch("POST", req)

    return Handler


def serve_http(hostport, handler, tls=None):
    """Binds a ThreadingHTTPServer on "host:port" (wrapped in the TLS context
    tls if given) and serves it from a daemon thread. Returns the server."""
    httpd = http.server.ThreadingHTTPServer(split_hostport(hostport), handler)
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def run(name, listen, tls, protocol_factory, http_servers=()):
    """Runs a simulator: HTTP/2 over TLS on listen (protocol_factory makes one
    H2Protocol per connection), then each (hostport, handler, tls_or_None) of
    http_servers via serve_http, then prints "<name> ready" on stdout and
    serves until interrupted."""

    async def main():
        host, port = split_hostport(listen)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(protocol_factory, host, port, ssl=tls)
        for hostport, handler, htls in http_servers:
            serve_http(hostport, handler, htls)
        print(f"{name} ready", flush=True)
        async with server:
            await server.serve_forever()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
