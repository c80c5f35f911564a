"""Reads for the channel pages: the sandbox outbox and the failed deliveries."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qs, urlsplit

from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet
from django.db.models.fields.json import KT

from campaigns.content.render import recipient_substitutions, substitute
from campaigns.models import Campaign
from channels.models import Message, ProviderEvent, SandboxMessage

S = Message.Status

# The outbox's tabs: which sandbox requests belong to which channel.
OUTBOX_CHANNELS = {
    "email": ("Email", Q(provider="sendgrid")),
    "sms": ("SMS", Q(provider="twilio") & ~Q(to_address__startswith="whatsapp:")),
    "whatsapp": ("WhatsApp", Q(provider="twilio", to_address__startswith="whatsapp:")),
    "mastodon": ("Mastodon", Q(provider="mastodon")),
    "bluesky": ("Bluesky", Q(provider="bluesky")),
}
# Failed and undelivered messages can be retried. A bounce is not listed: it is the
# address's fault, the address is suppressed, and a retry would only be skipped.
RETRYABLE = (S.FAILED, S.UNDELIVERED)


def sandbox_channel(message: SandboxMessage) -> str:
    """The channel of a sandbox request: email, sms, whatsapp (Twilio's ``whatsapp:`` prefix), or the network."""
    if message.provider == "sendgrid":
        return "email"
    if message.provider == "twilio":
        return "whatsapp" if message.to_address.startswith("whatsapp:") else "sms"
    return message.provider


def sandbox_requests(messages: Iterable[SandboxMessage]) -> dict[int, dict]:
    """Each message's request as its recipient's share of it, by message id; one query for the lot.

    SendGrid: the mail send call's fields (its content included, which the sandbox
    keeps once, with the call's first recipient: ``channels.sandbox.sendgrid``), this
    recipient's personalization, and the custom args and headers in effect for it
    (a personalization's override the call's, as at SendGrid). Other providers: the
    request as recorded.
    """
    messages = list(messages)
    stored = {m.pk: m.request if isinstance(m.request, dict) else {} for m in messages}
    by_provider_id = {m.provider_message_id: m for m in messages}
    wanted = {r[SandboxMessage.CONTENT_OF] for r in stored.values() if r.get(SandboxMessage.CONTENT_OF)}
    calls = {pmid: stored[by_provider_id[pmid].pk] for pmid in wanted if pmid in by_provider_id}
    if missing := wanted - set(calls):
        calls.update(
            SandboxMessage.objects.filter(provider_message_id__in=missing).values_list("provider_message_id", "request")
        )
    views = {}
    for message in messages:
        request = stored[message.pk]
        if message.provider != "sendgrid":
            views[message.pk] = request
            continue
        if first := request.get(SandboxMessage.CONTENT_OF):
            call = {key: value for key, value in (calls.get(first) or {}).items() if key != "personalizations"}
            request = {**call, "personalizations": request.get("personalizations") or []}
        personalization = (request.get("personalizations") or [{}])[0]
        for key in ("custom_args", "headers"):
            if key in request or key in personalization:
                request = {**request, key: {**request.get(key, {}), **personalization.get(key, {})}}
        views[message.pk] = request
    return views


def sandbox_request(message: SandboxMessage) -> dict:
    """One message's request as its recipient's share of it (``sandbox_requests``)."""
    return sandbox_requests([message])[message.pk]


def email_as_received(request: dict, subject: str = "") -> dict[str, str]:
    """An email's subject, HTML and text parts as its recipient gets them (``request``: as
    ``sandbox_request`` gives it): the personalization's ``substitutions`` (SendGrid's
    per-recipient tags) applied, longest tag first."""
    substitutions: dict[str, str] = {}
    for personalization in request.get("personalizations") or []:
        substitutions.update(personalization.get("substitutions") or {})
    tags = sorted(substitutions, key=len, reverse=True)

    def substitute(value: str) -> str:
        for tag in tags:
            value = value.replace(tag, str(substitutions[tag]))
        return value

    parts = {str(c.get("type")): str(c.get("value", "")) for c in request.get("content") or [] if isinstance(c, dict)}
    return {
        "subject": substitute(subject),
        "html": substitute(parts.get("text/html", "")),
        "text": substitute(parts.get("text/plain", "")),
    }


def sandbox_text(message: SandboxMessage, request: dict | None = None) -> str:
    """The text a sandbox message's recipient got: an email's text part as received, else the body."""
    if sandbox_channel(message) != "email":
        return message.body
    email = email_as_received(sandbox_request(message) if request is None else request, message.subject)
    return email["text"] or ("" if email["html"] else message.body)


def sandbox_texts(messages: Iterable[SandboxMessage]) -> dict[int, str]:
    """``sandbox_text`` of each message, by id; one query for the lot."""
    messages = list(messages)
    requests = sandbox_requests(messages)
    return {message.pk: sandbox_text(message, requests[message.pk]) for message in messages}


def message_as_sent(message: Message) -> tuple[str, str]:
    """The subject and text a message's recipient got (``select_related("content")`` when reading many).

    Shared content gets the recipient's own links back: derived again from the
    message, as they were when it was sent (with the same secret key and public URL).
    """
    if message.content_id is None:
        return message.subject, message.body
    substitutions = recipient_substitutions(
        customer_id=message.customer_id, channel=message.channel, message_id=message.pk
    )
    return substitute(message.content.subject, substitutions), substitute(message.content.body, substitutions)


def outbox_messages(*, channel: str = "", query: str = "") -> QuerySet[SandboxMessage]:
    """Sandbox requests, newest first, of one channel (all if empty), matching ``query``
    in the recipient, subject or text (for a recipient of an email sent to many, the
    text of the call, which the sandbox keeps with its first recipient)."""
    messages = SandboxMessage.objects.order_by("-created_at", "-id")
    if channel:
        messages = messages.filter(OUTBOX_CHANNELS[channel][1])
    if query:
        call_matches = SandboxMessage.objects.filter(provider_message_id=OuterRef("content_of"), body__icontains=query)
        messages = messages.annotate(content_of=KT(f"request__{SandboxMessage.CONTENT_OF}")).filter(
            Q(to_address__icontains=query)
            | Q(subject__icontains=query)
            | Q(body__icontains=query)
            | Exists(call_matches)
        )
    return messages


def outbox_counts() -> dict[str, int]:
    """How many requests each outbox tab holds, in one query."""
    counts = SandboxMessage.objects.aggregate(
        **{channel: Count("pk", filter=q) for channel, (_, q) in OUTBOX_CHANNELS.items()}
    )
    return {channel: counts[channel] or 0 for channel in OUTBOX_CHANNELS}


def chorus_message_id(message: SandboxMessage, request: dict | None = None) -> int | None:
    """The Chorus ``Message`` a sandbox request carried: SendGrid's custom arg, Twilio's status callback."""
    if message.provider == "sendgrid":
        request = sandbox_request(message) if request is None else request
        value = str((request.get("custom_args") or {}).get("chorus_message_id", ""))
    else:
        value = (parse_qs(urlsplit(message.callback_url).query).get("m") or [""])[0]
    return int(value) if value.isdigit() else None


def outbox_webhooks(message: SandboxMessage, request: dict) -> tuple[Message | None, list[ProviderEvent]]:
    """The Chorus message behind a sandbox request (``request``: ``sandbox_request``), and the webhook
    events Chorus received about it."""
    pk = chorus_message_id(message, request)
    chorus = Message.objects.filter(pk=pk).select_related("customer", "step__campaign").first() if pk else None
    events = list(ProviderEvent.objects.filter(message=chorus).order_by("received_at", "id")) if chorus else []
    for event in events:
        payload = event.payload if isinstance(event.payload, dict) else {}
        event.name = str(payload.get("event") or payload.get("MessageStatus") or event.kind)
    return chorus, events


def failed_messages(*, channel: str = "", campaign_id: int | None = None, query: str = "") -> QuerySet[Message]:
    """Failed and undelivered messages, newest failure first, filtered by channel, campaign and recipient."""
    messages = Message.objects.filter(status__in=RETRYABLE)
    if channel:
        messages = messages.filter(channel=channel)
    if campaign_id:
        messages = messages.filter(step__campaign_id=campaign_id)
    if query:
        messages = messages.filter(
            Q(to_address__icontains=query)
            | Q(customer__email__icontains=query)
            | Q(customer__first_name__icontains=query)
            | Q(customer__last_name__icontains=query)
        )
    return messages.select_related("customer", "step__campaign").order_by(F("failed_at").desc(nulls_last=True), "-id")


def failed_campaigns() -> list[Campaign]:
    """The campaigns that have failed or undelivered messages, for the filter."""
    return list(
        Campaign.objects.filter(pk__in=Message.objects.filter(status__in=RETRYABLE).values("step__campaign_id"))
        .only("pk", "name")
        .order_by("name", "pk")
    )


def bounced_count() -> int:
    return Message.objects.filter(status=S.BOUNCED).count()
