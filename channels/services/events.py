"""Results back: verified webhook requests stored whole, then split into events and applied set-based.

The webhook view stores the verified request as one ``WebhookDelivery`` row and
answers. ``webhook_delivery_process`` (a task) splits it into ``ProviderEvent``
rows, one per dedupe key (``INSERT ... ON CONFLICT DO NOTHING``), and applies
only the rows it inserted, in the same transaction: message status (one
rank-guarded UPDATE for the batch), the timeline (one bulk insert, keeping
``last_engaged_<channel>_at`` current), suppression and consent. Another
delivery of the same event, even one processed at the same moment, waits on the
dedupe key and then finds nothing new, so every event is applied exactly once.

A SendGrid delivery on PostgreSQL (thousands of events a request) is applied by
one statement instead (``sendgrid_delivery.sendgrid_delivery_apply``), to the
same end.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from django.db import connection, transaction
from django.utils import timezone

from channels.models import Message, ProviderEvent, WebhookDelivery
from channels.providers import (
    EVENT_PARSERS,
    HELP_WORDS,
    NO_MATCH,
    EventOutcome,
    bare_number,
    delivery_events,
    twilio_keyword,
)
from channels.services.sendgrid_delivery import sendgrid_delivery_apply
from channels.services.status import messages_advance
from channels.suppression import suppression_add
from config.db import in_values
from customers.models import Consent, Customer
from customers.services.activities import ActivityRow, activities_record
from customers.services.consent import ConsentChange, consents_record

_CHUNK = 5_000  # references per message lookup
_SQLITE_CHUNK = 500  # rows per multi-row INSERT, within SQLite's variable limit


class _MessageRow(NamedTuple):
    pk: int
    customer_id: int
    channel: str
    campaign_id: int | None
    to_address: str


@dataclass
class _Event:
    dedupe_key: str
    payload: dict
    outcome: EventOutcome
    message: _MessageRow | None = None
    customer_id: int | None = None
    erased: bool = False
    pk: int | None = None

    @property
    def error(self) -> str:
        return self.outcome.error or ("" if self.customer_id else NO_MATCH)

    @property
    def stored_payload(self) -> dict:
        return ProviderEvent.ERASED_PAYLOAD if self.erased else self.payload


# --- deliveries ----------------------------------------------------------------


def webhook_delivery_record(*, provider: str, kind: str, body: str) -> WebhookDelivery:
    """Store one verified webhook request whole (one INSERT); its processing is enqueued after commit."""
    from channels.tasks import webhook_delivery_process

    with transaction.atomic():
        delivery = WebhookDelivery.objects.create(provider=provider, kind=kind, body=body)
        transaction.on_commit(lambda: webhook_delivery_process.delay(delivery.pk))
    return delivery


def webhook_delivery_process(*, delivery_id: int) -> list[int]:
    """Split a stored delivery into provider events and apply the new ones; returns their ids.

    Once per delivery: a redelivered task finds it processed (or waits for the
    worker holding it). The body is emptied once its events are stored, which
    from then on carry the payloads (and are what erasure scrubs); a body that
    cannot be split keeps it, with the reason in ``error``.
    """
    with transaction.atomic():
        # The body (768 KB for a full SendGrid batch) is read only by the Python path; the statement reads it in place.
        delivery = (
            WebhookDelivery.objects.select_for_update().filter(pk=delivery_id, processed_at=None).defer("body").first()
        )
        if delivery is None:
            return []
        new = None
        if delivery.provider == "sendgrid" and connection.vendor == "postgresql":
            new = sendgrid_delivery_apply(delivery)  # None: not a list of events, said below
        if new is None:
            try:
                events = delivery_events(delivery.provider, delivery.kind, delivery.body)
            except ValueError as exc:
                WebhookDelivery.objects.filter(pk=delivery.pk).update(processed_at=timezone.now(), error=str(exc))
                return []
            new = provider_events_record(
                provider=delivery.provider, kind=delivery.kind, events=events, received_at=delivery.received_at
            )
        WebhookDelivery.objects.filter(pk=delivery.pk).update(processed_at=timezone.now(), body="")
    return new


# --- events --------------------------------------------------------------------


def provider_events_record(
    *, provider: str, kind: str, events: list[tuple[str, dict]], received_at: datetime | None = None
) -> list[int]:
    """Store verified events raw, once per dedupe key, and apply the new ones; returns their ids.

    Set-based, in one transaction. Each event is stored already processed (its
    message and error set; an erased customer's payload replaced by
    ``ERASED_PAYLOAD``). Events whose key is already stored, by an earlier
    delivery or a concurrent one, are left alone: the INSERT reports which rows
    are new, and only those are applied. Keys are inserted in sorted order, so
    two batches sharing keys wait for each other instead of deadlocking.
    """
    parse = EVENT_PARSERS[(provider, kind)]
    unique: dict[str, int] = {}
    for index, (key, _) in enumerate(events):
        unique.setdefault(key[:200], index)
    batch = [_Event(key, events[index][1], parse(events[index][1])) for key, index in sorted(unique.items())]
    with transaction.atomic():
        _resolve(batch)
        _insert(provider, kind, batch, received_at or timezone.now())
        new = [event for event in batch if event.pk]
        _apply(provider, new)
    return [event.pk for event in new]


def provider_event_process(*, event_id: int) -> None:
    """Apply one stored, unprocessed event (as stored one by one before deliveries existed), once."""
    with transaction.atomic():
        stored = ProviderEvent.objects.select_for_update().filter(pk=event_id, processed_at=None).first()
        if stored is None:
            return
        parse = EVENT_PARSERS[(stored.provider, stored.kind)]
        event = _Event(stored.dedupe_key, stored.payload, parse(stored.payload))
        event.pk = stored.pk
        _resolve([event])
        _apply(stored.provider, [event])
        ProviderEvent.objects.filter(pk=stored.pk).update(
            processed_at=timezone.now(),
            message_id=event.message.pk if event.message else None,
            payload=event.stored_payload,
            error=event.error,
        )


def _resolve(batch: list[_Event]) -> None:
    """Find each event's message (one query per kind of reference), customer and whether they were erased."""
    fields = ("pk", "customer_id", "channel", "step__campaign_id", "to_address")

    def rows(queryset, key_field: str) -> dict:
        return {row[0]: _MessageRow(*row[1:]) for row in queryset.order_by().values_list(key_field, *fields)}

    ids = sorted({event.outcome.message_id for event in batch if event.outcome.message_id})
    by_id: dict[int, _MessageRow] = {}
    for start in range(0, len(ids), _CHUNK):
        by_id.update(rows(Message.objects.filter(pk__in=in_values(ids[start : start + _CHUNK])), "pk"))
    references: dict[str, set[str]] = defaultdict(set)
    for event in batch:
        if event.outcome.provider_message:
            references[event.outcome.provider_message[0]].add(event.outcome.provider_message[1])
    by_reference: dict[tuple[str, str], _MessageRow] = {}
    for provider, values in references.items():
        values = sorted(values)
        for start in range(0, len(values), _CHUNK):
            chunk = Message.objects.filter(provider=provider, provider_message_id__in=values[start : start + _CHUNK])
            by_reference.update(
                ((provider, reference), row) for reference, row in rows(chunk, "provider_message_id").items()
            )
    for event in batch:
        outcome = event.outcome
        if outcome.message_id:
            message = by_id.get(outcome.message_id)
            event.message = message if message and message.channel in outcome.message_channels else None
        elif outcome.provider_message:
            event.message = by_reference.get(outcome.provider_message)
        if event.message:
            event.customer_id = event.message.customer_id
        elif outcome.customer:
            event.customer_id = outcome.customer.pk
    # Asked apart from the messages, through the index of live customers: a join
    # would make PostgreSQL read the whole customer table for a batch.
    customer_ids = sorted({event.customer_id for event in batch if event.customer_id})
    erased = set(customer_ids)
    for start in range(0, len(customer_ids), _CHUNK):
        chunk = customer_ids[start : start + _CHUNK]
        erased.difference_update(Customer.objects.live().filter(pk__in=in_values(chunk)).values_list("pk", flat=True))
    for event in batch:
        event.erased = event.customer_id in erased


def _insert(provider: str, kind: str, batch: list[_Event], received_at: datetime) -> None:
    """INSERT the events, skipping stored dedupe keys; sets ``pk`` on the ones inserted."""
    ops = connection.ops
    received, processed = ops.adapt_datetimefield_value(received_at), ops.adapt_datetimefield_value(timezone.now())
    if connection.vendor == "postgresql":
        inserted = _insert_postgresql(provider, kind, batch, received, processed)
    else:
        inserted = _insert_portable(provider, kind, batch, received, processed)
    for event in batch:
        event.pk = inserted.get(event.dedupe_key)


_CONFLICT = "ON CONFLICT (provider, dedupe_key) DO NOTHING RETURNING id, dedupe_key"


def _insert_postgresql(provider, kind, batch, received, processed) -> dict[str, int]:
    # One statement, the rows as one JSON document, in dedupe key order: batches sharing keys
    # wait for each other, never deadlock.
    document = json.dumps(
        [
            {"k": event.dedupe_key, "p": event.stored_payload, "m": event.message.pk if event.message else None}
            | {"e": event.error}
            for event in batch
        ]
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {ProviderEvent._meta.db_table} "  # noqa: S608 - names from the model, values bound
            "(provider, kind, dedupe_key, payload, received_at, processed_at, message_id, error) "
            "SELECT %s, %s, r.k, r.p, %s, %s, r.m, r.e "
            "FROM jsonb_to_recordset(%s::jsonb) AS r(k text, p jsonb, m bigint, e text) "
            f"ORDER BY r.k {_CONFLICT}",
            [provider, kind, received, processed, document],
        )
        return {key: pk for pk, key in cursor.fetchall()}


def _insert_portable(provider, kind, batch, received, processed) -> dict[str, int]:
    inserted: dict[str, int] = {}
    with connection.cursor() as cursor:
        for start in range(0, len(batch), _SQLITE_CHUNK):
            chunk = batch[start : start + _SQLITE_CHUNK]
            params = []
            for event in chunk:
                message_id = event.message.pk if event.message else None
                params += [provider, kind, event.dedupe_key, json.dumps(event.stored_payload)]
                params += [received, processed, message_id, event.error]
            cursor.execute(
                f"INSERT INTO {ProviderEvent._meta.db_table} "  # noqa: S608 - names from the model, values bound
                "(provider, kind, dedupe_key, payload, received_at, processed_at, message_id, error) "
                f"VALUES {', '.join(['(%s, %s, %s, %s, %s, %s, %s, %s)'] * len(chunk))} {_CONFLICT}",
                params,
            )
            inserted.update((key, pk) for pk, key in cursor.fetchall())
    return inserted


def _apply(provider: str, events: list[_Event]) -> None:
    """Apply new events: status, suppression, then (customers not erased) timeline and consent."""
    reached: dict[int, list[tuple[str, datetime]]] = defaultdict(list)
    suppress: dict[str, list[str]] = defaultdict(list)
    failures: dict[str, list[int]] = defaultdict(list)
    activities, consents = [], []
    consent_source = Consent.Source.SMS_KEYWORD if provider == "twilio" else Consent.Source.PROVIDER_EVENT
    for event in events:
        outcome, message = event.outcome, event.message
        if outcome.status and message:
            reached[message.pk].append((outcome.status, outcome.at))
            if outcome.failure:
                failures[outcome.failure].append(message.pk)
        if outcome.suppress:
            # Only a hash is kept, so this holds for erased customers too.
            address, reason = outcome.suppress
            suppress[reason].append(address or (message.to_address if message else ""))
        if event.erased or not event.customer_id:
            # A late webhook about an erased customer moves the message's status (reports
            # keep their counts) but leaves no personal data: not on the timeline, not in the ledger.
            continue
        if outcome.activity:
            activities.append(
                ActivityRow(
                    customer_id=event.customer_id,
                    kind=outcome.activity,
                    channel=outcome.channel or (message.channel if message else ""),
                    campaign_id=message.campaign_id if message else outcome.campaign_id,
                    message_id=message.pk if message else None,
                    occurred_at=outcome.at,
                    properties={**outcome.properties, "provider_event": event.pk},
                )
            )
        if outcome.consent:
            consents.append(
                ConsentChange(
                    event.customer_id,
                    outcome.channel or message.channel,
                    outcome.consent,
                    consent_source,
                    # Takes effect when we learn of it (no ``at``), so an opt-out always
                    # outranks an earlier opt-in; the provider's time is evidence.
                    {"provider_event": event.pk, "event_at": outcome.at.isoformat(), **outcome.properties},
                )
            )
    messages_advance(reached=reached)
    for failure, message_ids in sorted(failures.items()):  # few distinct reasons: one UPDATE each
        Message.objects.filter(pk__in=message_ids, error="").exclude(status=Message.Status.SKIPPED).update(
            error=failure
        )
    for reason, addresses in sorted(suppress.items()):
        suppression_add(addresses=addresses, reason=reason)
    activities_record(rows=activities)
    consents.sort(key=lambda change: (change.customer_id, change.evidence["provider_event"]))
    consents_record(changes=consents)


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
