#!/usr/bin/python3
"""ensctl against a fake admin API: what an operator sees and what the server gets.

usage: ensctl_test.py /path/to/ensctl
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fake_admin import FakeAdmin  # noqa: E402

ENSCTL = None
TOKEN = "adm-0123456789abcdef-SECRET"


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENS_")}
    env.update(extra)
    return env


class EnsctlTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.token_file = os.path.join(self.tmp.name, "admin.token")
        with open(self.token_file, "w") as f:
            f.write(TOKEN + "\n")
        self.fake = FakeAdmin(TOKEN).__enter__()

    def tearDown(self):
        self.fake.__exit__()
        self.tmp.cleanup()

    def run_ctl(self, *args, env=None, cwd=None, flags=True):
        argv = [ENSCTL]
        if flags:
            argv += ["--url", self.fake.url, "--token-file", self.token_file]
        p = subprocess.run(argv + list(args), capture_output=True, text=True, timeout=20,
                           env=env if env is not None else clean_env(), cwd=cwd or self.tmp.name)
        # the admin token never reaches the terminal, whatever happened
        self.assertNotIn(TOKEN, p.stdout)
        self.assertNotIn(TOKEN, p.stderr)
        return p

    def last(self):
        return self.fake.requests[-1]

    def test_tenant_add_prints_id_and_sends_body(self):
        p = self.run_ctl("tenant", "add", "acme", "--preview-cap", "sender",
                         "--ews-allow", "contoso.com, fabrikam.com")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.strip(), "t_123")
        req = self.last()
        self.assertEqual((req["method"], req["path"]), ("POST", "/admin/v1/tenants"))
        self.assertEqual(req["headers"]["Authorization"], "Bearer " + TOKEN)
        self.assertTrue(req["headers"]["Content-Type"].startswith("application/json"))
        self.assertEqual(json.loads(req["body"]), {"name": "acme", "previewCap": "sender",
                                                   "ewsAllow": ["contoso.com", "fabrikam.com"]})

    def test_tenant_add_minimal_body(self):
        p = self.run_ctl("tenant", "add", "Acme Corp")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(self.last()["body"]), {"name": "Acme Corp"})

    def test_token_create_shows_token_once(self):
        p = self.run_ctl("token", "create", "t_123")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.strip(), "ens_api_SECRETTOKEN")
        self.assertIn("only once", p.stderr)
        self.assertEqual(self.last()["path"], "/admin/v1/tenants/t_123/tokens")
        self.assertEqual(self.last()["method"], "POST")

    def test_user_by_email_summary(self):
        p = self.run_ctl("user", "alice@contoso.com")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.last()["path"], "/admin/v1/users?email=alice%40contoso.com")
        out = p.stdout
        for want in ("alice@contoso.com", "t_1", "AAMkSub1", "active", "d_ios_1", "d_and_2",
                     "ios", "android", "production", "2025-11-24 16:00:00 UTC ok", "120 s old",
                     "pushes: 12"):
            self.assertIn(want, out)
        # the device table has one row per device, with its blocked flag
        rows = [l for l in out.splitlines() if "d_and_2" in l]
        self.assertEqual(len(rows), 1)
        self.assertIn("yes", rows[0])
        self.assertIn("never", rows[0])

    def test_user_by_id(self):
        p = self.run_ctl("user", "u_42")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.last()["path"], "/admin/v1/users/u_42")
        self.assertEqual(self.last()["method"], "GET")

    def test_json_passes_body_through(self):
        p = self.run_ctl("--json", "user", "u_42")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, json.dumps(json.loads(p.stdout)) + "\n")
        self.assertEqual(json.loads(p.stdout)["devices"][0]["deviceId"], "d_ios_1")

    def test_device_commands(self):
        for verb, method, path, word in (
                ("block", "POST", "/admin/v1/devices/d_ios_1/block", "blocked"),
                ("unblock", "POST", "/admin/v1/devices/d_ios_1/unblock", "unblocked"),
                ("rm", "DELETE", "/admin/v1/devices/d_ios_1", "removed")):
            p = self.run_ctl("device", verb, "d_ios_1")
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual((self.last()["method"], self.last()["path"]), (method, path))
            self.assertIn("device d_ios_1 " + word, p.stdout)

    def test_keys_rotate(self):
        p = self.run_ctl("keys", "rotate")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.last()["path"], "/admin/v1/keys/rotate")
        self.assertIn("keys rotated", p.stdout)
        self.assertIn("k2", p.stdout)

    def test_stats(self):
        p = self.run_ctl("stats")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn('ens_pushes_total{platform="ios",result="ok"}', p.stdout)
        self.assertIn("ens_users", p.stdout)
        self.assertNotIn("# HELP", p.stdout)
        self.assertNotIn("_bucket", p.stdout)
        p = self.run_ctl("stats", "--raw")
        self.assertIn("# HELP ens_pushes_total", p.stdout)

    def test_wrong_token(self):
        with open(self.token_file, "w") as f:
            f.write("not-the-token\n")
        p = self.run_ctl("user", "u_42")
        self.assertEqual(p.returncode, 1)
        self.assertIn("the admin token was refused (check admin.token_file)", p.stderr)
        self.assertNotIn("not-the-token", p.stderr + p.stdout)

    def test_server_error_is_shown(self):
        p = self.run_ctl("device", "block", "nope")
        self.assertEqual(p.returncode, 1)
        self.assertIn("not_found: no such user or device (HTTP 404)", p.stderr)
        p = self.run_ctl("--json", "user", "nobody")
        self.assertEqual(p.returncode, 1)
        self.assertEqual(json.loads(p.stdout)["error"], "not_found")

    def test_unreachable(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there now
        url = "http://127.0.0.1:%d" % port
        p = subprocess.run([ENSCTL, "--url", url, "--token-file", self.token_file, "stats"],
                           capture_output=True, text=True, timeout=20, env=clean_env())
        self.assertEqual(p.returncode, 3)
        self.assertIn("ensctl: cannot reach the admin API at %s: Connection refused" % url,
                      p.stderr)

    def test_usage_errors(self):
        for args in ([], ["frobnicate"], ["tenant", "add"], ["tenant", "add", "a", "b"],
                     ["tenant", "add", "a", "--preview-cap", "most"],
                     ["user", "u_42", "--preview-cap", "full"], ["--bogus", "stats"]):
            p = self.run_ctl(*args)
            self.assertEqual(p.returncode, 2, args)
            self.assertIn("ensctl:", p.stderr)
        self.assertEqual(len(self.fake.requests), 0)

    def test_discovery_from_environment(self):
        p = self.run_ctl("user", "u_42", flags=False,
                         env=clean_env(ENS_ADMIN_URL=self.fake.url, ENS_ADMIN_TOKEN=TOKEN))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.last()["headers"]["Authorization"], "Bearer " + TOKEN)

    def test_discovery_from_config(self):
        conf_dir = os.path.join(self.tmp.name, "etc")
        os.mkdir(conf_dir)
        with open(os.path.join(conf_dir, "ens.json"), "w") as f:
            json.dump({"listen": {"admin": "0.0.0.0:%d" % self.fake.port},
                       "admin": {"token_file": "admin.token"}}, f)
        with open(os.path.join(conf_dir, "admin.token"), "w") as f:
            f.write(TOKEN)
        p = self.run_ctl("--config", os.path.join(conf_dir, "ens.json"), "stats", flags=False)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.last()["path"], "/metrics")
        # a broken config file is a local error, named
        with open(os.path.join(conf_dir, "ens.json"), "w") as f:
            f.write('{"listen":{"admn":"x"}}')
        p = self.run_ctl("--config", os.path.join(conf_dir, "ens.json"), "stats", flags=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn('unknown key "listen.admn"', p.stderr)

    def test_default_token_file_missing(self):
        p = self.run_ctl("stats", flags=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("cannot read the admin token from ./ens-admin.token", p.stderr)


if __name__ == "__main__":
    ENSCTL = sys.argv.pop(1)
    unittest.main(verbosity=2)
