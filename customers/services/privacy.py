"""GDPR: export everything Chorus holds about a person, and erase it.

Erasure keeps the customer row (campaign reports keep their counts) but removes
personal data from every table that can hold it, and puts the person's addresses
on the suppression list as hashes, so the same address re-imported later is
never messaged again.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q, Value
from django.db.models.fields.json import KT
from django.db.models.functions import Replace
from django.utils import timezone

from campaigns.models import Enrollment
from channels.models import Message, ProviderEvent, SandboxMessage, Suppression, WebhookDelivery
from channels.selectors import message_as_sent, sandbox_texts
from channels.suppression import suppressed_hashes, suppression_add
from customers.identity import IDENTITY_FIELDS
from customers.models import Activity, Consent, Customer, Erasure
from customers.services.activities import STATS_FIELDS
from customers.services.customers import PROFILE_FIELDS
from segments.models import SegmentMember

EXPORT_FORMAT = "chorus.customer-export/1"
ERASED_TEXT = "[erased]"
# Social handles and the phone are addresses too: everything a message can go to.
ADDRESS_FIELDS = ("email", "phone", "mastodon_handle", "bluesky_handle")

MESSAGE_TIMES = ("created_at", "sent_at", "delivered_at", "opened_at", "clicked_at", "failed_at")
ACTIVITY_EXPORT = ("id", "occurred_at", "kind", "channel", "campaign_id", "campaign__name", "message_id", "properties",
                   "client_event_id")  # fmt: skip
ENROLLMENT_EXPORT = ("id", "run__campaign_id", "run__campaign__name", "run__number", "step_position", "state",
                     "next_action_at")  # fmt: skip
OUTBOX_EXPORT = ("id", "provider", "provider_message_id", "to_address", "from_address", "subject", "body",
                 "created_at")  # fmt: skip


def _plain(value: Any) -> Any:
    """``value`` with datetimes, decimals and UUIDs turned into JSON strings (recursively)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    return value


def _provider_events_q(customer: Customer) -> Q:
    """Stored webhook events about this customer: those of their messages, and the ones
    (inbound replies, STOP keywords) their timeline or consent ledger points at."""
    referenced: set[int] = set()
    # Activities tied to a message are covered by the message's own events.
    for queryset, field in (
        (Activity.objects.filter(customer=customer, message__isnull=True), "properties"),
        (Consent.objects.filter(customer=customer), "evidence"),
    ):
        pks = queryset.filter(**{f"{field}__has_key": "provider_event"}).values_list(
            f"{field}__provider_event", flat=True
        )
        referenced.update(int(pk) for pk in pks.iterator() if str(pk).isdigit())
    return Q(message__customer_id=customer.pk) | Q(pk__in=referenced)


def _scrubbed(field: str, addresses: list[str]) -> Replace | F:
    """``field`` with every occurrence of ``addresses`` replaced, as one UPDATE expression."""
    expression = F(field)
    for address in addresses:
        expression = Replace(expression, Value(address), Value(ERASED_TEXT))
    return expression


def _addresses(customer: Customer) -> list[str]:
    """The addresses the customer can be messaged at now."""
    return [value for field in ADDRESS_FIELDS if (value := getattr(customer, field))]


def _every_address(customer: Customer) -> list[str]:
    """Their current addresses and every address a message to them went to, longest first
    (so replacing them in text never leaves half of a longer one)."""
    sent_to = (
        Message.objects.filter(customer=customer).exclude(to_address="").order_by().values_list("to_address", flat=True)
    )
    return sorted(set(_addresses(customer)) | set(sent_to.distinct()), key=len, reverse=True)


def customer_export(*, customer: Customer) -> dict:
    """Everything Chorus holds about ``customer``, as a JSON-serialisable dict.

    Identities, profile, attributes, persona, derived stats, the consent ledger,
    every activity, every message (with its campaign and the raw provider events
    about it), enrollments, static memberships (with when they were added), every
    segment they are in now, what the sandbox outbox received for their addresses,
    whether those addresses are suppressed, and their erasure status.
    """
    from segments.selectors import customer_segments

    customer = Customer.objects.select_related("persona").get(pk=customer.pk)
    events_by_message: dict[int | None, list[dict]] = {}
    for event in ProviderEvent.objects.filter(_provider_events_q(customer)).order_by("received_at", "pk"):
        events_by_message.setdefault(event.message_id, []).append(
            {
                "id": event.pk,
                "provider": event.provider,
                "kind": event.kind,
                "received_at": event.received_at,
                "processed_at": event.processed_at,
                "error": event.error,
                "payload": event.payload,
            }
        )

    messages = []
    for message in (
        Message.objects.filter(customer=customer)
        .select_related("step__campaign", "run", "content")
        .order_by("created_at", "pk")
    ):
        subject, body = message_as_sent(message)
        messages.append(
            {
                "id": message.pk,
                "campaign": {"id": message.step.campaign_id, "name": message.step.campaign.name},
                "run": message.run.number,
                "step": message.step.position,
                "channel": message.channel,
                "status": message.status,
                "skip_reason": message.skip_reason,
                "error": message.error,
                "to_address": message.to_address,
                "subject": subject,
                "body": body,
                "provider": message.provider,
                "provider_message_id": message.provider_message_id,
                "attempts": message.attempts,
                **{name: getattr(message, name) for name in MESSAGE_TIMES},
                "provider_events": events_by_message.pop(message.pk, []),
            }
        )
    # Events not tied to one of their messages (an inbound reply, a STOP keyword).
    other_events = [event for events in events_by_message.values() for event in events]

    addresses = _addresses(customer)
    suppressed = suppressed_hashes(addresses)
    erasure = Erasure.objects.filter(customer_id=customer.pk).select_related("erased_by").first()
    persona = customer.persona
    outbox = list(SandboxMessage.objects.filter(to_address__in=_every_address(customer)).order_by("created_at", "pk"))
    texts = sandbox_texts(outbox)  # the text each got, a shared call's read in one query

    export = {
        "format": EXPORT_FORMAT,
        "exported_at": timezone.now(),
        "customer": {
            "id": customer.pk,
            "identities": {field: getattr(customer, field) for field in IDENTITY_FIELDS},
            "profile": {field: getattr(customer, field) for field in PROFILE_FIELDS},
            "attributes": customer.attributes,
            "persona": {"id": persona.pk, "name": persona.name, "slug": persona.slug} if persona else None,
            "stats": {field: getattr(customer, field) for field in STATS_FIELDS},
            "created_at": customer.created_at,
            "updated_at": customer.updated_at,
        },
        "consents": list(
            Consent.objects.filter(customer=customer)
            .order_by("occurred_at", "pk")
            .values("id", "channel", "status", "source", "occurred_at", "evidence")
        ),
        "activities": list(
            Activity.objects.filter(customer=customer).order_by("occurred_at", "pk").values(*ACTIVITY_EXPORT)
        ),
        "messages": messages,
        "provider_events": other_events,
        "enrollments": list(
            Enrollment.objects.filter(customer=customer).order_by("run__started_at", "pk").values(*ENROLLMENT_EXPORT)
        ),
        "segments": {
            "static": list(
                SegmentMember.objects.filter(customer=customer)
                .order_by("segment__name")
                .values("segment_id", "segment__name", "added_at")
            ),
            "now": [{"id": s.pk, "name": s.name, "kind": s.kind} for s in customer_segments(customer)],
        },
        "suppressed_addresses": [
            {"address": address, "suppressed": Suppression.address_hash_for(address) in suppressed}
            for address in addresses
        ],
        "sandbox_outbox": [
            {**{name: getattr(message, name) for name in OUTBOX_EXPORT}, "body": texts[message.pk]}
            for message in outbox
        ],
        "erasure": {
            "erased": customer.erased_at is not None,
            "erased_at": customer.erased_at,
            "erased_by": erasure.erased_by.get_username() if erasure and erasure.erased_by else None,
            "reason": erasure.reason if erasure else "",
        },
    }
    return _plain(export)


def customer_erase(*, customer: Customer, by, reason: str = "") -> Erasure:
    """Remove ``customer``'s personal data from every table; returns the audit record.

    The address hashes go on the suppression list first (reason erasure). Then: the
    customer row loses its identities, names, place, locale, time zone, attributes
    and persona and gets ``erased_at`` (the row stays so reports keep their counts);
    activities keep kind, time, channel and campaign but lose their properties;
    consent rows lose their evidence; messages lose address, subject and body (and
    the address inside a provider error); the raw provider events about them become
    ``{"erased": true}``; the sandbox outbox forgets what it received for them;
    static segment memberships are deleted and unfinished enrollments exited.
    ``Erasure.suppressed`` counts the person's addresses now on the suppression list.

    All in one transaction with the customer row locked. Erasing an erased
    customer raises ``ValidationError``. Callers check the permission
    (``customers.add_erasure``, Admins only).
    """
    reason = (reason or "").strip()
    max_reason = Erasure._meta.get_field("reason").max_length
    if len(reason) > max_reason:
        raise ValidationError({"reason": f"Keep the reason to {max_reason} characters at most."})
    with transaction.atomic():
        customer = Customer.objects.select_for_update().filter(pk=customer.pk).first()
        if customer is None:
            raise ValidationError("This customer does not exist (it may have been merged into another one).")
        if customer.erased_at is not None:
            when = timezone.localtime(customer.erased_at).strftime("%Y-%m-%d %H:%M")
            raise ValidationError(f"Customer #{customer.pk} was already erased on {when}.")
        now = timezone.now()
        addresses = _addresses(customer)
        suppression_add(addresses=addresses, reason=Suppression.Reason.ERASURE)

        # Exit unfinished enrollments first: this waits for a dispatch that holds them,
        # so the messages it writes are scrubbed below rather than missed.
        Enrollment.objects.filter(customer=customer).exclude(
            state__in=[Enrollment.State.COMPLETED, Enrollment.State.EXITED]
        ).update(state=Enrollment.State.EXITED, next_action_at=None)

        every_address = _every_address(customer)
        events = ProviderEvent.objects.filter(_provider_events_q(customer))
        Message.objects.filter(customer=customer).update(
            to_address="", subject="", body="", content=None, error=_scrubbed("error", every_address), updated_at=now
        )
        events.update(payload=ProviderEvent.ERASED_PAYLOAD, error=_scrubbed("error", every_address))
        if every_address:
            outbox = SandboxMessage.objects.filter(to_address__in=every_address)
            # A row keeping the call an email's other recipients share keeps it (its content
            # carries their tags, not this customer's links), without this customer's personalization.
            sharing = SandboxMessage.objects.annotate(content_of=KT(f"request__{SandboxMessage.CONTENT_OF}")).filter(
                content_of=OuterRef("provider_message_id")
            )
            holders = list(outbox.filter(Exists(sharing)))
            for message in holders:
                call = {key: value for key, value in message.request.items() if key != "personalizations"}
                SandboxMessage.objects.filter(pk=message.pk).update(request=call)
            outbox.exclude(pk__in=[message.pk for message in holders]).update(request={})
            outbox.update(to_address="", subject="", body="")
            # A webhook batch not split yet (or kept for its error) still holds the raw request.
            addressed = Q()
            for address in every_address:
                addressed |= Q(body__contains=address)
            WebhookDelivery.objects.filter(addressed).update(body=_scrubbed("body", every_address))
        Activity.objects.filter(customer=customer).update(properties={})
        Consent.objects.filter(customer=customer).update(evidence={})
        SegmentMember.objects.filter(customer=customer).delete()
        Customer.objects.filter(pk=customer.pk).update(
            **dict.fromkeys(IDENTITY_FIELDS),
            **dict.fromkeys(PROFILE_FIELDS, ""),
            attributes={},
            persona=None,
            erased_at=now,
            updated_at=now,
        )
        return Erasure.objects.create(
            customer_id=customer.pk, erased_by=by, erased_at=now, reason=reason, suppressed=len(addresses)
        )
