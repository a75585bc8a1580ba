#!/usr/bin/python3
"""A mailbox leaves memory once its work is done and its subscription is still
watched: the health index in Redis wakes it when Exchange goes silent.

A real redis-server, the Exchange and APNs simulators and ensd_test (ensd with a
clock that SIGUSR2 moves forward, so that "no status event for 2 x
StatusFrequency" passes without waiting minutes).

1. While Exchange's status events keep coming, the mailbox actor leaves memory
   after each one (ens_actors_resident back to its baseline), its subscription
   stays active, and its due time sits in the health index.
2. Exchange silently drops the subscription (no Unsubscribe, no callback); time
   passes: ensd re-creates it by itself from the callback token it kept in the
   memo cache, with no help from the phone, and the next mail is pushed.
3. After a restart (the memo is gone) the same silence makes the mailbox stale
   and its device is asked to check in, once.

Usage: health_test.py ENSD_TEST_BINARY WORKDIR"""
import json
import os
import shutil
import signal
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tools"))
import ensstack  # noqa: E402

ENSD = None
WORK = None
ALICE = "alice@contoso.com"
PASSWORD = "alice-Pa55"
TOKEN = "a1" * 32
STEP_MS = 4 * 60 * 1000  # past 2 x StatusFrequency (1 min) + 60 s of slack


class Health(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if os.path.isdir(WORK):
            shutil.rmtree(WORK)
        # Status events every 3 s (the simulator's minute is 3 s); the actor
        # leaves memory 300 ms after its work.
        cls.s = ensstack.Stack(WORK, ENSD, status_scale=3.0,
                               env={"ENS_MAILBOX_PASSIVATE_AFTER_MS": "300",
                                    "ENS_TEST_CLOCK_STEP_MS": str(STEP_MS)})
        cls.s.start()
        _, cls.api_token = cls.s.create_tenant("Contoso")
        cls.s.ews_control("POST", "/mailboxes", {"email": ALICE, "password": PASSWORD})
        st, resp = cls.s.subscribe(cls.api_token, cls.s.enrollment(
            ALICE, PASSWORD, device_id="alice-phone", token_hex=TOKEN))
        assert st == 200, resp
        cls.uid = resp["userId"]

    @classmethod
    def tearDownClass(cls):
        cls.s.stop()

    def metric(self, name):
        st, b, _ = self.s.admin("GET", "/metrics")
        for line in b.decode().splitlines():
            parts = line.split()
            if parts and parts[0] == name:
                return float(parts[-1])
        self.fail("no metric " + name)

    def due_ms(self):
        """The mailbox's due time in the health index, or None."""
        for shard in range(16):
            out = self.s.redis_cli("ZSCORE", "ens:health:{h%02d}" % shard, self.uid).strip()
            if out:
                return float(out)
        return None

    def zadds(self):
        for line in self.s.redis_cli("INFO", "commandstats").splitlines():
            if line.startswith("cmdstat_zadd:"):
                return int(line.split("calls=")[1].split(",")[0])
        return 0

    def subs(self):
        return self.s.ews_control("GET", "/subscriptions?email=" + ALICE)

    def state(self):
        st, b, _ = self.s.admin("GET", "/admin/v1/users/" + self.uid)
        self.assertEqual(st, 200, b)
        return json.loads(b)["subscription"]

    def advance_clock(self):
        self.s.procs["ensd"].send_signal(signal.SIGUSR2)

    def checkins(self):
        return [p for p in self.s.pushes() if p["payload"].get("ens", {}).get("type") == "checkin"]

    def test_1_resident_returns_to_baseline_while_healthy(self):
        s = self.s
        callbacks0 = self.metric('ens_callbacks_total{result="ok"}')
        passivations0 = self.metric("ens_actor_hibernations_total")
        cred_reads0 = self.metric("ens_callback_cred_reads_total")
        zadd0 = self.zadds()
        # Over a few status events the actor comes and goes: it is seen out of
        # memory between them, while they keep being answered OK.
        seen_zero = 0
        t_end = time.time() + 10
        while time.time() < t_end:
            if self.metric("ens_actors_resident") == 0:
                seen_zero += 1
            time.sleep(0.2)
        self.assertGreater(seen_zero, 5, "the mailbox actor never left memory")
        self.assertGreaterEqual(self.metric('ens_callbacks_total{result="ok"}'), callbacks0 + 2)
        self.assertGreaterEqual(self.metric("ens_actor_hibernations_total"), passivations0 + 2)
        # Status events with the token already proven read no sealed blob,
        # even across passivation (the token waits in the memo cache).
        self.assertEqual(self.metric("ens_callback_cred_reads_total"), cred_reads0)
        # The due time moves only when it would come within a status interval:
        # not at every status event (here 1 minute to ensd, 3 s to Exchange).
        callbacks = self.metric('ens_callbacks_total{result="ok"}') - callbacks0
        self.assertGreaterEqual(callbacks, 3)
        self.assertLessEqual(self.zadds() - zadd0, 1, "the health index written at every event")
        # The subscription is active and its next look is about 3 minutes out.
        self.assertEqual(self.state()["state"], "active")
        due = self.due_ms()
        self.assertIsNotNone(due)
        self.assertTrue(time.time() * 1000 + 60_000 < due < time.time() * 1000 + 200_000, due)
        # Mail still flows through a passivated mailbox.
        s.ews_control("POST", "/deliver", {"email": ALICE, "fromName": "Bob",
                                           "subject": "while asleep"})
        push = s.wait_pushes(1)[-1]
        self.assertEqual(push["payload"]["aps"]["alert"]["body"], "while asleep")
        ensstack.wait_for(lambda: self.metric("ens_actors_resident") == 0, 10,
                          "the resident set back to its baseline")
        # (the gauge is copied from each scheduler once a second)
        ensstack.wait_for(lambda: self.metric("ens_mailbox_cache_entries") >= 1, 5,
                          "the passivated mailbox's memo in the cache gauge")

    def test_2_silent_drop_is_repaired_without_the_phone(self):
        s = self.s
        before = self.subs()
        self.assertEqual(len(before), 1)
        n_pushes = len(s.pushes())
        woken0 = self.metric("ens_health_due_total")
        s.ews_control("POST", "/kill", {"email": ALICE})  # Exchange forgets it, says nothing
        self.assertEqual(self.subs(), [])
        self.advance_clock()
        ensstack.wait_for(lambda: len(self.subs()) == 1, 20,
                          "ensd to re-create the subscription by itself")
        after = self.subs()
        self.assertNotEqual(after[0]["id"], before[0]["id"])
        self.assertGreater(self.metric("ens_health_due_total"), woken0)
        self.assertEqual(self.checkins(), [], "the phone was asked although ensd could repair")
        ensstack.wait_for(lambda: self.state()["state"] == "active", 10, "active again")
        s.ews_control("POST", "/deliver", {"email": ALICE, "fromName": "Carol",
                                           "subject": "after the repair"})
        ensstack.wait_for(lambda: len(s.pushes()) > n_pushes, 20, "the next mail's push")
        self.assertEqual(s.pushes()[-1]["payload"]["aps"]["alert"]["body"], "after the repair")

    def test_3_after_a_restart_the_device_is_asked_to_check_in(self):
        s = self.s
        s.stop_ensd()
        s.start_ensd()  # the memo cache (and the callback token) is gone
        s.ews_control("POST", "/kill", {"email": ALICE})
        # The new process's clock starts from real time again, while the due
        # time was written with the first one's (moved) clock: move past both.
        for _ in range(3):
            self.advance_clock()
            time.sleep(0.3)  # signals that arrive together are taken as one
        ensstack.wait_for(lambda: len(self.checkins()) == 1, 20, "a check-in request")
        push = self.checkins()[0]
        self.assertEqual(push["headers"]["apns-push-type"], "background")
        self.assertEqual(push["payload"]["aps"], {"content-available": 1})
        self.assertEqual(self.state()["state"], "stale")
        self.assertEqual(self.subs(), [])
        # Asked once: another look within 20 minutes asks no more.
        due = self.due_ms()
        self.assertIsNotNone(due)
        time.sleep(2)
        self.assertEqual(len(self.checkins()), 1)

    def test_3b_a_silent_phone_is_asked_less_and_less(self):
        """Stale and unanswered, the mailbox asks its device again after as long
        as it has been silent (20 minutes at first, at most 6 hours): over six
        hours a handful of silent pushes, not one every 20 minutes."""
        asked = len(self.checkins())
        self.assertGreaterEqual(asked, 1)
        for _ in range(90):  # 90 x 4 minutes
            self.advance_clock()
            time.sleep(0.3)
        more = len(self.checkins()) - asked
        self.assertGreaterEqual(more, 2, "the device was not asked again")
        self.assertLessEqual(more, 6, "asked %d times in 6 hours" % more)
        self.assertEqual(self.state()["state"], "stale")

    def test_4_a_due_entry_with_no_mailbox_leaves_the_index(self):
        """An entry whose mailbox is gone (deleted, or never was) is woken
        once and forgotten, not leased again every minute."""
        ghost = "AAAAAAAAAAAAAAAAAAAAAA"  # a well-formed id no mailbox has
        shard = None
        h = 2166136261
        for ch in ghost.encode():
            h = ((h ^ ch) * 16777619) & 0xffffffff
        shard = h % 16
        key = "ens:health:{h%02d}" % shard
        self.s.redis_cli("ZADD", key, "1", ghost)
        ensstack.wait_for(lambda: self.s.redis_cli("ZSCORE", key, ghost).strip() == "", 15,
                          "the ghost entry to leave the index")

    def test_5_a_stale_device_index_entry_is_repaired_on_read(self):
        """The device index is written beside the mailbox, not with it: an
        entry left naming a mailbox that does not hold the device (a write
        that failed) answers 404 once and is gone."""
        ghost_dev = "BBBBBBBBBBBBBBBBBBBBBB"
        key = "ens:idx:dev:" + ghost_dev
        self.s.redis_cli("SET", key, self.uid)
        st, b, _ = self.s.admin("POST", "/admin/v1/devices/%s/block" % ghost_dev)
        self.assertEqual(st, 404, b)
        ensstack.wait_for(lambda: self.s.redis_cli("EXISTS", key).strip() == "0", 10,
                          "the stale entry to go")
        st, b, _ = self.s.admin("POST", "/admin/v1/devices/%s/block" % ghost_dev)
        self.assertEqual(st, 404, b)


if __name__ == "__main__":
    ENSD, WORK = sys.argv[1], sys.argv[2]
    unittest.main(argv=sys.argv[:1] + sys.argv[3:], verbosity=2)
