"""What each provider's webhook events mean for Chorus.

A parser turns one stored raw event into an ``EventOutcome``: which message it
is about, the status it reaches, the timeline entry and any consent change.
Payload shapes: ../shared/fixtures (SendGrid Event Webhook, Twilio callbacks).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.utils import timezone

from channels.models import Message, Suppression
from customers.models import Activity, Channel, Customer

S, K = Message.Status, Activity.Kind


@dataclass
class EventOutcome:
    """What one event means. The message is named by Chorus id (``message_id``, which must be
    on one of ``message_channels``) or by the provider's own id (``provider_message``:
    provider, provider message id), so a batch of events resolves its messages in one query."""

    at: datetime
    message_id: int | None = None
    message_channels: tuple[str, ...] = ()
    provider_message: tuple[str, str] | None = None
    customer: Customer | None = None
    campaign_id: int | None = None
    status: str | None = None
    activity: str | None = None
    channel: str = ""
    consent: str | None = None
    # Put this address on the suppression list, for this Suppression.Reason.
    suppress: tuple[str, str] | None = None
    properties: dict = field(default_factory=dict)
    error: str = ""
    # Why the message failed, bounced or was undelivered, as the provider put it (Message.error).
    failure: str = ""


# The Unix times a datetime can hold (years 1 to 9999).
EPOCH_RANGE = (-62135596800, 253402300799)
_INTEGER = re.compile(r"[ \t\n\r\f\v]*[-+]?[0-9]+[ \t\n\r\f\v]*")
_MESSAGE_ID = re.compile(r"[0-9]{1,18}")  # a Chorus message id: digits, within bigint


def _epoch(value) -> datetime:
    """A provider's Unix time: a JSON number (truncated to the second) or a string of digits; else now."""
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return timezone.now()
    seconds = int(value)
    if not EPOCH_RANGE[0] <= seconds <= EPOCH_RANGE[1]:
        return timezone.now()
    return datetime.fromtimestamp(seconds, tz=UTC)


def json_text(value) -> str:
    """A JSON value as text, or "" when it is falsy (absent, null, false, 0, "", [] or {}).

    Strings as they are, anything else as JSON: what PostgreSQL's ``->>`` gives
    for the same value, so the batch path can read events the same way in SQL.
    """
    if not value:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


# --- SendGrid ------------------------------------------------------------------

SENDGRID_EVENTS = {
    "delivered": (S.DELIVERED, K.MESSAGE_DELIVERED, None),
    "open": (S.OPENED, K.MESSAGE_OPENED, None),
    "click": (S.CLICKED, K.MESSAGE_CLICKED, None),
    "bounce": (S.BOUNCED, K.MESSAGE_BOUNCED, None),
    "dropped": (S.FAILED, K.MESSAGE_DROPPED, None),
    # SendGrid is retrying: on the timeline, but the message has not failed.
    "deferred": (None, K.MESSAGE_DEFERRED, None),
    "spamreport": (None, K.MESSAGE_COMPLAINED, "opted_out"),
    "unsubscribe": (None, K.MESSAGE_UNSUBSCRIBED, "opted_out"),
    "group_unsubscribe": (None, K.MESSAGE_UNSUBSCRIBED, "opted_out"),
    # Accepted by SendGrid: nothing a customer would notice.
    "processed": (None, None, None),
}
# The fields of an event its timeline entry keeps.
SENDGRID_DETAILS = (
    "url",
    "reason",
    "type",
    "bounce_classification",
    "status",
    "response",
    "attempt",
    "useragent",
    "asm_group_id",
)
# Bounce classifications that say more about the sender (content, reputation,
# volume, a passing technical fault) than about the address.
SENDER_SIDE_BOUNCES = {"Technical", "Content", "Reputation", "Frequency or Volume Too High"}
NO_MESSAGE_NAMED = "The event names no message (no chorus_message_id or sg_message_id)."
NO_MATCH = "No matching message or customer."


SENDGRID_FALLBACK_KEY_PARTS = ("chorus_message_id", "event", "timestamp", "url")


def sendgrid_dedupe_key(event: dict) -> str:
    """``sg_event_id``; without one, Chorus message id + event + timestamp + url (hashed)."""
    if key := json_text(event.get("sg_event_id")):
        return key
    parts = [json_text(event.get(name)) for name in SENDGRID_FALLBACK_KEY_PARTS]
    return "sha256:" + hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()


def is_hard_bounce(event: dict) -> bool:
    """A hard bounce: the receiving server rejected the address itself.

    SendGrid's ``type`` is "bounce" for a permanent rejection and "blocked" for a
    refusal the sender can fix; of the bounces, those classified as sender-side
    (``SENDER_SIDE_BOUNCES``) are not the address's fault either.
    """
    classification = event.get("bounce_classification")
    sender_side = isinstance(classification, str) and classification in SENDER_SIDE_BOUNCES
    return event.get("type", "bounce") == "bounce" and not sender_side


def parse_sendgrid_event(event: dict) -> EventOutcome:
    outcome = EventOutcome(at=_epoch(event.get("timestamp")), channel=Channel.EMAIL)
    name = event.get("event")
    if not isinstance(name, str) or name not in SENDGRID_EVENTS:
        outcome.error = f"Unknown SendGrid event {json.dumps(name, ensure_ascii=False)}."
        return outcome
    outcome.status, outcome.activity, outcome.consent = SENDGRID_EVENTS[name]
    outcome.properties = {k: event[k] for k in SENDGRID_DETAILS if k in event}
    address = json_text(event.get("email"))
    if outcome.status in (S.BOUNCED, S.FAILED):
        outcome.failure = f"SendGrid {name}: {json_text(event.get('reason')) or 'no reason given'}"[:2000]
    if name == "bounce":
        outcome.properties["hard"] = is_hard_bounce(event)
        if outcome.properties["hard"]:
            outcome.suppress = (address, Suppression.Reason.HARD_BOUNCE)
    elif name == "dropped" and event.get("reason") == "Bounced Address":
        outcome.suppress = (address, Suppression.Reason.HARD_BOUNCE)
    elif name == "spamreport":
        outcome.suppress = (address, Suppression.Reason.SPAM_REPORT)
    message_id = json_text(event.get("chorus_message_id"))
    if _MESSAGE_ID.fullmatch(message_id):
        outcome.message_id, outcome.message_channels = int(message_id), (Channel.EMAIL,)
    elif provider_id := json_text(event.get("sg_message_id")):
        outcome.provider_message = ("sendgrid", provider_id.split(".")[0])
    else:
        outcome.error = NO_MESSAGE_NAMED
    return outcome


# --- Twilio --------------------------------------------------------------------

TWILIO_STATUSES = {
    "sent": (S.SENT, None),
    "delivered": (S.DELIVERED, K.MESSAGE_DELIVERED),
    "read": (S.OPENED, K.MESSAGE_OPENED),
    "undelivered": (S.UNDELIVERED, K.MESSAGE_FAILED),
    "failed": (S.FAILED, K.MESSAGE_FAILED),
}
# The delivery errors a status callback reports most; the rest are named by code only.
TWILIO_DELIVERY_ERRORS = {
    "30003": "unreachable destination handset",
    "30004": "message blocked",
    "30005": "unknown destination handset",
    "30006": "landline or unreachable carrier",
    "30007": "filtered by the carrier",
    "30008": "unknown error",
}
STOP_WORDS = {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "OPT OUT", "REVOKE"}
START_WORDS = {"START", "YES", "UNSTOP", "OPTIN"}
HELP_WORDS = {"HELP", "INFO"}


def _twilio_channel(params: dict) -> str:
    return Channel.WHATSAPP if str(params.get("From", "")).startswith("whatsapp:") else Channel.SMS


def bare_number(value: str) -> str:
    """A Twilio From/To value without its channel prefix (``whatsapp:+48...`` -> ``+48...``)."""
    return value.removeprefix("whatsapp:").strip()


def twilio_status_dedupe_key(params: dict) -> str:
    """One event per message and status: a retried or repeated callback is the same event."""
    return f"{params.get('MessageSid')}:{params.get('MessageStatus')}"


def twilio_keyword(params: dict) -> str:
    """The keyword a reply is, if the whole message is one ("stop", " Unsubscribe "); else ""."""
    keyword = " ".join(str(params.get("Body", "")).split()).upper()
    return keyword if keyword in STOP_WORDS | START_WORDS | HELP_WORDS else ""


def parse_twilio_status(params: dict) -> EventOutcome:
    outcome = EventOutcome(at=timezone.now(), channel=_twilio_channel(params))
    status = params.get("MessageStatus", "")
    if status not in TWILIO_STATUSES:
        return outcome  # queued/accepted/sending: nothing new
    outcome.status, outcome.activity = TWILIO_STATUSES[status]
    message_id = str(params.get("chorus_message_id", ""))
    if _MESSAGE_ID.fullmatch(message_id):
        outcome.message_id, outcome.message_channels = int(message_id), (Channel.SMS, Channel.WHATSAPP)
    else:
        outcome.provider_message = ("twilio", str(params.get("MessageSid", "")))
    if params.get("ErrorCode"):
        outcome.properties = {"error_code": params["ErrorCode"]}
    if outcome.status in (S.FAILED, S.UNDELIVERED):
        code = str(params.get("ErrorCode") or "")
        described = TWILIO_DELIVERY_ERRORS.get(code, "see https://www.twilio.com/docs/api/errors")
        outcome.failure = f"Twilio {status}: error {code}, {described}" if code else f"Twilio {status}"
    return outcome


def parse_twilio_inbound(params: dict) -> EventOutcome:
    """A reply; STOP/START keywords change SMS consent (Twilio's own keyword list)."""
    channel = _twilio_channel(params)
    number = bare_number(params.get("From", ""))
    body = params.get("Body", "")
    # Like Twilio, a keyword is the whole message ("stop", " Unsubscribe "), not a word in a sentence.
    keyword = twilio_keyword(params)
    outcome = EventOutcome(
        at=timezone.now(), channel=channel, activity=K.MESSAGE_REPLIED, properties={"body": body[:1600]}
    )
    outcome.customer = Customer.objects.filter(phone=number).first()
    if outcome.customer is None:
        outcome.activity = None
        outcome.error = f"No customer has the number {number!r}."
        return outcome
    outcome.campaign_id = (
        Message.objects.filter(customer=outcome.customer, channel=channel)
        .order_by("-created_at")
        .values_list("step__campaign_id", flat=True)
        .first()
    )
    if keyword in STOP_WORDS:
        outcome.consent = "opted_out"
    elif keyword in START_WORDS:
        outcome.consent = "opted_in"
    if keyword:
        outcome.properties["keyword"] = keyword
    return outcome


# --- stored deliveries ---------------------------------------------------------


# \u0000 as an escape (an odd number of backslashes before "u0000"), not an escaped backslash.
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON value.")


def sendgrid_events_parse(body: str | bytes) -> list[dict]:
    """The events of a SendGrid request body; ``ValueError`` naming the problem unless it is a JSON array of objects.

    Strict where PostgreSQL's ``jsonb`` is (the events are stored there): no
    NaN or Infinity, no NUL character.
    """
    text = body.decode() if isinstance(body, bytes) else body
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        raise ValueError("The body contains a NUL character (\\u0000), which cannot be stored.")
    try:
        events = json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        raise ValueError(f"The body is not JSON: {exc}") from None
    if not isinstance(events, list) or not all(isinstance(event, dict) for event in events):
        raise ValueError("Expected a JSON array of event objects.")
    return events


def delivery_events(provider: str, kind: str, body: str) -> list[tuple[str, dict]]:
    """A stored webhook request as (dedupe key, raw event) pairs.

    SendGrid: the request body, a JSON array of events. Twilio: one event, the
    verified form parameters stored as a JSON object (a status callback also
    carries Chorus's message id from its URL, as ``chorus_message_id``).
    """
    if provider == "sendgrid":
        return [(sendgrid_dedupe_key(event), event) for event in sendgrid_events_parse(body)]
    params = json.loads(body)
    key = twilio_status_dedupe_key(params) if kind == "status" else str(params.get("MessageSid", ""))
    return [(key, params)]


EVENT_PARSERS = {
    ("sendgrid", "status"): parse_sendgrid_event,
    ("twilio", "status"): parse_twilio_status,
    ("twilio", "inbound"): parse_twilio_inbound,
}
