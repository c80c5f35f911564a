"""Playing back the providers' webhooks for what the sandbox received, signed as the providers sign them.

What happens to each message is drawn from ``CHORUS_SANDBOX_PLAYBACK`` (per
channel: shares delivered, bounced or failed; of the delivered, shares opened,
clicked, read or answered with STOP) by a ``random.Random`` seeded with the
provider's message id. Playing a message back again therefore draws the same
fate and posts the same events with the same ids, which Chorus's dedupe keeps once.

The playback task runs twice for a provider request. The first pass (messages
not played back yet, ``events_sent_at`` empty) posts the delivery events:
SendGrid processed then delivered, bounce or deferred, in one signed POST per
batch; Twilio sent then delivered, undelivered or failed. It then schedules the
second pass after the channel's ``delay`` for the messages that engage; that
pass (messages already played back) posts the opens and clicks, WhatsApp reads
and STOP replies. Address-based outcomes still win: email to a local part
starting with ``bounce`` always bounces.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urlencode, urlsplit

import requests
from django.conf import settings
from django.db import transaction
from django.urls import Resolver404, resolve, reverse
from django.utils import timezone
from twilio.request_validator import RequestValidator

from channels.models import SandboxMessage
from channels.selectors import email_as_received, sandbox_channel, sandbox_request, sandbox_requests
from config.keys import ec_sign_b64

PLAYED_PROVIDERS = ("sendgrid", "twilio")
SENDGRID_EVENTS_PER_POST = 1000
TWILIO_DELIVERY_ERRORS = (30003, 30005)  # unreachable handset, unknown handset
# Chorus's own recipient links that a reader does not "click" in the sense of engagement.
NOT_CLICKED_VIEWS = {"public:unsubscribe", "public:preferences", "public:view-in-browser"}
USER_AGENT = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4"
_EVENT_IDS = uuid.UUID("5d2c6a52-3f0e-4a43-9c59-7f6f1f0b7e11")


@dataclass(frozen=True)
class Playback:
    """The fate drawn for one sandbox message.

    ``outcome``: email delivered, bounce or deferred; SMS/WhatsApp delivered,
    undelivered, failed or sent (no final status). ``later``: what follows after
    the channel's ``delay``: open and click (email), read and stop (Twilio).
    """

    channel: str
    outcome: str
    later: tuple[str, ...] = ()
    error_code: int | None = None
    click_url: str = ""
    delay: int = 0


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            href = dict(attrs).get("href") or ""
            if href and href not in self.hrefs:
                self.hrefs.append(href)


def clickable_links(request: dict) -> list[str]:
    """The links of an email's HTML a reader might click: not unsubscribe, preferences or view-in-browser."""
    html = email_as_received(request)["html"]
    unsubscribe = str((request.get("headers") or {}).get("List-Unsubscribe", ""))
    parser = _Links()
    parser.feed(html)
    links = []
    for href in parser.hrefs:
        if not href.startswith(("http://", "https://")) or href in unsubscribe or "unsubscribe" in href.lower():
            continue
        if href.startswith(settings.CHORUS_PUBLIC_URL + "/"):
            try:
                if resolve(urlsplit(href).path).view_name in NOT_CLICKED_VIEWS:
                    continue
            except Resolver404:
                pass
        links.append(href)
    return links


def playback_plan(message: SandboxMessage, request: dict | None = None) -> Playback:
    """What the sandbox plays back for ``message`` (``request``: ``sandbox_request``'s); the same every
    time for the same message and settings."""
    channel = sandbox_channel(message)
    profile = settings.CHORUS_SANDBOX_PLAYBACK.get(channel, {})
    delay = int(profile.get("delay", 0))
    rng = random.Random(message.provider_message_id)  # noqa: S311 - a simulation, not security
    outcome_draw, later_draw, stop_draw = rng.random(), rng.random(), rng.random()
    if channel == "email":
        bounce, delivered = profile.get("bounce", 0), profile.get("delivered", 0)
        if message.outcome == "bounce" or outcome_draw < bounce:  # the mail send recorded a bounce address
            return Playback(channel, "bounce", delay=delay)
        if outcome_draw >= bounce + delivered:
            return Playback(channel, "deferred", delay=delay)
        links = clickable_links(sandbox_request(message) if request is None else request)
        if links and later_draw < profile.get("click", 0):
            return Playback(channel, "delivered", ("open", "click"), click_url=rng.choice(links), delay=delay)
        if later_draw < profile.get("open", 0):
            return Playback(channel, "delivered", ("open",), delay=delay)
        return Playback(channel, "delivered", delay=delay)
    failed, undelivered, delivered = (profile.get(k, 0) for k in ("failed", "undelivered", "delivered"))
    if outcome_draw < failed + undelivered:
        outcome = "failed" if outcome_draw < failed else "undelivered"
        return Playback(channel, outcome, error_code=rng.choice(TWILIO_DELIVERY_ERRORS), delay=delay)
    if outcome_draw >= failed + undelivered + delivered:
        return Playback(channel, "sent", delay=delay)
    later = ("read",) if channel == "whatsapp" and later_draw < profile.get("read", 0) else ()
    if stop_draw < profile.get("stop", 0):
        later += ("stop",)
    return Playback(channel, "delivered", later, delay=delay)


def emit_after_commit(ids: list[int]) -> None:
    """Once the recording commits, one playback task for these sandbox messages."""
    from channels.tasks import sandbox_emit_events

    if not ids:
        return
    delay = settings.CHORUS_SANDBOX_EVENT_DELAY
    transaction.on_commit(lambda: sandbox_emit_events.apply_async((ids,), countdown=delay))


def _event_id(message: SandboxMessage, name: str) -> str:
    return uuid.uuid5(_EVENT_IDS, f"{message.provider_message_id}:{name}").hex


# --- SendGrid ------------------------------------------------------------------


def _sendgrid_events(message: SandboxMessage, request: dict, plan: Playback, names: tuple[str, ...]) -> list[dict]:
    base = {
        "email": message.to_address,
        "sg_message_id": message.provider_message_id,
        "smtp-id": f"<{message.provider_message_id}@sandbox>",
        "category": request.get("categories", []),
        **request.get("custom_args", {}),
    }
    details = {
        "delivered": {"response": "250 2.0.0 OK"},
        "bounce": {
            "type": "bounce",
            "status": "5.1.1",
            "reason": "550 5.1.1 The email account that you tried to reach does not exist",
            "bounce_classification": "Invalid Address",
        },
        "deferred": {"response": "421 4.7.0 Try again later", "attempt": "1"},
        "open": {"useragent": USER_AGENT, "sg_machine_open": False},
        "click": {"useragent": USER_AGENT, "url": plan.click_url, "url_offset": {"index": 0, "type": "html"}},
    }
    now = int(time.time())
    return [
        {**base, "event": name, "timestamp": now, "sg_event_id": _event_id(message, name), **details.get(name, {})}
        for name in names
    ]


def _sendgrid_post(url: str, events: list[dict]) -> None:
    """One signed Event Webhook POST, as SendGrid batches its events."""
    body = json.dumps(events)
    timestamp = str(int(time.time()))
    signature = ec_sign_b64(settings.CHORUS_SANDBOX_SENDGRID_PRIVATE_KEY, (timestamp + body).encode())
    response = requests.post(
        url,
        data=body.encode(),
        headers={
            "Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": signature,
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        },
        timeout=10,
    )
    response.raise_for_status()


def _sendgrid_play(batch: list[tuple[SandboxMessage, dict, tuple[str, ...], Playback]]) -> None:
    by_url: dict[str, list[dict]] = defaultdict(list)
    for message, request, names, plan in batch:
        by_url[message.callback_url] += _sendgrid_events(message, request, plan, names)
    for url, events in by_url.items():
        for start in range(0, len(events), SENDGRID_EVENTS_PER_POST):
            _sendgrid_post(url, events[start : start + SENDGRID_EVENTS_PER_POST])


# --- Twilio --------------------------------------------------------------------


def twilio_signed_post(url: str, params: dict, headers: dict | None = None) -> requests.Response:
    """POST form ``params`` to ``url`` signed as Twilio signs its callbacks."""
    signature = RequestValidator(settings.TWILIO_AUTH_TOKEN).compute_signature(url, params)
    return requests.post(
        url,
        data=urlencode(params),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature,
            **(headers or {}),
        },
        timeout=10,
    )


def _twilio_status(message: SandboxMessage, status: str, error_code: int | None = None) -> None:
    if not message.callback_url:
        return
    params = {
        "MessageSid": message.provider_message_id,
        "SmsSid": message.provider_message_id,
        "AccountSid": settings.TWILIO_ACCOUNT_SID,
        "From": message.from_address,
        "To": message.to_address,
        "MessageStatus": status,
        "SmsStatus": status,
        "ApiVersion": "2010-04-01",
    }
    if error_code:
        params["ErrorCode"] = str(error_code)
    token = f"{message.provider_message_id}-{status}"
    twilio_signed_post(message.callback_url, params, {"I-Twilio-Idempotency-Token": token}).raise_for_status()


def _twilio_stop_reply(message: SandboxMessage) -> None:
    """The recipient answers STOP: an inbound message to Chorus's inbound webhook."""
    whatsapp = message.to_address.startswith("whatsapp:")
    number = message.from_address
    if not number or number.startswith("MG"):  # sent through a Messaging Service: reply to its number
        number = ("whatsapp:" if whatsapp else "") + settings.TWILIO_FROM_NUMBER
    sid = "SM" + _event_id(message, "stop")
    params = {
        "MessageSid": sid,
        "SmsSid": sid,
        "SmsMessageSid": sid,
        "AccountSid": settings.TWILIO_ACCOUNT_SID,
        "From": message.to_address,
        "To": number,
        "Body": "STOP",
        "NumMedia": "0",
        "NumSegments": "1",
        "ApiVersion": "2010-04-01",
    }
    url = settings.CHORUS_PUBLIC_URL + reverse("webhooks:twilio-inbound")
    twilio_signed_post(url, params).raise_for_status()


# --- The two passes --------------------------------------------------------------


def _play_delivery(messages: list[SandboxMessage], requests: dict[int, dict]) -> None:
    plans = {message.pk: playback_plan(message, requests[message.pk]) for message in messages}
    _sendgrid_play(
        [
            (m, requests[m.pk], ("processed", plans[m.pk].outcome), plans[m.pk])
            for m in messages
            if m.provider == "sendgrid"
        ]
    )
    for message in messages:
        if message.provider == "twilio":
            plan = plans[message.pk]
            _twilio_status(message, "sent")
            if plan.outcome != "sent":
                _twilio_status(message, plan.outcome, plan.error_code)
    by_outcome: dict[str, list[int]] = defaultdict(list)
    later: dict[int, list[int]] = defaultdict(list)
    for message in messages:
        plan = plans[message.pk]
        by_outcome[plan.outcome].append(message.pk)
        if plan.later:
            later[plan.delay].append(message.pk)
    now = timezone.now()
    for outcome, ids in by_outcome.items():
        SandboxMessage.objects.filter(pk__in=ids).update(outcome=outcome, events_sent_at=now)
    from channels.tasks import sandbox_emit_events

    for delay, ids in later.items():
        sandbox_emit_events.apply_async((ids,), countdown=delay)


def _play_later(messages: list[SandboxMessage], requests: dict[int, dict]) -> None:
    plans = {message.pk: playback_plan(message, requests[message.pk]) for message in messages}
    _sendgrid_play([(m, requests[m.pk], plans[m.pk].later, plans[m.pk]) for m in messages if m.provider == "sendgrid"])
    for message in messages:
        if message.provider == "twilio":
            if "read" in plans[message.pk].later:
                _twilio_status(message, "read")
            if "stop" in plans[message.pk].later:
                _twilio_stop_reply(message)


def sandbox_events_emit(*, sandbox_message_ids: list[int]) -> None:
    """Play back the providers' webhooks for these recorded messages.

    A message not played back yet gets its delivery events (and its later events
    are scheduled); one already played back gets its later events. Every event
    has a stable id, so a pass that runs twice posts duplicates Chorus ignores.
    """
    messages = list(
        SandboxMessage.objects.filter(pk__in=sandbox_message_ids, provider__in=PLAYED_PROVIDERS).order_by("pk")
    )
    requests = sandbox_requests(messages)  # one query for the requests' shared content
    if fresh := [m for m in messages if m.events_sent_at is None]:
        _play_delivery(fresh, requests)
    if played := [m for m in messages if m.events_sent_at is not None]:
        _play_later(played, requests)
