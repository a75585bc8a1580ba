#!/usr/bin/python3
"""Integration test of tools/exchange_sim.py, driven like ENS will drive it:
hand-written SOAP over HTTPS with Basic auth, and a small callback receiver on
loopback that answers SendNotification like ENS does.

Usage: exchange_sim_test.py --sim tools/exchange_sim.py --pki tests/data/pki
"""

import argparse
import base64
import http.client
import http.server
import json
import os
import queue
import ssl
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET

NS_SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
NS_M = "http://schemas.microsoft.com/exchange/services/2006/messages"
NS_T = "http://schemas.microsoft.com/exchange/services/2006/types"
UA = "MailNotificationService/0.1.0 (ens)"

RESULT = ('<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="%s" xmlns:m="%s">'
          '<soap:Body><m:SendNotificationResult><m:SubscriptionStatus>%%s</m:SubscriptionStatus>'
          '</m:SendNotificationResult></soap:Body></soap:Envelope>' % (NS_SOAP, NS_M))


def q(ns, local):
    return "{%s}%s" % (ns, local)


# ---- callback receiver ----------------------------------------------------------

class Receiver(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), ReceiverHandler)
        self.notifications = queue.Queue()
        self.answer = {}  # path -> ("OK" | "Unsubscribe" | int status)


class ReceiverHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        root = ET.fromstring(body)
        msg = root.find("%s/%s/%s/%s" % (q(NS_SOAP, "Body"), q(NS_M, "SendNotification"),
                                         q(NS_M, "ResponseMessages"),
                                         q(NS_M, "SendNotificationResponseMessage")))
        n = msg.find(q(NS_M, "Notification"))
        events = []
        for ev in n:
            if ev.tag.startswith("{%s}" % NS_T) and ev.tag.endswith("Event"):
                item = ev.find(q(NS_T, "ItemId"))
                uc = ev.find(q(NS_T, "UnreadCount"))
                events.append({"type": ev.tag.split("}")[1],
                               "watermark": ev.findtext(q(NS_T, "Watermark")),
                               "itemId": item.get("Id") if item is not None else None,
                               "unread": int(uc.text) if uc is not None else None})
        self.server.notifications.put({
            "path": self.path,
            "soapAction": self.headers.get("SOAPAction"),
            "subscriptionId": n.findtext(q(NS_T, "SubscriptionId")),
            "previous": n.findtext(q(NS_T, "PreviousWatermark")),
            "more": n.findtext(q(NS_T, "MoreEvents")),
            "events": events})
        answer = self.server.answer.get(self.path, "OK")
        if isinstance(answer, int):
            self.send_response(answer)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        out = (RESULT % answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/xml; charset=utf-8")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


# ---- helpers ------------------------------------------------------------------------

class Sim:
    def __init__(self, args):
        pki = args.pki
        self.proc = subprocess.Popen(
            [sys.executable, args.sim, "--listen", "127.0.0.1:0", "--control", "127.0.0.1:0",
             "--cert", os.path.join(pki, "server.pem"), "--key", os.path.join(pki, "server.key"),
             "--callback-ca", os.path.join(pki, "ca.pem"), "--first-status-delay", "0.5",
             "--status-scale", "0.5", "--retry-base", "0.2"],
            stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("exchange_sim ready"), line
        fields = dict(kv.split("=") for kv in line.split()[2:])
        self.ews = fields["ews"].rsplit(":", 1)
        self.ctl = fields["control"].rsplit(":", 1)
        self.tls = ssl.create_default_context(cafile=os.path.join(pki, "ca.pem"))

    def close(self):
        self.proc.terminate()
        self.proc.wait(5)

    def control(self, method, path, doc=None):
        c = http.client.HTTPConnection(self.ctl[0], int(self.ctl[1]), timeout=5)
        body = json.dumps(doc).encode() if doc is not None else None
        c.request(method, path, body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        out = json.loads(r.read() or b"null")
        c.close()
        assert 200 <= r.status < 300, (path, r.status, out)
        return out

    def ews_call(self, body_xml, user="alice@contoso.com", password="s3cret", ua=UA):
        env = ('<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="%s" '
               'xmlns:t="%s" xmlns:m="%s"><soap:Header><t:RequestServerVersion '
               'Version="Exchange2013"/></soap:Header><soap:Body>%s</soap:Body></soap:Envelope>'
               % (NS_SOAP, NS_T, NS_M, body_xml)).encode()
        c = http.client.HTTPSConnection(self.ews[0], int(self.ews[1]), timeout=5,
                                        context=self.tls)
        headers = {"Content-Type": "text/xml; charset=utf-8",
                   "Authorization": "Basic " + base64.b64encode(
                       ("%s:%s" % (user, password)).encode()).decode()}
        if ua:
            headers["User-Agent"] = ua
        c.request("POST", "/EWS/Exchange.asmx", body=env, headers=headers)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, r.getheader("WWW-Authenticate"), data


def subscribe_xml(url, freq=1, watermark=None, swap=False):
    parts = ['<t:FolderIds><t:DistinguishedFolderId Id="inbox"/></t:FolderIds>',
             "<t:EventTypes><t:EventType>NewMailEvent</t:EventType>"
             "<t:EventType>CreatedEvent</t:EventType><t:EventType>ModifiedEvent</t:EventType>"
             "</t:EventTypes>"]
    if watermark:
        parts.append("<t:Watermark>%s</t:Watermark>" % watermark)
    tail = ["<t:StatusFrequency>%d</t:StatusFrequency>" % freq, "<t:URL>%s</t:URL>" % url]
    if swap:
        tail.reverse()
    return ("<m:Subscribe><m:PushSubscriptionRequest>%s</m:PushSubscriptionRequest>"
            "</m:Subscribe>" % "".join(parts + tail))


def response_message(data, op):
    root = ET.fromstring(data)
    return root.find("%s/%s/%s/%s" % (q(NS_SOAP, "Body"), q(NS_M, op + "Response"),
                                      q(NS_M, "ResponseMessages"),
                                      q(NS_M, op + "ResponseMessage")))


def subscribe(sim, url, **kw):
    status, _, data = sim.ews_call(subscribe_xml(url, **kw))
    assert status == 200, (status, data)
    m = response_message(data, "Subscribe")
    assert m.get("ResponseClass") == "Success", data
    return m.findtext(q(NS_M, "SubscriptionId")), m.findtext(q(NS_M, "Watermark"))


def next_notification(rx, path, timeout=5.0):
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        assert left > 0, "no notification for %s" % path
        n = rx.notifications.get(timeout=left)
        if n["path"] == path:
            return n


def wait_until(pred, timeout=5.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


# ---- the test -------------------------------------------------------------------------

def run(args):
    rx = Receiver()
    threading.Thread(target=rx.serve_forever, daemon=True).start()
    base = "http://127.0.0.1:%d" % rx.server_address[1]
    sim = Sim(args)
    try:
        sim.control("POST", "/mailboxes", {"email": "alice@contoso.com", "password": "s3cret",
                                           "username": "CONTOSO\\alice"})

        # Auth: wrong password and unknown user are 401 with a Basic challenge.
        status, challenge, _ = sim.ews_call(subscribe_xml(base + "/x"), password="wrong")
        assert status == 401 and challenge and challenge.startswith("Basic"), status
        status, _, _ = sim.ews_call(subscribe_xml(base + "/x"), user="mallory")
        assert status == 401
        # DOMAIN\user works as well as the address; a missing User-Agent does not.
        status, _, data = sim.ews_call("<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly"
                                       "</t:BaseShape></m:FolderShape><m:FolderIds>"
                                       '<t:DistinguishedFolderId Id="inbox"/></m:FolderIds>'
                                       "</m:GetFolder>", user="CONTOSO\\alice")
        assert status == 200, status
        status, _, _ = sim.ews_call(subscribe_xml(base + "/x"), ua=None)
        assert status == 400

        # Strictness: schema order and values.
        status, _, data = sim.ews_call(subscribe_xml(base + "/x", swap=True))
        assert status == 500 and b"ErrorSchemaValidation" in data, (status, data)
        status, _, data = sim.ews_call(subscribe_xml(base + "/x", freq=1441))
        assert status == 500 and b"ErrorSchemaValidation" in data
        status, _, data = sim.ews_call(subscribe_xml("ftp://127.0.0.1/x"))
        assert b"ErrorInvalidPushSubscriptionUrl" in data
        status, _, data = sim.ews_call(subscribe_xml(base + "/x", watermark="bm9wZQ=="))
        assert response_message(data, "Subscribe").findtext(
            q(NS_M, "ResponseCode")) == "ErrorInvalidWatermark"

        # Subscribe; the first StatusEvent arrives after --first-status-delay.
        t0 = time.monotonic()
        sub_id, wm = subscribe(sim, base + "/cb/one?t=a&amp;b")
        n = next_notification(rx, "/cb/one?t=a&b", 3)
        assert time.monotonic() - t0 < 2.5
        assert n["subscriptionId"] == sub_id and n["previous"] == wm
        assert n["soapAction"] == NS_M + "/SendNotification"
        assert [e["type"] for e in n["events"]] == ["StatusEvent"]
        last_wm = n["events"][-1]["watermark"]

        # New mail: Created + NewMail for the item, Modified for the Inbox with UnreadCount.
        item = sim.control("POST", "/deliver", {"email": "alice@contoso.com",
                                                "fromName": "Bob <Boss>",
                                                "fromEmail": "bob@example.com",
                                                "subject": "Q3 & you"})["itemId"]
        seen = []
        while "NewMailEvent" not in [e["type"] for e in seen] or not any(
                e["unread"] is not None for e in seen):
            n = next_notification(rx, "/cb/one?t=a&b", 3)
            assert n["previous"] == last_wm, "watermarks must chain"
            last_wm = n["events"][-1]["watermark"]
            seen += [e for e in n["events"] if e["type"] != "StatusEvent"]
        new_mail = [e for e in seen if e["type"] == "NewMailEvent"][0]
        assert new_mail["itemId"] == item
        assert [e["unread"] for e in seen if e["unread"] is not None] == [1]

        # GetItem: fields of the item; an unknown id is ErrorItemNotFound.
        status, _, data = sim.ews_call(
            "<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties>"
            '<t:FieldURI FieldURI="item:Subject"/><t:FieldURI FieldURI="message:From"/>'
            '<t:FieldURI FieldURI="message:IsRead"/></t:AdditionalProperties></m:ItemShape>'
            '<m:ItemIds><t:ItemId Id="%s"/><t:ItemId Id="bm9wZQ=="/></m:ItemIds></m:GetItem>'
            % item)
        assert status == 200, data
        msgs = ET.fromstring(data).findall(".//" + q(NS_M, "GetItemResponseMessage"))
        assert len(msgs) == 2
        msg = msgs[0].find("%s/%s" % (q(NS_M, "Items"), q(NS_T, "Message")))
        assert msg.findtext(q(NS_T, "Subject")) == "Q3 & you"
        assert msg.findtext(".//" + q(NS_T, "Name")) == "Bob <Boss>"
        assert msg.findtext(".//" + q(NS_T, "EmailAddress")) == "bob@example.com"
        assert msg.findtext(q(NS_T, "IsRead")) == "false"
        assert msgs[1].get("ResponseClass") == "Error"
        assert msgs[1].findtext(q(NS_M, "ResponseCode")) == "ErrorItemNotFound"

        # GetFolder: the Inbox unread count.
        status, _, data = sim.ews_call(
            "<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties>"
            '<t:FieldURI FieldURI="folder:UnreadCount"/></t:AdditionalProperties></m:FolderShape>'
            '<m:FolderIds><t:DistinguishedFolderId Id="inbox"/></m:FolderIds></m:GetFolder>')
        assert ET.fromstring(data).findtext(".//" + q(NS_T, "UnreadCount")) == "1"

        # The Unsubscribe operation refuses push ids, as the real server does.
        status, _, data = sim.ews_call("<m:Unsubscribe><m:SubscriptionId>%s</m:SubscriptionId>"
                                       "</m:Unsubscribe>" % sub_id)
        assert response_message(data, "Unsubscribe").findtext(
            q(NS_M, "ResponseCode")) == "ErrorInvalidPullSubscriptionId"

        # Answering Unsubscribe ends the subscription.
        subs = sim.control("GET", "/subscriptions?email=alice@contoso.com")
        assert [s["id"] for s in subs] == [sub_id] and subs[0]["delivered"] >= 2
        rx.answer["/cb/one?t=a&b"] = "Unsubscribe"
        sim.control("POST", "/status", {"email": "alice@contoso.com"})
        wait_until(lambda: sim.control("GET", "/subscriptions?email=alice@contoso.com") == [],
                   what="Unsubscribe to delete the subscription")

        # A failing endpoint: retries with backoff, then silent deletion
        # (StatusFrequency 1 at 0.5 s/min: tries at 0, 0.2, 0.6 s, then gone).
        rx.answer["/cb/two"] = 500
        sub2, _ = subscribe(sim, base + "/cb/two")
        for _ in range(3):
            assert next_notification(rx, "/cb/two", 3)["subscriptionId"] == sub2
        wait_until(lambda: sim.control("GET", "/subscriptions") == [],
                   what="retries to run out")

        # Replay from a known watermark.
        sub3, _ = subscribe(sim, base + "/cb/three", watermark=wm)
        n = next_notification(rx, "/cb/three", 3)
        assert n["previous"] == wm
        assert "NewMailEvent" in [e["type"] for e in n["events"]]
        sim.control("POST", "/kill", {"email": "alice@contoso.com"})
        assert sim.control("GET", "/subscriptions") == []

        # https callbacks are verified against --callback-ca (server.pem names 127.0.0.1).
        rxs = Receiver()
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(os.path.join(args.pki, "server.pem"), os.path.join(args.pki, "server.key"))
        rxs.socket = tls.wrap_socket(rxs.socket, server_side=True)
        threading.Thread(target=rxs.serve_forever, daemon=True).start()
        sub4, wm4 = subscribe(sim, "https://127.0.0.1:%d/cb/tls" % rxs.server_address[1])
        n = next_notification(rxs, "/cb/tls", 3)
        assert n["subscriptionId"] == sub4 and n["previous"] == wm4
        rxs.shutdown()
        sim.control("POST", "/kill", {"email": "alice@contoso.com"})

        # A folder id may name a mailbox: the caller's own works, another's is
        # refused, a delegate reaches it but may not subscribe it, and an item
        # id of another mailbox is refused too.
        sim.control("POST", "/mailboxes", {"email": "bob@contoso.com", "password": "b0b"})
        sim.control("POST", "/mailboxes", {"email": "eve@contoso.com", "password": "3ve"})

        def named_inbox(addr):
            return ('<t:DistinguishedFolderId Id="inbox"><t:Mailbox><t:EmailAddress>%s'
                    '</t:EmailAddress></t:Mailbox></t:DistinguishedFolderId>' % addr)

        def getfolder(ids, **kw):
            status, _, data = sim.ews_call(
                "<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape>"
                "<m:FolderIds>%s</m:FolderIds></m:GetFolder>" % ids, **kw)
            assert status == 200, (status, data)
            return ET.fromstring(data).findall(".//" + q(NS_M, "GetFolderResponseMessage"))

        own = '<t:DistinguishedFolderId Id="inbox"/>'
        msgs = getfolder(named_inbox("Alice@Contoso.com") + own)
        ids = [m.find(".//" + q(NS_T, "FolderId")).get("Id") for m in msgs]
        assert len(ids) == 2 and ids[0] == ids[1], ids
        msgs = getfolder(named_inbox("bob@contoso.com") + own)
        assert msgs[0].findtext(q(NS_M, "ResponseCode")) == "ErrorAccessDenied"
        assert msgs[1].get("ResponseClass") == "Success"
        msgs = getfolder(named_inbox("nobody@contoso.com"))
        assert msgs[0].findtext(q(NS_M, "ResponseCode")) == "ErrorNonExistentMailbox"
        sim.control("POST", "/delegates", {"email": "bob@contoso.com",
                                           "delegate": "eve@contoso.com"})
        msgs = getfolder(named_inbox("bob@contoso.com") + own, user="eve@contoso.com",
                         password="3ve")
        ids = [m.find(".//" + q(NS_T, "FolderId")).get("Id") for m in msgs]
        assert ids[0] != ids[1], "a delegate reaches another mailbox's Inbox, not its own"
        sub_named = subscribe_xml(base + "/x").replace(
            '<t:DistinguishedFolderId Id="inbox"/>', named_inbox("bob@contoso.com"))
        status, _, data = sim.ews_call(sub_named, user="eve@contoso.com", password="3ve")
        assert response_message(data, "Subscribe").findtext(
            q(NS_M, "ResponseCode")) == "ErrorSubscriptionDelegateAccessNotSupported", data
        status, _, data = sim.ews_call(sub_named)
        assert response_message(data, "Subscribe").findtext(
            q(NS_M, "ResponseCode")) == "ErrorAccessDenied", data
        bob_item = sim.control("POST", "/deliver", {"email": "bob@contoso.com",
                                                    "subject": "private"})["itemId"]
        status, _, data = sim.ews_call(
            "<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape>"
            '<m:ItemIds><t:ItemId Id="%s"/></m:ItemIds></m:GetItem>' % bob_item)
        assert b"ErrorAccessDenied" in data and b"private" not in data, data
        sim.control("POST", "/kill", {"email": "bob@contoso.com"})

        # /fail makes the next EWS request fail with a busy Fault.
        sim.control("POST", "/fail", {"count": 1, "status": 500})
        status, _, data = sim.ews_call(subscribe_xml(base + "/x"))
        assert status == 500 and b"BackOffMilliseconds" in data

        # The request log names operations and clients, never passwords.
        log = sim.control("GET", "/requests")
        ops = [r["op"] for r in log if r["ok"]]
        assert {"Subscribe", "GetItem", "GetFolder", "Unsubscribe"} <= set(ops), ops
        assert all(r["userAgent"] == UA for r in log if r["ok"])
        assert "s3cret" not in json.dumps(log) and "wrong" not in json.dumps(log)
    finally:
        sim.close()
        rx.shutdown()


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    ap.add_argument("--sim", default=os.path.join(root, "tools", "exchange_sim.py"))
    ap.add_argument("--pki", default=os.path.join(root, "tests", "data", "pki"))
    args = ap.parse_args()
    t0 = time.monotonic()
    run(args)
    print("exchange_sim_test: ok (%.1f s)" % (time.monotonic() - t0))


if __name__ == "__main__":
    main()
