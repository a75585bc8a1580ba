#!/usr/bin/python3
"""Descriptor limits (issue 6, item 7; docs/operations.md "Descriptor limits"):
ensd alone on a real redis-server, started under an open-file limit.

- Under 1,024:1,024 (systemd's default), 1,500 idle TCP connections to the
  public port are taken up to the per-listener cap and the rest wait in the
  kernel's backlog: ensd stays under its limit, writes a handful of log lines
  for the whole episode (not one per failed accept), burns no CPU spinning,
  and the admin port still answers. Once the clients leave, /alive answers at
  once and SIGTERM ends ensd with 0 within 5 s.
- Under 1,024:4,096 the soft limit is raised to the hard one at start.

Usage: fd_flood_test.py ENSD_BINARY WORKDIR"""
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import unittest
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tools"))
import ensstack  # noqa: E402

ENSD = WORK = None
CLIENTS = 1500
HOLD_S = 3.0


def get(url, token=None, timeout=2.0):
    req = urllib.request.Request(url, headers={"Authorization": "Bearer " + token} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def flood(port):
    """CLIENTS idle connections (non-blocking connects: most complete into a
    backlog, the rest keep retrying their SYN)."""
    socks = []
    for _ in range(CLIENTS):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except (BlockingIOError, InterruptedError):
            pass
        socks.append(s)
    return socks


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def log_lines(path):
    with open(path, "rb") as f:
        return f.read().decode(errors="replace").splitlines()


class Ensd:
    """One ensd with its own config, under RLIMIT_NOFILE (soft, hard)."""

    def __init__(self, workdir, redis_port, soft, hard, threads=2):
        self.dir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.public = ensstack.free_port()
        self.admin = ensstack.free_port()
        cfg = {
            "listen": {"public": "127.0.0.1:%d" % self.public,
                       "admin": "127.0.0.1:%d" % self.admin},
            "redis": {"url": "redis://127.0.0.1:%d/0" % redis_port},
            "admin": {"token_file": os.path.join(workdir, "admin.token")},
            "secrets": {"master_key_file": os.path.join(os.path.dirname(workdir), "master.key")},
            "runtime": {"threads": threads},
            "log": {"level": "info", "format": "text"},
        }
        config = os.path.join(workdir, "ens.json")
        with open(config, "w") as f:
            json.dump(cfg, f)
        self.log = os.path.join(workdir, "ensd.log")
        logf = open(self.log, "wb")

        def limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

        self.p = subprocess.Popen([ENSD, "--config", config], stdout=logf, stderr=logf,
                                  preexec_fn=limit, cwd=workdir)
        logf.close()
        ensstack.wait_for(lambda: self.get("/ready")[0] == 200, 20, "ensd /ready")
        with open(os.path.join(workdir, "admin.token")) as f:
            self.token = f.read().strip()

    def get(self, path, timeout=2.0):
        return get("http://127.0.0.1:%d/api/ens%s" % (self.public, path), timeout=timeout)

    def metrics(self):
        st, body = get("http://127.0.0.1:%d/metrics" % self.admin, self.token)
        assert st == 200, st
        out = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def stop(self):
        """SIGTERM; returns (exit code, seconds)."""
        t0 = time.time()
        self.p.send_signal(signal.SIGTERM)
        try:
            code = self.p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            return None, time.time() - t0
        return code, time.time() - t0

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


class DescriptorLimits(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if os.path.isdir(WORK):
            shutil.rmtree(WORK)
        os.makedirs(WORK)
        cls.redis_port = ensstack.free_port()
        cls.redis = subprocess.Popen(
            ["redis-server", "--port", str(cls.redis_port), "--bind", "127.0.0.1",
             "--dir", WORK, "--save", "", "--appendonly", "no", "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        def redis_up():
            socket.create_connection(("127.0.0.1", cls.redis_port), 1).close()
            return True

        ensstack.wait_for(redis_up, 10, "redis-server")

    @classmethod
    def tearDownClass(cls):
        cls.redis.terminate()
        cls.redis.wait(timeout=10)

    def setUp(self):
        self.ensd = None

    def tearDown(self):
        if self.ensd:
            self.ensd.kill()

    def test_flood_under_1024(self):
        e = self.ensd = Ensd(os.path.join(WORK, "flood"), self.redis_port, 1024, 1024)
        start = log_lines(e.log)
        self.assertTrue(any("fd.limit" in l and "soft=1024" in l and
                            "connections_per_listener=348" in l for l in start), start)
        time.sleep(0.3)  # let start-up logging settle
        n0 = len(log_lines(e.log))
        cpu0 = cpu_seconds(e.p.pid)
        socks = flood(e.public)
        try:
            time.sleep(HOLD_S)
            # While flooded: under the limit, the admin port answers, the
            # metrics tell the operator what is going on.
            fds = len(os.listdir("/proc/%d/fd" % e.p.pid))
            self.assertLess(fds, 1024)
            m = e.metrics()
            self.assertGreaterEqual(m["ens_connections_open"], 600)
            self.assertEqual(m["ens_connections_cap"], 348)
            self.assertGreaterEqual(m["ens_accept_paused"], 1)
            self.assertGreaterEqual(m['ens_accept_pauses_total{reason="connections"}'], 1)
            cpu = cpu_seconds(e.p.pid) - cpu0
            self.assertLess(cpu, 1.5, "ensd burnt %.2f s of CPU in %.1f s" % (cpu, HOLD_S))
        finally:
            for s in socks:
                s.close()
        # The clients are gone: serving again within a second or two.
        t0 = time.time()
        ensstack.wait_for(lambda: e.get("/alive", timeout=0.5)[0] == 200, 2, "/alive after")
        self.assertLess(time.time() - t0, 2.0)
        ensstack.wait_for(lambda: e.metrics()["ens_accept_paused"] == 0, 3, "accepting again")

        def episodes_ended():
            lines = log_lines(e.log)[n0:]
            return [l for l in lines if "net.accept_paused" in l] and \
                len([l for l in lines if "net.accept_paused" in l]) == \
                len([l for l in lines if "net.accept_resumed" in l])

        ensstack.wait_for(episodes_ended, 3, "every episode's closing line")
        lines = log_lines(e.log)[n0:]
        self.assertLess(len(lines), 50, "\n".join(lines[:60]))
        self.assertFalse([l for l in lines if "accept_failed" in l], lines[:10])
        paused = [l for l in lines if "net.accept_paused" in l]
        resumed = [l for l in lines if "net.accept_resumed" in l]
        self.assertTrue(1 <= len(paused) <= 4, lines)  # an episode or two per scheduler
        self.assertEqual(len(resumed), len(paused), lines)
        code, took = e.stop()
        self.assertEqual(code, 0)
        self.assertLess(took, 5.0)

    def test_sigterm_while_flooded(self):
        e = self.ensd = Ensd(os.path.join(WORK, "sigterm"), self.redis_port, 1024, 1024)
        socks = flood(e.public)
        try:
            time.sleep(1.0)
            code, took = e.stop()
            self.assertEqual(code, 0)
            self.assertLess(took, 5.0)
        finally:
            for s in socks:
                s.close()

    def test_soft_raised_to_hard(self):
        e = self.ensd = Ensd(os.path.join(WORK, "raise"), self.redis_port, 1024, 4096)
        with open("/proc/%d/limits" % e.p.pid) as f:
            row = [l for l in f if l.startswith("Max open files")][0].split()
        self.assertEqual(row[3:5], ["4096", "4096"], row)
        lines = [l for l in log_lines(e.log) if "fd.limit" in l]
        self.assertEqual(len(lines), 1, lines)  # logged once
        self.assertIn("soft=4096 (started with 1024) hard=4096", lines[0])
        self.assertEqual(e.metrics()["ens_connections_cap"], (4096 - 64 - 32) * 75 // 100 // 2)
        code, took = e.stop()
        self.assertEqual(code, 0)
        self.assertLess(took, 5.0)


if __name__ == "__main__":
    ENSD, WORK = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < CLIENTS + 200:
        print("skipped: this test needs %d descriptors, the hard limit is %d" % (CLIENTS + 200, hard))
        sys.exit(77)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    unittest.main(argv=[sys.argv[0], "-v"])
