"""A whole ENS deployment on loopback, for the demo and the integration tests.

Stack starts a private redis-server (its own data dir, AOF on), the Exchange
and APNs simulators, and ensd, each on a free 127.0.0.1 port, with a fresh
throw-away PKI. It also speaks the device side of the contract: it fetches the
JWKS, seals an enrollment as a JWE (with jwcrypto, an implementation
independent of ensd's) and posts it, exactly as a mail app would.

Standard library plus python3-jwcrypto only.
"""
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

from jwcrypto import jwe, jwk

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PY = "/usr/bin/python3"

TEAM_ID = "TEAMID1234"
FCM_PROJECT = "ens-demo"
KEY_ID = "KEYID12345"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, what):
    end = time.time() + timeout
    last = None
    while time.time() < end:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # the thing is still starting
            last = e
        time.sleep(0.1)
    raise TimeoutError("timed out waiting for %s (%s)" % (what, last))


class HttpError(Exception):
    def __init__(self, status, body):
        super().__init__("HTTP %d: %s" % (status, body))
        self.status = status
        self.body = body


class Stack:
    def __init__(self, workdir, ensd, ensctl=None, log=None, status_scale=60.0,
                 first_status_delay=1.0, env=None, retry_base=None):
        self.dir = os.path.abspath(workdir)
        self.ensd_bin = ensd
        self.ensctl_bin = ensctl
        self.log = log or (lambda msg: None)
        self.status_scale = status_scale
        self.first_status_delay = first_status_delay
        self.retry_base = retry_base  # Exchange's first callback retry, seconds (sim default 30)
        self.extra_env = env or {}
        self.procs = {}
        self.logs = {}
        os.makedirs(self.dir, exist_ok=True)
        self.pki = os.path.join(self.dir, "pki")
        self.ports = {k: free_port() for k in
                      ("redis", "ews", "ews_ctl", "apns", "apns_ctl", "fcm", "fcm_token", "fcm_ctl",
                       "public", "admin")}
        self.ctx = None

    # ---- processes ----

    def _spawn(self, name, argv, ready=None, env=None):
        logf = open(os.path.join(self.dir, name + ".log"), "ab")
        self.logs[name] = os.path.join(self.dir, name + ".log")
        p = subprocess.Popen(argv, stdout=subprocess.PIPE if ready else logf, stderr=logf,
                             env=env, cwd=self.dir)
        self.procs[name] = p
        if ready:
            line = b""
            end = time.time() + 20
            while ready.encode() not in line:
                if time.time() > end or p.poll() is not None:
                    raise RuntimeError("%s did not start; see %s" % (name, self.logs[name]))
                line = p.stdout.readline()
        return p

    def start(self):
        if not os.path.exists(os.path.join(self.pki, "ca.pem")):
            subprocess.check_call([PY, os.path.join(HERE, "gen_pki.py"), self.pki])
        self.ctx = ssl.create_default_context(cafile=os.path.join(self.pki, "ca.pem"))
        self.start_redis()
        self._spawn("exchange_sim", [
            PY, os.path.join(HERE, "exchange_sim.py"),
            "--listen", "127.0.0.1:%d" % self.ports["ews"],
            "--control", "127.0.0.1:%d" % self.ports["ews_ctl"],
            "--cert", os.path.join(self.pki, "server.pem"),
            "--key", os.path.join(self.pki, "server.key"),
            "--callback-ca", os.path.join(self.pki, "ca.pem"),
            "--first-status-delay", str(self.first_status_delay),
            "--status-scale", str(self.status_scale)]
            + (["--retry-base", str(self.retry_base)] if self.retry_base else []), ready="ready")
        self._spawn("apns_sim", [
            PY, os.path.join(HERE, "apns_sim.py"),
            "--listen", "127.0.0.1:%d" % self.ports["apns"],
            "--control", "127.0.0.1:%d" % self.ports["apns_ctl"],
            "--cert", os.path.join(self.pki, "server.pem"),
            "--key", os.path.join(self.pki, "server.key"),
            "--team-id", TEAM_ID, "--key-id", KEY_ID,
            "--key-pub", os.path.join(self.pki, "apns-pub.pem")], ready="ready")
        self.service_account = os.path.join(self.pki, "fcm-service-account.json")
        if not os.path.exists(self.service_account):
            subprocess.check_call([PY, os.path.join(HERE, "fcm_sim.py"), "--make-service-account",
                                   self.service_account, "--project-id", FCM_PROJECT])
        self._spawn("fcm_sim", [
            PY, os.path.join(HERE, "fcm_sim.py"),
            "--listen", "127.0.0.1:%d" % self.ports["fcm"],
            "--token-listen", "127.0.0.1:%d" % self.ports["fcm_token"],
            "--control", "127.0.0.1:%d" % self.ports["fcm_ctl"],
            "--cert", os.path.join(self.pki, "server.pem"),
            "--key", os.path.join(self.pki, "server.key"),
            "--service-account", self.service_account], ready="ready")
        self.write_config()
        self.start_ensd(first=True)

    def start_redis(self):
        data = os.path.join(self.dir, "redis")
        os.makedirs(data, exist_ok=True)
        self._spawn("redis", ["redis-server", "--port", str(self.ports["redis"]),
                              "--bind", "127.0.0.1", "--dir", data, "--appendonly", "yes",
                              "--appendfsync", "everysec", "--save", "",
                              "--protected-mode", "yes"])
        wait_for(lambda: self.redis_cli("PING").strip() == "PONG", 10, "redis-server")

    def redis_cli(self, *args):
        return subprocess.run(["redis-cli", "-p", str(self.ports["redis"])] + list(args),
                              capture_output=True, text=True, timeout=10).stdout

    def write_config(self):
        p = self.pki
        cfg = {
            "listen": {"public": "127.0.0.1:%d" % self.ports["public"],
                       "admin": "127.0.0.1:%d" % self.ports["admin"]},
            "tls": {"cert": os.path.join(p, "server.pem"), "key": os.path.join(p, "server.key")},
            "http": {"public_url": "https://127.0.0.1:%d/api/ens" % self.ports["public"]},
            "redis": {"url": "redis://127.0.0.1:%d/0" % self.ports["redis"]},
            "ews": {"ca_file": os.path.join(p, "ca.pem"), "allow_private_networks": True,
                    "timeout_ms": 10000, "status_frequency_min": 1},
            "apns": {"url": "https://127.0.0.1:%d" % self.ports["apns"],
                     "sandbox_url": "https://127.0.0.1:%d" % self.ports["apns"],
                     "team_id": TEAM_ID, "key_id": KEY_ID,
                     "key_file": os.path.join(p, "apns.p8"),
                     "ca_file": os.path.join(p, "ca.pem")},
            "fcm": {"url": "https://127.0.0.1:%d" % self.ports["fcm"],
                    "token_url": "https://127.0.0.1:%d/token" % self.ports["fcm_token"],
                    "service_account_file": self.service_account,
                    "ca_file": os.path.join(p, "ca.pem")},
            "admin": {"token_file": os.path.join(self.dir, "ens-admin.token")},
            "secrets": {"master_key_file": os.path.join(self.dir, "ens-master.key")},
            "runtime": {"threads": 2},
            "log": {"level": "info", "format": "text"},
        }
        self.config = os.path.join(self.dir, "ens.json")
        with open(self.config, "w") as f:
            json.dump(cfg, f, indent=2)

    def start_ensd(self, first=False):
        """Starts ensd and waits for /ready. On the first start, a listening port
        that another process took since free_port() chose it (an outgoing
        connection of a parallel test draws from the same ephemeral range) is
        chosen again; later starts keep their ports, which Exchange's callback
        URLs and the tests name."""
        env = dict(os.environ)
        env.update(self.extra_env)
        for attempt in range(3 if first else 1):
            p = self._spawn("ensd", [self.ensd_bin, "--config", self.config], env=env)
            wait_for(lambda: p.poll() is not None or self.public("GET", "/ready")[0] == 200, 20,
                     "ensd /ready")
            if p.poll() is None:
                return
            with open(self.logs["ensd"], "rb") as f:
                lost_port = b"address already in use" in f.read()
            self.procs.pop("ensd")
            if not (first and lost_port) or attempt == 2:
                raise RuntimeError("ensd exited at start (%d); see %s"
                                   % (p.returncode, self.logs["ensd"]))
            self.ports["public"], self.ports["admin"] = free_port(), free_port()
            self.write_config()

    def stop_ensd(self, sig=signal.SIGTERM, timeout=10):
        """Stops ensd; returns (exit code, seconds it took)."""
        p = self.procs.pop("ensd")
        t0 = time.time()
        p.send_signal(sig)
        code = p.wait(timeout=timeout)
        return code, time.time() - t0

    def stop(self):
        for name in list(self.procs):
            p = self.procs.pop(name)
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=6)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            if p.stdout:
                p.stdout.close()

    # ---- HTTP ----

    def _request(self, method, url, body=None, headers=None, ctx=None):
        req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30, context=ctx) as r:
                return r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read(), dict(e.headers)

    def public(self, method, path, body=None, headers=None):
        url = "https://127.0.0.1:%d/api/ens%s" % (self.ports["public"], path)
        return self._request(method, url, body, headers, ctx=self.ctx)

    def public_h2(self, method, path, body=None, headers=None):
        """One request over HTTP/2 (TLS, ALPN h2), as a modern phone would send it.
        Returns (status, body bytes, negotiated ALPN)."""
        import h2.config
        import h2.connection
        import h2.events
        ctx = ssl.create_default_context(cafile=os.path.join(self.pki, "ca.pem"))
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        raw = socket.create_connection(("127.0.0.1", self.ports["public"]), timeout=20)
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            alpn = tls.selected_alpn_protocol()
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()
            hdrs = [(":method", method), (":path", "/api/ens" + path), (":scheme", "https"),
                    (":authority", "localhost:%d" % self.ports["public"])]
            hdrs += [(k.lower(), v) for k, v in (headers or {}).items()]
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, hdrs, end_stream=not body)
            if body:
                conn.send_data(sid, body, end_stream=True)
            tls.sendall(conn.data_to_send())
            status, data, done = None, b"", False
            while not done:
                chunk = tls.recv(65536)
                if not chunk:
                    break
                for ev in conn.receive_data(chunk):
                    if isinstance(ev, h2.events.ResponseReceived):
                        status = int(dict(ev.headers)[b":status"])
                    elif isinstance(ev, h2.events.DataReceived):
                        data += ev.data
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                        done = True
                tls.sendall(conn.data_to_send())
            return status, data, alpn

    def admin_token(self):
        with open(os.path.join(self.dir, "ens-admin.token")) as f:
            return f.read().strip()

    def admin(self, method, path, obj=None, token=None):
        url = "http://127.0.0.1:%d%s" % (self.ports["admin"], path)
        body = json.dumps(obj).encode() if obj is not None else None
        h = {"Authorization": "Bearer " + (token or self.admin_token()),
             "Content-Type": "application/json"}
        return self._request(method, url, body, h)

    def ews_control(self, method, path, obj=None):
        url = "http://127.0.0.1:%d%s" % (self.ports["ews_ctl"], path)
        body = json.dumps(obj).encode() if obj is not None else None
        st, b, _ = self._request(method, url, body, {"Content-Type": "application/json"})
        if st >= 300:
            raise HttpError(st, b)
        return json.loads(b) if b else None

    def apns_control(self, method, path, obj=None):
        url = "http://127.0.0.1:%d%s" % (self.ports["apns_ctl"], path)
        body = json.dumps(obj).encode() if obj is not None else None
        st, b, _ = self._request(method, url, body, {"Content-Type": "application/json"})
        if st >= 300:
            raise HttpError(st, b)
        return json.loads(b) if b else None

    # ---- the operator and the device ----

    def create_tenant(self, name, preview_cap="full", ews_allow=None):
        obj = {"name": name, "previewCap": preview_cap}
        if ews_allow is not None:
            obj["ewsAllow"] = ews_allow
        st, b, _ = self.admin("POST", "/admin/v1/tenants", obj)
        if st != 201:
            raise HttpError(st, b)
        tenant = json.loads(b)["id"]
        st, b, _ = self.admin("POST", "/admin/v1/tenants/%s/tokens" % tenant)
        if st != 201:
            raise HttpError(st, b)
        return tenant, json.loads(b)["token"]

    def jwks(self):
        st, b, _ = self.public("GET", "/v1/keys")
        if st != 200:
            raise HttpError(st, b)
        return json.loads(b)

    def seal(self, payload, alg="ECDH-ES", enc="A256GCM"):
        keys = self.jwks()["keys"]
        key = next(k for k in keys if k.get("alg") == alg)
        pub = jwk.JWK(**key)
        hdr = {"alg": alg, "enc": enc, "kid": key["kid"]}
        tok = jwe.JWE(json.dumps(payload).encode(), protected=json.dumps(hdr))
        tok.add_recipient(pub)
        return tok.serialize(compact=True)

    def enrollment(self, email, password, device_id="device-1", token_hex="ab" * 32,
                   app_id="com.example.mail", ews_url=None, preview="full", badge=True,
                   username=None, iat=None, platform="ios"):
        return {
            "email": email,
            "ewsUrl": ews_url or "https://127.0.0.1:%d/EWS/Exchange.asmx" % self.ports["ews"],
            "auth": {"type": "basic", "username": username or email, "password": password},
            "device": {"id": device_id, "platform": platform, "pushToken": token_hex,
                       "appId": app_id, "environment": "production"},
            "preferences": {"preview": preview, "badge": badge},
            "iat": int(time.time()) if iat is None else iat,
        }

    def subscribe(self, api_token, payload, path="/v1/subscribe", alg="ECDH-ES", enc="A256GCM"):
        body = self.seal(payload, alg, enc).encode()
        st, b, _ = self.public("POST", path, body, {
            "Authorization": "Bearer " + api_token, "Content-Type": "application/jose"})
        return st, json.loads(b) if b else None

    def fcm_control(self, method, path, obj=None):
        url = "http://127.0.0.1:%d%s" % (self.ports["fcm_ctl"], path)
        body = json.dumps(obj).encode() if obj is not None else None
        st, b, _ = self._request(method, url, body, {"Content-Type": "application/json"})
        if st >= 300:
            raise HttpError(st, b)
        return json.loads(b) if b else None

    def pushes(self):
        return self.apns_control("GET", "/pushes")

    def wait_pushes(self, n, timeout=20):
        return wait_for(lambda: (lambda p: p if len(p) >= n else None)(self.pushes()),
                        timeout, "%d push(es) at the APNs simulator" % n)
