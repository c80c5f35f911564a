"""Sending messages and turning provider events into status and timeline.

This module is the only caller of channel adapters.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import Case, F, Value, When
from django.db.models.functions import Greatest
from django.utils import timezone

from campaigns.content.liquid import ContentError
from campaigns.content.render import render_template
from channels.adapters import ChannelError, Outbound, SendResult, adapter_for
from channels.models import Message, ProviderEvent
from channels.providers import EVENT_PARSERS, HELP_WORDS, bare_number, twilio_keyword
from channels.suppression import suppressed_addresses, suppression_add
from customers.models import Activity, Consent, Customer
from customers.services import consent_record
from customers.services.activities import activity_record

logger = logging.getLogger(__name__)
S = Message.Status

_TIMESTAMP = {
    S.SENT: "sent_at",
    S.DELIVERED: "delivered_at",
    S.OPENED: "opened_at",
    S.CLICKED: "clicked_at",
    S.FAILED: "failed_at",
    S.BOUNCED: "failed_at",
    S.UNDELIVERED: "failed_at",
}


class TransientSendError(Exception):
    """Some messages of a batch hit a transient error and went back to queued.

    ``retry_after``: the longest wait a provider asked for (``Retry-After``), or None.
    """

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


# --- sending -------------------------------------------------------------------


def skip_reason(customer: Customer, address: str | None, consented: set[int], suppressed: set[str]) -> str:
    """Why a message to ``customer`` at ``address`` must not go out, or "" if it may.

    The one rule, applied at dispatch and again right before the provider call:
    erased, no address, suppressed address, no consent on the channel.
    """
    if customer.erased_at is not None:
        return Message.SkipReason.ERASED
    if not address:
        return Message.SkipReason.NO_ADDRESS
    if address in suppressed:
        return Message.SkipReason.SUPPRESSED
    if customer.pk not in consented:
        return Message.SkipReason.NO_CONSENT
    return ""


def _claim(message_ids: list[int]) -> list[Message]:
    """queued -> sending for the ids nobody else holds; returns what we now own."""
    with transaction.atomic():
        ids = list(
            Message.objects.select_for_update(skip_locked=True)
            .filter(pk__in=message_ids, status=S.QUEUED)
            .values_list("pk", flat=True)
        )
        Message.objects.filter(pk__in=ids, status=S.QUEUED).update(
            status=S.SENDING, rank=Message.RANK[S.SENDING], attempts=F("attempts") + 1, updated_at=timezone.now()
        )
    # Everything rendering reads, in three queries for the whole batch.
    return list(
        Message.objects.filter(pk__in=ids)
        .select_related("customer__persona", "step__campaign__brand", "step__template", "run")
        .prefetch_related("step__template__variants")
        .order_by("pk")
    )


def _finish(
    messages: list[Message], status: str, *, error: str = "", skip: str = "", rendered=None, **details
) -> list[Activity]:
    """Record one outcome of a send attempt for ``messages`` (one UPDATE) and return their timeline entries.

    The provider's webhook may already have moved a message further (it can
    arrive before the API call returns), so the status only moves forward.
    ``details`` are further Message fields (provider, provider_message_id);
    ``rendered`` and ``details`` are per message, so pass one message with them.
    """
    now = timezone.now()
    if rendered is not None:
        details.update(subject=rendered.subject, body=rendered.text)
    details.update(skip_reason=skip)
    fields = {name: value for name, value in details.items() if value}
    fields["error"] = error[:2000]  # a success after a transient error clears it
    Message.objects.filter(pk__in=[m.pk for m in messages]).exclude(status=S.SKIPPED).update(
        **fields, **_advance(status, now)
    )
    kind = {
        S.SENT: Activity.Kind.MESSAGE_SENT,
        S.FAILED: Activity.Kind.MESSAGE_FAILED,
        S.SKIPPED: Activity.Kind.MESSAGE_SKIPPED,
    }[status]
    return [
        Activity(
            customer_id=message.customer_id,
            kind=kind,
            channel=message.channel,
            campaign_id=message.step.campaign_id,
            message_id=message.pk,
            occurred_at=now,
            properties={"reason": skip} if skip else ({"error": error} if error else {"to": message.to_address}),
        )
        for message in messages
    ]


def messages_send(*, message_ids: list[int], final_attempt: bool = False) -> None:
    """Send the queued messages among ``message_ids``.

    Each message is claimed (queued -> sending) before any provider call, so a
    redelivered task or a second worker never sends it twice. Erasure, suppression
    and consent are checked again now, right before the provider is called.
    Permanent errors fail the message with the provider's reason; transient ones
    put it back to queued and raise ``TransientSendError`` so the task retries,
    unless this is the final attempt.
    """
    claimed = _claim(message_ids)
    by_channel: dict[str, list[Message]] = defaultdict(list)
    for message in claimed:
        by_channel[message.channel].append(message)
    waits = [_send_channel(channel, messages, final_attempt) for channel, messages in by_channel.items()]
    waits = [wait for wait in waits if wait is not None]
    if waits:
        raise TransientSendError(
            f"Transient provider errors; {len(claimed)} messages will be retried.",
            retry_after=max(waits) or None,
        )


def _send_channel(channel: str, messages: list[Message], final_attempt: bool) -> float | None:
    """Send one channel's claimed messages; returns None, or the wait before a retry if some went back to queued."""
    consented = set(
        Customer.objects.filter(pk__in=[m.customer_id for m in messages])
        .consented(channel)
        .values_list("pk", flat=True)
    )
    # Read now, not at dispatch: the customer (loaded by _claim) may have been
    # erased, the address suppressed or consent withdrawn since.
    suppressed = suppressed_addresses(m.to_address for m in messages)
    skipped: dict[str, list[Message]] = defaultdict(list)
    sendable = []
    for message in messages:
        if skip := skip_reason(message.customer, message.to_address, consented, suppressed):
            skipped[skip].append(message)
        else:
            sendable.append(message)
    activities: list[Activity] = []
    for skip, group in skipped.items():  # one UPDATE per reason, not per message
        activities += _finish(group, S.SKIPPED, skip=skip)
    outbound, pending = [], {}
    cache: dict = {}  # short links and SMS prices, shared by the batch's renders
    for message in sendable:
        try:
            rendered = render_template(
                message.step.template,
                campaign=message.step.campaign,
                customer=message.customer,
                message=message,
                cache=cache,
            )
            rendered.raise_for_problems()
        except ContentError as exc:
            activities += _finish([message], S.FAILED, error=f"Content error in {exc}")
            continue
        brand = message.step.campaign.brand
        outbound.append(
            Outbound(
                message_id=message.pk,
                to=message.to_address,
                sender=brand.sender_for(channel),
                sender_name=brand.email_from_name,
                reply_to=brand.email_reply_to,
                subject=rendered.subject,
                body=rendered.text,
                html=rendered.html,
                categories=(f"campaign-{message.step.campaign_id}",),
                headers=dict(rendered.headers),
            )
        )
        pending[message.pk] = (message, rendered)

    wait: float | None = None  # set when some message must be retried: the provider's Retry-After, or 0
    if outbound:
        adapter = adapter_for(channel)
        try:
            results = adapter.send(outbound)
        except ChannelError as exc:
            results = [SendResult(o.message_id, error=exc) for o in outbound]
        for result in results:
            message, rendered = pending[result.message_id]
            if result.ok:
                activities += _finish(
                    [message],
                    S.SENT,
                    rendered=rendered,
                    provider=adapter.provider,
                    provider_message_id=result.provider_message_id,
                )
            elif result.error.permanent or final_attempt:
                activities += _finish(
                    [message], S.FAILED, rendered=rendered, provider=adapter.provider, error=result.error.message
                )
            else:
                logger.warning("Transient error sending message %s: %s", message.pk, result.error.message)
                Message.objects.filter(pk=message.pk, status=S.SENDING).update(
                    status=S.QUEUED, rank=Message.RANK[S.QUEUED], error=result.error.message
                )
                wait = max(wait or 0.0, result.error.retry_after or 0.0)
    Activity.objects.bulk_create(activities)
    return wait


# --- results back --------------------------------------------------------------


def _advance(status: str, at: datetime) -> dict:
    """UPDATE expressions that move a message to ``status`` unless it is already past it.

    Timestamps keep the earliest time seen, so events applied in any order and
    any number of times leave the same row.
    """
    rank = Message.RANK[status]
    fields = {
        "status": Case(When(rank__lt=rank, then=Value(status)), default=F("status")),
        "rank": Greatest(F("rank"), Value(rank)),
        "updated_at": Value(timezone.now()),
    }
    if ts := _TIMESTAMP.get(status):
        fields[ts] = Case(
            When(**{f"{ts}__isnull": True}, then=Value(at)), When(**{f"{ts}__gt": at}, then=Value(at)), default=F(ts)
        )
    return fields


def message_advance(*, message: Message, status: str, at: datetime) -> None:
    """Record that ``message`` reached ``status`` at ``at``; never moves backwards. Skipped is final."""
    Message.objects.filter(pk=message.pk).exclude(status=S.SKIPPED).update(**_advance(status, at))


def provider_events_record(*, provider: str, kind: str, events: list[tuple[str, dict]]) -> list[int]:
    """Store verified events raw (once per dedupe key) and enqueue their processing."""
    from channels.tasks import provider_event_process

    new_ids = []
    with transaction.atomic():
        for dedupe_key, payload in events:
            try:
                with transaction.atomic():
                    event = ProviderEvent.objects.create(
                        provider=provider, kind=kind, dedupe_key=dedupe_key[:200], payload=payload
                    )
            except IntegrityError:
                continue  # the same event delivered again
            new_ids.append(event.pk)
        transaction.on_commit(lambda: [provider_event_process.delay(pk) for pk in new_ids])
    return new_ids


def provider_event_process(*, event_id: int) -> None:
    """Apply one stored event to its message and the customer's timeline, once."""
    with transaction.atomic():
        event = ProviderEvent.objects.select_for_update().filter(pk=event_id, processed_at=None).first()
        if event is None:
            return
        outcome = EVENT_PARSERS[(event.provider, event.kind)](event.payload)
        message = None
        if outcome.message_lookup:
            message = Message.objects.filter(**outcome.message_lookup).select_related("step", "customer").first()
        customer = message.customer if message else outcome.customer
        if outcome.status and message:
            message_advance(message=message, status=outcome.status, at=outcome.at)
        if outcome.suppress:
            # Only a hash is kept, so this holds for erased customers too.
            address, reason = outcome.suppress
            suppression_add(addresses=[address or (message.to_address if message else "")], reason=reason)
        if customer and customer.erased_at:
            # A late webhook about an erased customer moves the message's status (reports
            # keep their counts) but leaves no personal data: not on the timeline, not in the ledger.
            ProviderEvent.objects.filter(pk=event.pk).update(
                processed_at=timezone.now(), message=message, payload={"erased": True}, error=""
            )
            return
        if outcome.activity and customer:
            # Through the timeline service, so last_engaged_<channel>_at stays current.
            activity_record(
                customer=customer,
                kind=outcome.activity,
                channel=outcome.channel or (message.channel if message else ""),
                campaign_id=message.step.campaign_id if message else outcome.campaign_id,
                message=message,
                occurred_at=outcome.at,
                properties={**outcome.properties, "provider_event": event.pk},
            )
        if outcome.consent and customer:
            # Serialise consent changes per customer, so two opt-outs processed at once
            # put one "consent changed" on the timeline, not two.
            Customer.objects.select_for_update().filter(pk=customer.pk).values_list("pk").first()
            consent_record(
                customer=customer,
                channel=outcome.channel or message.channel,
                status=outcome.consent,
                source=Consent.Source.SMS_KEYWORD if event.provider == "twilio" else Consent.Source.PROVIDER_EVENT,
                # Takes effect when we learn of it, so an opt-out always
                # outranks an earlier opt-in; the provider's time is evidence.
                evidence={"provider_event": event.pk, "event_at": outcome.at.isoformat(), **outcome.properties},
            )
        error = outcome.error or ("" if (message or customer) else "No matching message or customer.")
        ProviderEvent.objects.filter(pk=event.pk).update(processed_at=timezone.now(), message=message, error=error)


def twilio_help_reply(params: dict) -> str:
    """The automatic answer to a HELP / INFO reply, or "" for any other message.

    Names the brand that last messaged the sender (the first brand if none has)
    and its support contact (reply-to address, else the from address).
    """
    from campaigns.models import Brand

    if twilio_keyword(params) not in HELP_WORDS:
        return ""
    number = bare_number(str(params.get("From", "")))
    brand_id = (
        Message.objects.filter(customer__phone=number)
        .order_by("-created_at", "-id")
        .values_list("step__campaign__brand_id", flat=True)
        .first()
        if number
        else None
    )
    brand = Brand.objects.filter(pk=brand_id).first() or Brand.objects.order_by("pk").first()
    if brand is None:
        return ""
    contact = brand.email_reply_to or brand.email_from_address
    text = f"{brand.name}: for help"
    text += f" contact {contact}." if contact else " reply to this message."
    return text + " Reply STOP to opt out."
