"""Results back: verified provider events stored raw, then applied to messages, timeline and consent."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.utils import timezone

from channels.models import Message, ProviderEvent
from channels.providers import EVENT_PARSERS, HELP_WORDS, bare_number, twilio_keyword
from channels.services.status import message_advance
from channels.suppression import suppression_add
from customers.models import Consent, Customer
from customers.services import consent_record
from customers.services.activities import activity_record


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
