#!/usr/bin/python3
"""The run command's demo: a whole ENS on this machine, one notification end to end.

Starts a private redis-server, the Exchange and APNs simulators and ensd (all on
127.0.0.1, state under run/), creates a tenant and an API token, enrolls an
iPhone for alice@contoso.com, delivers a mail to her simulated Inbox and shows
the push the simulated Apple received. Then it leaves everything running until
Ctrl-C and says how to talk to it."""
import argparse
import json
import os
import shutil
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ensstack  # noqa: E402

BOLD = "\033[1m" if sys.stdout.isatty() else ""
DIM = "\033[2m" if sys.stdout.isatty() else ""
END = "\033[0m" if sys.stdout.isatty() else ""

step_no = 0


def step(msg):
    global step_no
    step_no += 1
    print("%s[%d] %s%s" % (BOLD, step_no, msg, END), flush=True)


def detail(msg):
    print("    " + DIM + msg.replace("\n", "\n    ") + END, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--build", default="build", help="the CMake build directory")
    ap.add_argument("--dir", default="run", help="where the demo keeps its state")
    ap.add_argument("--keep-state", action="store_true",
                    help="reuse the state directory of an earlier run instead of starting afresh")
    ap.add_argument("--fresh", action="store_true", help=argparse.SUPPRESS)  # the default; kept for old habits
    ap.add_argument("--exit", action="store_true", help="stop after the demo instead of waiting")
    a = ap.parse_args()

    root = ensstack.ROOT
    build = os.path.join(root, a.build)
    work = os.path.join(root, a.dir)
    # Each demo starts from nothing, so what it shows is this run's mailbox.
    if not a.keep_state and os.path.isdir(work):
        shutil.rmtree(work)
    stack = ensstack.Stack(work, os.path.join(build, "ensd"), os.path.join(build, "ensctl"))

    def stop(*_):
        print("\nstopping...", flush=True)
        stack.stop()
        sys.exit(0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        step("Starting a private redis-server, the Exchange and APNs simulators, and ensd")
        stack.start()
        p = stack.ports
        detail("redis-server       127.0.0.1:%d  (data in %s/redis, AOF on)" % (p["redis"], a.dir))
        detail("Exchange simulator https://127.0.0.1:%d/EWS/Exchange.asmx" % p["ews"])
        detail("APNs simulator     https://127.0.0.1:%d (HTTP/2)" % p["apns"])
        detail("ensd               https://127.0.0.1:%d/api/ens, admin http://127.0.0.1:%d" %
               (p["public"], p["admin"]))
        st, body, _ = stack.public("GET", "/ready")
        detail("GET /api/ens/ready -> %d %s" % (st, body.decode()))

        step("Operator: a tenant and its API token (admin API)")
        tenant, token = stack.create_tenant("Contoso")
        detail("tenant %s, API token %s...%s (shown once)" % (tenant, token[:8], token[-4:]))

        step("Exchange: a mailbox alice@contoso.com")
        password = "correct horse battery staple"
        stack.ews_control("POST", "/mailboxes", {"email": "alice@contoso.com", "password": password})

        step("Device: fetch the enrollment keys and seal alice's credentials to them (JWE)")
        keys = stack.jwks()["keys"]
        detail("GET /api/ens/v1/keys -> %s" % ", ".join("%s %s" % (k["alg"], k["kid"][:10] + "...") for k in keys))
        payload = stack.enrollment("alice@contoso.com", password, device_id="alices-iphone",
                                   token_hex="a1b2c3d4" * 8)
        st, resp = stack.subscribe(token, payload)
        detail("POST /api/ens/v1/subscribe -> %d %s" % (st, json.dumps(resp)))
        if st != 200:
            raise SystemExit("enrollment failed; see %s/ensd.log" % a.dir)
        user = resp["userId"]

        subs = stack.ews_control("GET", "/subscriptions?email=alice@contoso.com")
        step("Exchange now holds a push subscription for the Inbox")
        for s in subs:
            url = s["url"]
            detail("subscription %s... calls back %s<token: %d chars, holds the key to the "
                   "credentials>" % (s["id"][:12], url[:url.rfind("/") + 1], len(url) - url.rfind("/") - 1))

        step("A mail arrives in alice's Inbox")
        stack.ews_control("POST", "/deliver", {"email": "alice@contoso.com", "fromName": "Bob Jones",
                                                "fromEmail": "bob@fabrikam.com",
                                                "subject": "Lunch on Friday?"})
        detail("from Bob Jones <bob@fabrikam.com>: \"Lunch on Friday?\"")
        detail("Exchange POSTs SendNotification to ensd; ensd answers OK at once, opens the token,")
        detail("fetches sender and subject (GetItem) and the unread count (GetFolder), then pushes.")

        pushes = stack.wait_pushes(1)
        push = pushes[-1]
        step("The simulated Apple received the push")
        detail("POST %s" % push["headers"].get(":path"))
        for h in ("apns-push-type", "apns-priority", "apns-topic", "apns-id"):
            if h in push.get("headers", {}):
                detail("%s: %s" % (h, push["headers"][h]))
        detail(json.dumps(push.get("payload"), indent=2))

        step("Operator: what ensd knows of alice's mailbox right now (ensctl user)")
        import subprocess
        out = subprocess.run([stack.ensctl_bin, "--config", stack.config, "user", "alice@contoso.com"],
                             capture_output=True, text=True, timeout=20)
        detail((out.stdout or out.stderr).rstrip())

        print()
        print("%sENS is running.%s Talk to it:" % (BOLD, END))
        ensctl = os.path.relpath(os.path.join(build, "ensctl"), os.getcwd())
        print("  %s --config %s/ens.json user alice@contoso.com" % (ensctl, a.dir))
        print("  %s --config %s/ens.json stats" % (ensctl, a.dir))
        print("  %s --config %s/ens.json tenant add Fabrikam" % (ensctl, a.dir))
        print("  curl --cacert %s/pki/ca.pem https://127.0.0.1:%d/api/ens/alive" % (a.dir, p["public"]))
        print("  curl -X POST http://127.0.0.1:%d/deliver -d '{\"email\":\"alice@contoso.com\","
              "\"fromName\":\"Carol\",\"fromEmail\":\"carol@example.com\",\"subject\":\"Hi\"}'"
              % p["ews_ctl"])
        print("  curl http://127.0.0.1:%d/pushes    # what Apple received" % p["apns_ctl"])
        print("  logs: %s/ensd.log, %s/exchange_sim.log, %s/apns_sim.log" % (a.dir, a.dir, a.dir))
        print("Ctrl-C stops everything.")
        if a.exit:
            stack.stop()
            return
        while True:
            time.sleep(1)
            for name, proc in list(stack.procs.items()):
                if proc.poll() is not None:
                    print("%s exited with %s; see %s/%s.log" % (name, proc.returncode, a.dir, name))
                    stack.stop()
                    sys.exit(1)
    except Exception as e:
        print("demo failed: %s" % e, file=sys.stderr)
        for name in ("ensd", "exchange_sim", "apns_sim"):
            path = os.path.join(work, name + ".log")
            if os.path.exists(path):
                with open(path, "rb") as f:
                    tail = f.read()[-3000:].decode(errors="replace")
                print("---- %s (tail) ----\n%s" % (path, tail), file=sys.stderr)
        stack.stop()
        sys.exit(1)


if __name__ == "__main__":
    main()
