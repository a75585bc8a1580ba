#!/usr/bin/python3
"""exchange_sim: an Exchange Web Services simulator for ENS tests and demos.

Strict like the real server (shared/protocols/exchange.md sections 1 and 2):
EWS over HTTPS at POST /EWS/Exchange.asmx with HTTP Basic auth, SOAP 1.1 with
the real namespaces, Subscribe (push, Inbox only, schema element order),
GetItem, GetFolder and Unsubscribe (which, as on the real server, refuses push
subscription ids). Each push subscription has a delivery thread that POSTs
SendNotification callbacks: a first StatusEvent after --first-status-delay, a
StatusEvent heartbeat every StatusFrequency when idle, queued events in batches
of at most 50 with chained watermarks, one request in flight, 60 s timeout,
responses read up to 1024 bytes and parsed for an exact-case OK/Unsubscribe, and
on failure retries after --retry-base seconds, doubling, until the next interval
would exceed StatusFrequency, when the subscription is silently deleted.

A plain-HTTP JSON control API (--control) scripts the mailbox side: create
mailboxes, grant a delegate rights on one, deliver and read mail, force a status
event, kill subscriptions, make the next N EWS requests fail, and inspect
subscriptions and requests. A folder id may name a mailbox (t:Mailbox): the
caller reaches its own and those it is a delegate of, and, as on the real
server, may not subscribe another's through delegate access.

Standard library only. Never logs passwords or mail content.
"""

import argparse
import base64
import collections
import datetime
import http.client
import http.server
import json
import os
import ssl
import sys
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape as _xml_escape

NS_SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
NS_M = "http://schemas.microsoft.com/exchange/services/2006/messages"
NS_T = "http://schemas.microsoft.com/exchange/services/2006/types"
NS_E = "http://schemas.microsoft.com/exchange/services/2006/errors"

MAX_BODY = 1024 * 1024
MAX_EVENTS_PER_POST = 50          # MaximumNotificationEventCount
CALLBACK_TIMEOUT = 60.0           # seconds Exchange waits for our answer
CALLBACK_READ_LIMIT = 1024        # bytes of the answer Exchange reads
MAX_URL = 2082
SERVER_VERSIONS = {"Exchange2007", "Exchange2007_SP1", "Exchange2010", "Exchange2010_SP1",
                   "Exchange2010_SP2", "Exchange2013", "Exchange2013_SP1", "Exchange2016"}
EVENT_TYPES = {"CopiedEvent", "CreatedEvent", "DeletedEvent", "ModifiedEvent", "MovedEvent",
               "NewMailEvent", "FreeBusyChangedEvent"}
ITEM_FIELDS = {"item:Subject", "message:From", "message:Sender", "message:IsRead",
               "item:DateTimeReceived"}
# Schema sequence of PushSubscriptionRequestType: (local name, required).
PUSH_SEQUENCE = [("FolderIds", True), ("EventTypes", True), ("Watermark", False),
                 ("StatusFrequency", True), ("URL", True), ("CallerData", False)]


def q(ns, local):
    return "{%s}%s" % (ns, local)


def esc(s):
    return _xml_escape(str(s), {'"': "&quot;", "'": "&apos;"})


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_id(prefix=b""):
    return base64.b64encode(prefix + os.urandom(24)).decode()


def safe_parse(body):
    """Parse XML, refusing DTDs outright as Exchange does."""
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise ValueError("DTD not allowed")
    return ET.fromstring(body)


class SoapError(Exception):
    """A SOAP Fault (HTTP 500), e.g. schema validation or ErrorServerBusy."""

    def __init__(self, code, text, backoff_ms=None):
        super().__init__(code)
        self.code = code
        self.text = text
        self.backoff_ms = backoff_ms


# ---- state ------------------------------------------------------------------

class Mailbox:
    def __init__(self, email, password, username):
        self.email = email
        self.password = password
        self.username = username
        self.inbox_id = new_id(b"inbox:")
        self.root_id = new_id(b"root:")
        self.items = collections.OrderedDict()  # id -> dict
        self.wm_counter = 0
        self.log = []          # events in watermark order, for replay
        self.known_wm = {}     # watermark -> position in log after which to replay
        self.subs = []
        self.delegates = set()  # lower-case addresses with delegate rights on this mailbox
        self.latest_wm = self.next_watermark()

    def next_watermark(self):
        self.wm_counter += 1
        raw = ("%s|%d" % (self.email, self.wm_counter)).encode()
        wm = base64.b64encode(b"\x01\x00\x00\x00" + raw).decode()
        self.known_wm[wm] = len(self.log)
        self.latest_wm = wm
        return wm

    def unread(self):
        return sum(1 for it in self.items.values() if not it["isRead"])


class Subscription:
    def __init__(self, sim, mailbox, url, freq, version, watermark, caller_data):
        self.sim = sim
        self.mailbox = mailbox
        self.id = new_id(b"sub:")
        self.url = url
        self.freq = freq
        self.version = version
        self.caller_data = caller_data
        self.last_wm = watermark
        self.queue = collections.deque()
        self.delivered = 0
        self.last_result = None
        self.deleted = False
        self.lose_next = False  # control /lose: drop the next notification as if delivered
        self.cond = threading.Condition(sim.lock)
        self.status_due = time.monotonic() + sim.args.first_status_delay
        self.thread = threading.Thread(target=self.run, name="push-" + self.id[:8], daemon=True)

    def freq_seconds(self):
        return self.freq * self.sim.args.status_scale

    def describe(self):
        return {"id": self.id, "url": self.url, "statusFrequency": self.freq,
                "delivered": self.delivered, "lastResult": self.last_result}

    # Delivery thread: one notification in flight, Exchange's backoff rules.
    def run(self):
        sim = self.sim
        while True:
            with sim.lock:
                while not self.deleted and not self.queue and time.monotonic() < self.status_due:
                    self.cond.wait(max(0.0, self.status_due - time.monotonic()))
                if self.deleted:
                    return
                if self.queue:
                    batch = [self.queue.popleft()
                             for _ in range(min(MAX_EVENTS_PER_POST, len(self.queue)))]
                else:
                    batch = [{"type": "StatusEvent", "watermark": self.mailbox.next_watermark()}]
                more = bool(self.queue)
                payload = self.build(batch, more)
                if self.lose_next:
                    # A notification lost on the way: Exchange believes it was
                    # delivered, so the next PreviousWatermark skips it.
                    self.lose_next = False
                    self.last_wm = batch[-1]["watermark"]
                    self.status_due = time.monotonic() + self.freq_seconds()
                    continue
            interval = sim.args.retry_base
            while True:
                result = self.post(payload)
                with sim.lock:
                    self.last_result = result
                    if self.deleted:
                        return
                    if result in ("OK", "Unsubscribe"):
                        self.delivered += 1
                        self.last_wm = batch[-1]["watermark"]
                        self.status_due = time.monotonic() + self.freq_seconds()
                        if result == "Unsubscribe":
                            sim.delete_subscription(self)
                            return
                        break
                    if interval > self.freq_seconds():
                        # PushSubscriptionFailedFinal: gone, and nobody is told.
                        sim.delete_subscription(self)
                        return
                    # The whole interval: new mail queues meanwhile, it does
                    # not bring the retry forward.
                    retry_at = time.monotonic() + interval
                    while not self.deleted and time.monotonic() < retry_at:
                        self.cond.wait(retry_at - time.monotonic())
                    if self.deleted:
                        return
                interval *= 2

    def build(self, batch, more):
        ev_xml = "".join(event_xml(e) for e in batch)
        return ('<?xml version="1.0" encoding="utf-8"?>'
                '<soap11:Envelope xmlns:soap11="%s"><soap11:Header>'
                '<t:RequestServerVersion xmlns:t="%s" Version="%s"/></soap11:Header><soap11:Body>'
                '<m:SendNotification xmlns:m="%s"><m:ResponseMessages>'
                '<m:SendNotificationResponseMessage ResponseClass="Success">'
                '<m:ResponseCode>NoError</m:ResponseCode><m:Notification xmlns:t="%s">'
                '<t:SubscriptionId>%s</t:SubscriptionId>'
                '<t:PreviousWatermark>%s</t:PreviousWatermark>'
                '<t:MoreEvents>%s</t:MoreEvents>%s</m:Notification>'
                '</m:SendNotificationResponseMessage></m:ResponseMessages></m:SendNotification>'
                '</soap11:Body></soap11:Envelope>'
                % (NS_SOAP, NS_T, esc(self.version), NS_M, NS_T, esc(self.id), esc(self.last_wm),
                   "true" if more else "false", ev_xml)).encode()

    def post(self, payload):
        """POST one SendNotification; returns "OK", "Unsubscribe" or a failure tag."""
        u = urllib.parse.urlsplit(self.url)
        path = (u.path or "/") + ("?" + u.query if u.query else "")
        try:
            if u.scheme == "https":
                conn = http.client.HTTPSConnection(u.hostname, u.port or 443,
                                                   timeout=CALLBACK_TIMEOUT,
                                                   context=self.sim.callback_ctx)
            else:
                conn = http.client.HTTPConnection(u.hostname, u.port or 80,
                                                  timeout=CALLBACK_TIMEOUT)
            headers = {"Content-Type": "text/xml; charset=utf-8", "Accept": "text/xml",
                       "SOAPAction": NS_M + "/SendNotification", "Connection": "close",
                       "User-Agent": "ExchangeServicesClient/15.20.0.0"}
            if self.caller_data is not None:
                headers["CallerData"] = self.caller_data
            conn.request("POST", path, body=payload, headers=headers)
            resp = conn.getresponse()
            body = resp.read(CALLBACK_READ_LIMIT)
            conn.close()
        except (OSError, http.client.HTTPException) as e:
            return "error:" + type(e).__name__
        if resp.status < 200 or resp.status > 299:
            return "http:%d" % resp.status
        if len(body) >= CALLBACK_READ_LIMIT:
            return "too-large"
        try:
            root = safe_parse(body)
        except (ET.ParseError, ValueError):
            return "bad-body"
        for el in root.iter():
            if isinstance(el.tag, str) and el.tag.rsplit("}", 1)[-1] == "SubscriptionStatus":
                text = (el.text or "").strip()
                # .NET Enum.Parse without ignoreCase: exact case only.
                return text if text in ("OK", "Unsubscribe") else "bad-status"
        return "bad-body"


def event_xml(e):
    t = e["type"]
    parts = ["<t:Watermark>%s</t:Watermark>" % esc(e["watermark"])]
    if t != "StatusEvent":
        parts.append("<t:TimeStamp>%s</t:TimeStamp>" % e["timestamp"])
        if "itemId" in e:
            parts.append('<t:ItemId Id="%s" ChangeKey="%s"/>' % (esc(e["itemId"]),
                                                                  esc(e["changeKey"])))
        else:
            parts.append('<t:FolderId Id="%s" ChangeKey="%s"/>' % (esc(e["folderId"]),
                                                                    esc(e["changeKey"])))
        parts.append('<t:ParentFolderId Id="%s" ChangeKey="AQAAAA=="/>' % esc(e["parentId"]))
        if "unreadCount" in e:
            parts.append("<t:UnreadCount>%d</t:UnreadCount>" % e["unreadCount"])
    return "<t:%s>%s</t:%s>" % (t, "".join(parts), t)


class Sim:
    def __init__(self, args):
        self.args = args
        self.lock = threading.RLock()
        self.mailboxes = {}           # lower-case email -> Mailbox
        self.subscriptions = {}       # id -> Subscription
        self.fail_count = 0
        self.fail_status = 500
        self.requests = []
        self.callback_ctx = ssl.create_default_context(cafile=args.callback_ca)

    # -- helpers (lock held by callers where state is touched)
    def find_user(self, user, password):
        with self.lock:
            for mb in self.mailboxes.values():
                if user.lower() in (mb.email.lower(), (mb.username or "").lower()):
                    return mb if password == mb.password else None
        return None

    def delete_subscription(self, sub):
        with self.lock:
            sub.deleted = True
            self.subscriptions.pop(sub.id, None)
            if sub in sub.mailbox.subs:
                sub.mailbox.subs.remove(sub)
            sub.cond.notify_all()

    def add_event(self, mb, ev):
        ev["watermark"] = mb.next_watermark()
        ev.setdefault("timestamp", now_iso())
        mb.log.append(ev)
        mb.known_wm[ev["watermark"]] = len(mb.log)  # a replay starts after this event
        for sub in mb.subs:
            sub.queue.append(dict(ev))
            sub.cond.notify_all()

    def item_events(self, mb, item, kinds):
        for kind in kinds:
            self.add_event(mb, {"type": kind, "itemId": item["id"], "changeKey": item["changeKey"],
                                "parentId": mb.inbox_id})

    def inbox_modified(self, mb):
        self.add_event(mb, {"type": "ModifiedEvent", "folderId": mb.inbox_id,
                            "changeKey": new_id()[:12], "parentId": mb.root_id,
                            "unreadCount": mb.unread()})


# ---- EWS --------------------------------------------------------------------

def envelope(body_xml, version="Exchange2013"):
    return ('<?xml version="1.0" encoding="utf-8"?>'
            '<s:Envelope xmlns:s="%s"><s:Header><h:ServerVersionInfo MajorVersion="15" '
            'MinorVersion="1" MajorBuildNumber="2507" MinorBuildNumber="6" Version="%s" '
            'xmlns:h="%s"/></s:Header><s:Body>%s</s:Body></s:Envelope>'
            % (NS_SOAP, esc(version), NS_T, body_xml)).encode()


def fault_xml(err):
    backoff = ""
    if err.backoff_ms is not None:
        backoff = ('<t:MessageXml xmlns:t="%s"><t:Value Name="BackOffMilliseconds">%d</t:Value>'
                   '</t:MessageXml>' % (NS_T, err.backoff_ms))
    return ('<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="%s"><s:Body><s:Fault>'
            '<faultcode xmlns:a="%s">a:%s</faultcode><faultstring xml:lang="en-US">%s</faultstring>'
            '<detail><e:ResponseCode xmlns:e="%s">%s</e:ResponseCode>'
            '<e:Message xmlns:e="%s">%s</e:Message>%s</detail></s:Fault></s:Body></s:Envelope>'
            % (NS_SOAP, NS_T, esc(err.code), esc(err.text), NS_E, esc(err.code), NS_E,
               esc(err.text), backoff)).encode()


def response_message(op, cls, code, inner="", text=None):
    mt = "<m:MessageText>%s</m:MessageText>" % esc(text) if text else ""
    dl = "<m:DescriptiveLinkKey>0</m:DescriptiveLinkKey>" if cls != "Success" else ""
    return ('<m:%sResponseMessage ResponseClass="%s">%s<m:ResponseCode>%s</m:ResponseCode>%s%s'
            '</m:%sResponseMessage>' % (op, cls, mt, code, dl, inner, op))


def response(op, messages):
    return ('<m:%sResponse xmlns:m="%s" xmlns:t="%s"><m:ResponseMessages>%s</m:ResponseMessages>'
            '</m:%sResponse>' % (op, NS_M, NS_T, "".join(messages), op))


def schema_error(what):
    return SoapError("ErrorSchemaValidation",
                     "The request failed schema validation: %s" % what)


def children(el):
    return [c for c in el if isinstance(c.tag, str)]


def target_mailbox(sim, caller, folder_el):
    """The mailbox a folder id names (t:Mailbox/t:EmailAddress), as Exchange
    resolves it for |caller|: (mailbox, None) or (None, (code, text)). A
    delegate reaches the mailbox it was given rights on, nobody else does."""
    mbox = folder_el.find(q(NS_T, "Mailbox"))
    if mbox is None:
        return caller, None
    addr_el = mbox.find(q(NS_T, "EmailAddress"))
    addr = (addr_el.text or "").strip().lower() if addr_el is not None else ""
    if not addr:
        raise schema_error("Mailbox needs an EmailAddress")
    with sim.lock:
        target = sim.mailboxes.get(addr)
    if target is None:
        return None, ("ErrorNonExistentMailbox",
                      "The SMTP address has no mailbox associated with it.")
    if target is caller or caller.email.lower() in target.delegates:
        return target, None
    return None, ("ErrorAccessDenied", "Access is denied. Check credentials and try again.")


def op_subscribe(sim, mb, op_el, version):
    reqs = children(op_el)
    if len(reqs) != 1:
        raise schema_error("Subscribe takes one subscription request")
    req = reqs[0]
    if req.tag in (q(NS_M, "PullSubscriptionRequest"), q(NS_M, "StreamingSubscriptionRequest")):
        return response("Subscribe", [response_message(
            "Subscribe", "Error", "ErrorInvalidSubscriptionRequest",
            text="Only push subscriptions are supported by this server.")])
    if req.tag != q(NS_M, "PushSubscriptionRequest"):
        raise schema_error("unexpected element %s" % req.tag)
    if req.get("SubscribeToAllFolders", "false") in ("true", "1"):
        return response("Subscribe", [response_message(
            "Subscribe", "Error", "ErrorInvalidSubscriptionRequest", text="Inbox only.")])
    # Enforce the schema sequence: every child in t:, in order, required ones present.
    fields = {}
    kids = children(req)
    pos = 0
    for local, required in PUSH_SEQUENCE:
        if pos < len(kids) and kids[pos].tag == q(NS_T, local):
            fields[local] = kids[pos]
            pos += 1
        elif required:
            raise schema_error("expected t:%s" % local)
    if pos != len(kids):
        raise schema_error("unexpected element %s" % kids[pos].tag)

    folders = children(fields["FolderIds"])
    if len(folders) != 1:
        raise schema_error("FolderIds")
    f = folders[0]
    caller = mb
    if f.tag == q(NS_T, "DistinguishedFolderId"):
        mb, err = target_mailbox(sim, caller, f)
        if err:
            return response("Subscribe", [response_message("Subscribe", "Error", err[0],
                                                           text=err[1])])
        if mb is not caller:
            # As on the real server: no push subscriptions through delegate access.
            return response("Subscribe", [response_message(
                "Subscribe", "Error", "ErrorSubscriptionDelegateAccessNotSupported",
                text="Subscriptions are not supported for delegate user access.")])
    inbox = ((f.tag == q(NS_T, "DistinguishedFolderId") and f.get("Id") == "inbox")
             or (f.tag == q(NS_T, "FolderId") and f.get("Id") == mb.inbox_id))
    if not inbox:
        return response("Subscribe", [response_message(
            "Subscribe", "Error", "ErrorInvalidSubscriptionRequest", text="Inbox only.")])
    types = children(fields["EventTypes"])
    if not types:
        raise schema_error("EventTypes is empty")
    for t in types:
        if t.tag != q(NS_T, "EventType") or (t.text or "").strip() not in EVENT_TYPES:
            raise schema_error("EventType")
    freq_text = (fields["StatusFrequency"].text or "").strip()
    if not freq_text.isdigit() or not 1 <= int(freq_text) <= 1440:
        raise schema_error("StatusFrequency must be 1..1440")
    freq = int(freq_text)
    url = (fields["URL"].text or "").strip()
    u = urllib.parse.urlsplit(url) if 0 < len(url) <= MAX_URL else None
    if u is None or u.scheme not in ("http", "https") or not u.hostname:
        return response("Subscribe", [response_message(
            "Subscribe", "Error", "ErrorInvalidPushSubscriptionUrl",
            text="The specified URL is invalid.")])
    caller = fields["CallerData"].text if "CallerData" in fields else None

    with sim.lock:
        replay = []
        if "Watermark" in fields:
            wm = (fields["Watermark"].text or "").strip()
            if wm not in mb.known_wm:
                return response("Subscribe", [response_message(
                    "Subscribe", "Error", "ErrorInvalidWatermark",
                    text="The watermark used for creating this subscription was not found.")])
            replay = mb.log[mb.known_wm[wm]:]
        else:
            wm = mb.latest_wm
        sub = Subscription(sim, mb, url, freq, version, wm, caller)
        for ev in replay:
            sub.queue.append(dict(ev))
        sim.subscriptions[sub.id] = sub
        mb.subs.append(sub)
        sub.thread.start()
    inner = "<m:SubscriptionId>%s</m:SubscriptionId><m:Watermark>%s</m:Watermark>" % (
        esc(sub.id), esc(wm))
    return response("Subscribe", [response_message("Subscribe", "Success", "NoError", inner)])


def read_shape(shape_el, allowed):
    if shape_el is None:
        raise schema_error("missing shape")
    base = shape_el.find(q(NS_T, "BaseShape"))
    if base is None or (base.text or "").strip() not in ("IdOnly", "Default", "AllProperties"):
        raise schema_error("BaseShape")
    fields = set()
    props = shape_el.find(q(NS_T, "AdditionalProperties"))
    if props is not None:
        for p in children(props):
            uri = p.get("FieldURI")
            if p.tag != q(NS_T, "FieldURI") or uri not in allowed:
                raise schema_error("FieldURI")
            fields.add(uri)
    if (base.text or "").strip() != "IdOnly":
        fields |= allowed
    return fields


def op_getitem(sim, mb, op_el, version):
    fields = read_shape(op_el.find(q(NS_M, "ItemShape")), ITEM_FIELDS)
    ids_el = op_el.find(q(NS_M, "ItemIds"))
    if ids_el is None or not children(ids_el):
        raise schema_error("ItemIds")
    msgs = []
    with sim.lock:
        for id_el in children(ids_el):
            if id_el.tag != q(NS_T, "ItemId") or not id_el.get("Id"):
                raise schema_error("ItemId")
            # An item id names its mailbox: rights are checked on that one.
            owner = next((m for m in sim.mailboxes.values() if id_el.get("Id") in m.items), None)
            it = owner.items.get(id_el.get("Id")) if owner else None
            if owner is not None and owner is not mb and mb.email.lower() not in owner.delegates:
                msgs.append(response_message(
                    "GetItem", "Error", "ErrorAccessDenied", "<m:Items/>",
                    text="Access is denied. Check credentials and try again."))
                continue
            if it is None:
                msgs.append(response_message(
                    "GetItem", "Error", "ErrorItemNotFound", "<m:Items/>",
                    text="The specified object was not found in the store."))
                continue
            x = ['<t:ItemId Id="%s" ChangeKey="%s"/>' % (esc(it["id"]), esc(it["changeKey"]))]
            if "item:Subject" in fields:
                x.append("<t:Subject>%s</t:Subject>" % esc(it["subject"]))
            if "item:DateTimeReceived" in fields:
                x.append("<t:DateTimeReceived>%s</t:DateTimeReceived>" % it["received"])
            mbox = ("<t:Mailbox><t:Name>%s</t:Name><t:EmailAddress>%s</t:EmailAddress>"
                    "<t:RoutingType>SMTP</t:RoutingType></t:Mailbox>"
                    % (esc(it["fromName"]), esc(it["fromEmail"])))
            if "message:Sender" in fields:
                x.append("<t:Sender>%s</t:Sender>" % mbox)
            if "message:IsRead" in fields:
                x.append("<t:IsRead>%s</t:IsRead>" % ("true" if it["isRead"] else "false"))
            if "message:From" in fields:
                x.append("<t:From>%s</t:From>" % mbox)
            msgs.append(response_message("GetItem", "Success", "NoError",
                                         "<m:Items><t:Message>%s</t:Message></m:Items>"
                                         % "".join(x)))
    return response("GetItem", msgs)


def op_getfolder(sim, mb, op_el, version):
    fields = read_shape(op_el.find(q(NS_M, "FolderShape")),
                        {"folder:UnreadCount", "folder:TotalCount", "folder:DisplayName"})
    ids_el = op_el.find(q(NS_M, "FolderIds"))
    if ids_el is None or not children(ids_el):
        raise schema_error("FolderIds")
    msgs = []
    caller = mb
    with sim.lock:
        for f in children(ids_el):
            mb = caller
            if f.tag == q(NS_T, "DistinguishedFolderId"):
                mb, err = target_mailbox(sim, caller, f)
                if err:
                    msgs.append(response_message("GetFolder", "Error", err[0], "<m:Folders/>",
                                                 text=err[1]))
                    continue
            inbox = ((f.tag == q(NS_T, "DistinguishedFolderId") and f.get("Id") == "inbox")
                     or (f.tag == q(NS_T, "FolderId") and f.get("Id") == mb.inbox_id))
            if not inbox:
                msgs.append(response_message("GetFolder", "Error", "ErrorFolderNotFound",
                                             "<m:Folders/>",
                                             text="The specified folder could not be found."))
                continue
            x = ['<t:FolderId Id="%s" ChangeKey="AQAAAA=="/>' % esc(mb.inbox_id)]
            if "folder:DisplayName" in fields:
                x.append("<t:DisplayName>Inbox</t:DisplayName>")
            if "folder:TotalCount" in fields:
                x.append("<t:TotalCount>%d</t:TotalCount>" % len(mb.items))
            if "folder:UnreadCount" in fields:
                x.append("<t:UnreadCount>%d</t:UnreadCount>" % mb.unread())
            msgs.append(response_message("GetFolder", "Success", "NoError",
                                         "<m:Folders><t:Folder>%s</t:Folder></m:Folders>"
                                         % "".join(x)))
    return response("GetFolder", msgs)


def op_unsubscribe(sim, mb, op_el, version):
    sid_el = op_el.find(q(NS_M, "SubscriptionId"))
    if sid_el is None:
        raise schema_error("SubscriptionId")
    with sim.lock:
        sub = sim.subscriptions.get((sid_el.text or "").strip())
    if sub is None:
        code, text = "ErrorSubscriptionNotFound", "The specified subscription was not found."
    elif sub.mailbox is not mb:
        code, text = "ErrorSubscriptionAccessDenied", "Only the creator may use a subscription."
    else:
        # Push subscriptions cannot be ended this way, exactly as on the real server.
        code, text = ("ErrorInvalidPullSubscriptionId",
                      "Subscription is not a pull subscription.")
    return response("Unsubscribe", [response_message("Unsubscribe", "Error", code, text=text)])


EWS_OPS = {
    "Subscribe": op_subscribe,
    "GetItem": op_getitem,
    "GetFolder": op_getfolder,
    "Unsubscribe": op_unsubscribe,
}


class EwsHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-IIS/10.0"
    sys_version = ""

    def log_message(self, fmt, *args):
        pass  # request lines carry nothing useful and nothing secret may leak

    def send(self, status, body=b"", ctype="text/xml; charset=utf-8", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_request_entry(self, op, user, ok):
        with self.server.sim.lock:
            self.server.sim.requests.append({"op": op, "user": user, "ok": ok,
                                             "userAgent": self.headers.get("User-Agent"),
                                             "anchorMailbox": self.headers.get("X-AnchorMailbox")})

    def do_GET(self):
        self.send(405, b"", headers={"Allow": "POST"})

    def do_POST(self):
        sim = self.server.sim
        if urllib.parse.urlsplit(self.path).path.lower() != "/ews/exchange.asmx":
            self.send(404)
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.send(411)
            return
        if length < 0 or length > MAX_BODY:
            self.send(413)
            self.close_connection = True
            return
        body = self.rfile.read(length)

        user = None
        auth = self.headers.get("Authorization", "")
        password = None
        if auth[:6].lower() == "basic ":
            try:
                user, _, password = base64.b64decode(auth[6:].strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                user = None
        with sim.lock:
            if sim.fail_count > 0:
                sim.fail_count -= 1
                status = sim.fail_status
                self.log_request_entry(None, user, False)
                if status == 500:
                    self.send(500, fault_xml(SoapError(
                        "ErrorServerBusy", "The server cannot service this request right now. "
                        "Try again later.", backoff_ms=1000)))
                else:
                    self.send(status, b"")
                return
        mb = sim.find_user(user, password) if user is not None else None
        if mb is None:
            self.log_request_entry(None, user, False)
            self.send(401, b"", headers={"WWW-Authenticate": 'Basic realm="exchange_sim"'})
            return
        if not self.headers.get("User-Agent"):
            self.log_request_entry(None, user, False)
            self.send(400, b"User-Agent required", ctype="text/plain")
            return
        if "text/xml" not in self.headers.get("Content-Type", "").lower():
            self.log_request_entry(None, user, False)
            self.send(415)
            return

        op_name = None
        try:
            root = safe_parse(body)
            if root.tag != q(NS_SOAP, "Envelope"):
                raise schema_error("not a SOAP 1.1 Envelope")
            version = "Exchange2013"
            hdr = root.find(q(NS_SOAP, "Header"))
            if hdr is not None:
                rsv = hdr.find(q(NS_T, "RequestServerVersion"))
                if rsv is not None:
                    version = rsv.get("Version", "")
                    if version not in SERVER_VERSIONS:
                        raise SoapError("ErrorInvalidServerVersion",
                                        "The specified server version is invalid.")
            body_el = root.find(q(NS_SOAP, "Body"))
            ops = children(body_el) if body_el is not None else []
            if len(ops) != 1 or not ops[0].tag.startswith("{%s}" % NS_M):
                raise schema_error("Body must hold one EWS operation")
            op_name = ops[0].tag.split("}", 1)[1]
            handler = EWS_OPS.get(op_name)
            if handler is None:
                raise SoapError("ErrorInvalidRequest", "The request is invalid.")
            out = handler(sim, mb, ops[0], version)
        except (ET.ParseError, ValueError):
            self.log_request_entry(op_name, user, False)
            self.send(400, b"", ctype="text/html")
            return
        except SoapError as e:
            self.log_request_entry(op_name, user, False)
            self.send(500, fault_xml(e))
            return
        self.log_request_entry(op_name, user, True)
        self.send(200, envelope(out, version))


# ---- control API --------------------------------------------------------------

class ControlHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def mailbox(self, doc):
        mb = self.server.sim.mailboxes.get(str(doc.get("email", "")).lower())
        if mb is None:
            self.reply(404, {"error": "no such mailbox"})
        return mb

    def do_GET(self):
        sim = self.server.sim
        u = urllib.parse.urlsplit(self.path)
        qs = urllib.parse.parse_qs(u.query)
        with sim.lock:
            if u.path == "/health":
                self.reply(200, {"status": "ok"})
            elif u.path == "/subscriptions":
                email = qs.get("email", [""])[0].lower()
                subs = [s.describe() for s in sim.subscriptions.values()
                        if not email or s.mailbox.email.lower() == email]
                self.reply(200, subs)
            elif u.path == "/requests":
                self.reply(200, list(sim.requests))
            else:
                self.reply(404, {"error": "not found"})

    def do_POST(self):
        sim = self.server.sim
        try:
            n = int(self.headers.get("Content-Length", "0"))
            doc = json.loads(self.rfile.read(n) or b"{}")
            if not isinstance(doc, dict):
                raise ValueError
        except ValueError:
            self.reply(400, {"error": "bad json"})
            return
        path = urllib.parse.urlsplit(self.path).path
        with sim.lock:
            if path == "/mailboxes":
                email, password = doc.get("email"), doc.get("password")
                if not email or not password:
                    self.reply(400, {"error": "email and password required"})
                    return
                sim.mailboxes[email.lower()] = Mailbox(email, password, doc.get("username"))
                self.reply(201, {"email": email})
            elif path == "/deliver":
                mb = self.mailbox(doc)
                if mb is None:
                    return
                item = {"id": new_id(b"AAMkItem:"), "changeKey": new_id()[:16],
                        "subject": str(doc.get("subject", "")),
                        "fromName": str(doc.get("fromName", "")),
                        "fromEmail": str(doc.get("fromEmail", "")),
                        "received": now_iso(), "isRead": False}
                mb.items[item["id"]] = item
                sim.item_events(mb, item, ("CreatedEvent", "NewMailEvent"))
                sim.inbox_modified(mb)
                self.reply(200, {"itemId": item["id"]})
            elif path == "/read":
                mb = self.mailbox(doc)
                if mb is None:
                    return
                item = mb.items.get(doc.get("itemId"))
                if item is None:
                    self.reply(404, {"error": "no such item"})
                    return
                item["isRead"] = True
                item["changeKey"] = new_id()[:16]
                sim.item_events(mb, item, ("ModifiedEvent",))
                sim.inbox_modified(mb)
                self.reply(200, {"unreadCount": mb.unread()})
            elif path == "/status":
                mb = self.mailbox(doc)
                if mb is None:
                    return
                for sub in mb.subs:
                    sub.status_due = time.monotonic()
                    sub.cond.notify_all()
                self.reply(200, {"subscriptions": len(mb.subs)})
            elif path == "/lose":
                mb = self.mailbox(doc)
                if mb is None:
                    return
                for sub in mb.subs:
                    sub.lose_next = True
                self.reply(200, {"subscriptions": len(mb.subs)})
            elif path == "/kill":
                mb = self.mailbox(doc)
                if mb is None:
                    return
                killed = list(mb.subs)
                for sub in killed:
                    sim.delete_subscription(sub)
                self.reply(200, {"killed": len(killed)})
            elif path == "/delegates":
                mb = self.mailbox(doc)
                if mb is None:
                    return
                mb.delegates.add(str(doc.get("delegate", "")).lower())
                self.reply(200, {"delegates": sorted(mb.delegates)})
            elif path == "/fail":
                try:
                    sim.fail_count = max(0, int(doc.get("count", 1)))
                    sim.fail_status = int(doc.get("status", 500))
                except (TypeError, ValueError):
                    self.reply(400, {"error": "count and status must be integers"})
                    return
                self.reply(200, {"count": sim.fail_count, "status": sim.fail_status})
            else:
                self.reply(404, {"error": "not found"})


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a peer that hangs up mid-request is normal for a test server


class TlsServer(QuietServer):
    """HTTPS server that runs each TLS handshake on the request's own thread, so a
    slow or broken client cannot stall accept()."""

    def __init__(self, addr, handler, ctx):
        super().__init__(addr, handler)
        self.ctx = ctx

    def finish_request(self, request, client_address):
        request.settimeout(30)
        try:
            tls = self.ctx.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            try:
                tls.close()
            except OSError:
                pass


def host_port(s):
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", required=True, help="EWS address HOST:PORT (HTTPS)")
    ap.add_argument("--control", required=True, help="control API address HOST:PORT (HTTP)")
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--callback-ca", default=None, help="CA file trusted for https callbacks")
    ap.add_argument("--first-status-delay", type=float, default=30.0)
    ap.add_argument("--status-scale", type=float, default=60.0,
                    help="seconds per StatusFrequency minute")
    ap.add_argument("--retry-base", type=float, default=30.0)
    args = ap.parse_args()

    sim = Sim(args)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)
    ews = TlsServer(host_port(args.listen), EwsHandler, ctx)
    ews.sim = sim
    ctl = QuietServer(host_port(args.control), ControlHandler)
    ctl.sim = sim
    for srv in (ews, ctl):
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    print("exchange_sim ready ews=%s:%d control=%s:%d"
          % (ews.server_address[0], ews.server_address[1],
             ctl.server_address[0], ctl.server_address[1]), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
