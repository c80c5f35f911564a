"""The timeline: recording activities and keeping the customer's derived stats current.

Derived stats (lifetime value, orders, last purchase, last engaged per channel)
are always a function of the customer's ``Activity`` rows:

- ``purchase`` activities give ``orders_count`` (their number),
  ``lifetime_value`` (the sum of ``properties.amount``) and ``last_purchase_at``;
- ``last_engaged_<channel>_at`` is the latest ``message.opened``,
  ``message.clicked`` or ``message.replied`` on that channel, or the latest
  custom event (a kind that is not canonical) carrying that channel.

``customer_stats_refresh`` recomputes them all from scratch (idempotent, right
after merges); ``activity_record`` moves a single column forward for one
activity and ``activities_record`` does the same set-based for a webhook
batch; ``events_record`` takes events from the API.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, DecimalField, Max, OuterRef, Q, Subquery, Sum, Value
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from customers.identity import IDENTITY_FIELDS, NORMALIZERS
from customers.models import ACTIVITY_KIND, Activity, Channel, Customer
from customers.services.customers import NUL_MESSAGE, contains_nul, error_dict
from customers.services.personas import personas_assign

K = Activity.Kind
ENGAGEMENT_KINDS = (K.MESSAGE_OPENED, K.MESSAGE_CLICKED, K.MESSAGE_REPLIED, K.SOCIAL_MENTIONED)
EVENTS_LIMIT = 10_000
FUTURE_TOLERANCE = timedelta(minutes=5)
EARLIEST_YEAR = 1900
MAX_AMOUNT = Decimal("1000000000")  # per purchase; keeps lifetime_value inside its column
CUSTOMER_LOOKUPS = ("id", *IDENTITY_FIELDS)
# The customer's derived stats, all kept by ``customer_stats_refresh`` (in the model's field order).
STATS_FIELDS = (
    "lifetime_value",
    "orders_count",
    "last_purchase_at",
    *(f"last_engaged_{channel}_at" for channel in Channel.values),
)
EVENT_FIELDS = ("customer", "kind", "occurred_at", "channel", "campaign", "properties", "client_event_id")
_CURRENCY = re.compile(r"^[A-Za-z]{3}$")
_CHUNK = 2_000


def counts_as_engagement(kind: str, channel: str) -> bool:
    """Whether an activity of ``kind`` on ``channel`` moves ``last_engaged_<channel>_at``."""
    return bool(channel) and (kind in ENGAGEMENT_KINDS or kind not in K.values)


def _engagement_q() -> Q:
    return Q(kind__in=ENGAGEMENT_KINDS) | ~Q(kind__in=K.values)


# --- derived stats -------------------------------------------------------------


def customer_stats_refresh(*, customer_ids: Iterable[int]) -> int:
    """Recompute every derived stat of the given customers from their activities; returns rows updated.

    One UPDATE with correlated subqueries (per 2,000 customers), on SQLite and
    PostgreSQL alike. Idempotent: running it twice, or after activities moved
    between customers by a merge, leaves the right values.
    """
    ids = sorted(set(customer_ids))
    if not ids:
        return 0
    # Every subquery filters on the customer alone and picks its rows with FILTER
    # (CASE WHEN on SQLite): the timeline index (customer_id, occurred_at) serves
    # them all, even before the planner has statistics for a freshly loaded table.
    activities = Activity.objects.filter(customer=OuterRef("pk")).order_by().values("customer")
    purchase = Q(kind=K.PURCHASE)
    money = DecimalField(max_digits=14, decimal_places=2)
    amount = Cast(KeyTextTransform("amount", "properties"), money)

    def per_customer(expression, output_field=None):
        return Subquery(activities.annotate(value=expression).values("value")[:1], output_field=output_field)

    updates = {
        "lifetime_value": Coalesce(
            per_customer(Sum(amount, filter=purchase), money), Value(Decimal(0)), output_field=money
        ),
        "orders_count": Coalesce(per_customer(Count("pk", filter=purchase)), Value(0)),
        "last_purchase_at": per_customer(Max("occurred_at", filter=purchase)),
        **{
            f"last_engaged_{channel}_at": per_customer(Max("occurred_at", filter=_engagement_q() & Q(channel=channel)))
            for channel in Channel.values
        },
    }
    updated = 0
    with transaction.atomic():
        for start in range(0, len(ids), _CHUNK):
            updated += Customer.objects.filter(pk__in=ids[start : start + _CHUNK]).update(**updates)
    return updated


@transaction.atomic
def activity_record(
    *,
    customer: Customer,
    kind: str,
    occurred_at: datetime | None = None,
    channel: str = "",
    campaign_id: int | None = None,
    message=None,
    properties: dict | None = None,
) -> Activity:
    """Add one activity to ``customer``'s timeline and keep their derived stats current.

    Cheap on purpose (it runs per webhook): an engagement only moves
    ``last_engaged_<channel>_at`` forward with one conditional UPDATE; only a
    purchase recomputes the purchase stats.
    """
    at = occurred_at or timezone.now()
    activity = Activity.objects.create(
        customer=customer,
        kind=kind,
        channel=channel or "",
        campaign_id=campaign_id,
        message=message,
        occurred_at=at,
        properties=properties or {},
    )
    if counts_as_engagement(kind, channel) and channel in Channel.values:
        column = f"last_engaged_{channel}_at"
        Customer.objects.filter(Q(**{f"{column}__isnull": True}) | Q(**{f"{column}__lt": at}), pk=customer.pk).update(
            **{column: at}
        )
    if kind == K.PURCHASE:
        customer_stats_refresh(customer_ids=[customer.pk])
    return activity


class ActivityRow(NamedTuple):
    """One timeline entry for ``activities_record``: an ``Activity``'s fields, without building the model."""

    customer_id: int
    kind: str
    channel: str
    campaign_id: int | None
    message_id: int | None
    occurred_at: datetime
    properties: dict


def activities_record(*, rows: list[ActivityRow]) -> int:
    """Add many activities to their customers' timelines at once (the webhook batch path); returns how many.

    Leaves what ``activity_record`` called once per row leaves, set-based: one
    INSERT (on PostgreSQL the rows travel as one JSON document, read by
    ``jsonb_to_recordset``; elsewhere ``bulk_create``), then
    ``last_engaged_<channel>_at`` moved forward with one UPDATE per channel for
    the batch (one per customer elsewhere); purchases recompute the purchase stats.
    """
    if not rows:
        return 0
    latest: dict[str, dict[int, datetime]] = {}
    channels = set(Channel.values)
    pairs = {(row.kind, row.channel) for row in rows}
    engaging = {
        (kind, channel) for kind, channel in pairs if channel in channels and counts_as_engagement(kind, channel)
    }
    for row in rows:
        if (row.kind, row.channel) in engaging:
            by_customer = latest.setdefault(row.channel, {})
            at = by_customer.get(row.customer_id)
            by_customer[row.customer_id] = row.occurred_at if at is None else max(at, row.occurred_at)
    with transaction.atomic():
        if connection.vendor == "postgresql":
            _activities_insert_postgresql(rows)
        else:
            Activity.objects.bulk_create((Activity(**row._asdict()) for row in rows), batch_size=_CHUNK)
        for channel, by_customer in sorted(latest.items()):
            _last_engaged_advance(channel, by_customer)
        customer_stats_refresh(customer_ids={row.customer_id for row in rows if row.kind == K.PURCHASE})
    return len(rows)


def _activities_insert_postgresql(rows: list[ActivityRow]) -> None:
    document = json.dumps(
        [
            {"c": r.customer_id, "k": r.kind, "ch": r.channel, "cp": r.campaign_id, "m": r.message_id}
            | {"t": r.occurred_at.timestamp(), "p": r.properties}
            for r in rows
        ]
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {Activity._meta.db_table} "  # noqa: S608 - names from the model, values bound
            "(customer_id, kind, channel, campaign_id, message_id, occurred_at, properties) "
            "SELECT r.c, r.k, r.ch, r.cp, r.m, to_timestamp(r.t), r.p "
            "FROM jsonb_to_recordset(%s::jsonb) "
            "AS r(c bigint, k text, ch text, cp bigint, m bigint, t float8, p jsonb)",
            [document],
        )


def _last_engaged_advance(channel: str, latest: dict[int, datetime]) -> None:
    """Move ``last_engaged_<channel>_at`` forward to ``latest[customer id]`` where that is later."""
    column = f"last_engaged_{channel}_at"
    ids = sorted(latest)  # one lock order for concurrent batches
    if connection.vendor != "postgresql":
        for pk in ids:
            at = latest[pk]
            Customer.objects.filter(Q(**{f"{column}__isnull": True}) | Q(**{f"{column}__lt": at}), pk=pk).update(
                **{column: at}
            )
        return
    document = json.dumps([{"id": pk, "t": latest[pk].timestamp()} for pk in ids])
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Customer._meta.db_table} AS c SET {column} = to_timestamp(v.t) "  # noqa: S608 - as above
            "FROM jsonb_to_recordset(%s::jsonb) AS v(id bigint, t float8) "
            f"WHERE c.id = v.id AND (c.{column} IS NULL OR c.{column} < to_timestamp(v.t))",
            [document],
        )


# --- events from the API -------------------------------------------------------


class EventStatus:
    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    ERROR = "error"


@dataclass
class EventResult:
    """What happened to one event (``index`` is its position in the input; ``id`` the activity's)."""

    index: int
    status: str
    id: int | None = None
    errors: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class _Event:
    index: int
    lookup: dict[str, Any]
    activity: Activity
    client_event_id: str | None
    campaign_id: int | None


def _parse_occurred_at(value: Any, now: datetime) -> datetime:
    if value is None or value == "":
        return now
    try:
        parsed = parse_datetime(value) if isinstance(value, str) else None
    except ValueError:  # well-formed but impossible, e.g. month 13
        parsed = None
    if parsed is None:
        raise ValidationError(f"{value!r} is not an ISO 8601 date-time (for example 2025-03-01T12:30:00Z).")
    if timezone.is_naive(parsed):
        parsed = parsed.replace(tzinfo=UTC)  # documented: a time without an offset is UTC
    if parsed.year < EARLIEST_YEAR:
        raise ValidationError(f"{value} is before {EARLIEST_YEAR}; send the time the event really happened.")
    if parsed > now + FUTURE_TOLERANCE:
        raise ValidationError(f"{value} is more than 5 minutes in the future (server time {now.isoformat()}).")
    return parsed


def _parse_lookup(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not value:
        raise ValidationError(f'Must be an object with one of {", ".join(CUSTOMER_LOOKUPS)}, e.g. {{"email": "..."}}.')
    unknown = sorted(set(value) - set(CUSTOMER_LOOKUPS))
    if unknown:
        raise ValidationError(f"Unknown lookup {', '.join(unknown)}; use one of {', '.join(CUSTOMER_LOOKUPS)}.")
    lookup = {}
    for name, raw in value.items():
        if name == "id":
            if not isinstance(raw, int) or isinstance(raw, bool) or raw < 1:
                raise ValidationError("id must be a positive integer.")
            lookup["id"] = raw
            continue
        normalised = NORMALIZERS[name](raw)
        if normalised is None:
            raise ValidationError(f"{name} is blank.")
        lookup[name] = normalised
    return lookup


def _parse_purchase(properties: dict) -> dict:
    amount = properties.get("amount")
    if amount is None:
        raise ValidationError({"properties": ["A purchase needs properties.amount (a number, e.g. 49.90)."]})
    try:
        if isinstance(amount, bool) or not isinstance(amount, int | float | str):
            raise InvalidOperation
        value = Decimal(str(amount).strip())
        if not value.is_finite():
            raise InvalidOperation
    except InvalidOperation:
        raise ValidationError({"properties": [f"amount {amount!r} is not a number."]}) from None
    if value < 0:
        raise ValidationError({"properties": [f"amount {amount!r} is negative; record refunds as another kind."]})
    if value >= MAX_AMOUNT:
        raise ValidationError({"properties": [f"amount {amount!r} is too large (at most {MAX_AMOUNT - 1})."]})
    properties = {**properties, "amount": int(value) if value == value.to_integral_value() else float(value)}
    currency = properties.get("currency")
    if currency is not None:
        if not isinstance(currency, str) or not _CURRENCY.match(currency):
            raise ValidationError({"properties": [f"currency {currency!r} is not a 3-letter code (e.g. EUR)."]})
        properties["currency"] = currency.upper()
    return properties


def _parse_event(index: int, raw: Any, *, now: datetime, source: str) -> _Event:
    if not isinstance(raw, dict):
        raise ValidationError("Each event must be a JSON object.")
    errors: dict[str, list[str]] = {}

    def check(name: str, parse):
        try:
            return parse(raw.get(name))
        except ValidationError as exc:
            errors.update(exc.message_dict if hasattr(exc, "error_dict") else {name: exc.messages})
            return None

    for name, value in raw.items():
        if name not in EVENT_FIELDS:
            errors[name] = [f"Unknown field; an event has {', '.join(EVENT_FIELDS)}."]
        elif contains_nul(value):
            errors[name] = [NUL_MESSAGE]
    if errors:
        raise ValidationError(errors)
    lookup = check("customer", _parse_lookup)
    kind = check("kind", _parse_kind)
    occurred_at = check("occurred_at", lambda value: _parse_occurred_at(value, now))
    channel = check("channel", _parse_channel)
    campaign_id = check("campaign", _parse_campaign)
    properties = check("properties", _parse_properties)
    client_event_id = check("client_event_id", _parse_client_event_id)
    if kind == K.PURCHASE and properties is not None:
        properties = check("properties", lambda _: _parse_purchase(properties))
    if errors:
        raise ValidationError(errors)
    activity = Activity(
        kind=kind,
        occurred_at=occurred_at,
        channel=channel,
        campaign_id=campaign_id,
        # Provenance next to the client's own properties, which win on a clash.
        properties={"recorded_via": source, **properties},
        client_event_id=client_event_id,
    )
    return _Event(index, lookup, activity, client_event_id, campaign_id)


def _parse_kind(value: Any) -> str:
    if not isinstance(value, str) or not ACTIVITY_KIND.match(value):
        raise ValidationError(
            f"{value!r} is not an event kind: 1-64 lower-case letters, digits, '_' or '.' (for example order.refunded)."
        )
    if value == K.CONSENT_CHANGED:
        raise ValidationError("Record consent changes with POST /api/v1/customers/{id}/consents/.")
    return value


def _parse_channel(value: Any) -> str:
    if value is None or value == "":
        return ""
    if value not in Channel.values:
        raise ValidationError(f"Unknown channel {value!r}; use one of {', '.join(Channel.values)}.")
    return value


def _parse_campaign(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValidationError("Must be a campaign id (a positive integer).")
    return value


def _parse_properties(value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError('Must be a JSON object, e.g. {"sku": "TENT-2P"}.')
    return value


def _parse_client_event_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 128:
        raise ValidationError("Must be a non-blank string of at most 128 characters.")
    return value


def _resolve_customers(events: list[_Event]) -> dict[tuple[str, Any], int]:
    """(lookup field, value) -> customer id, for every lookup that names a live customer."""
    found: dict[tuple[str, Any], int] = {}
    for name in CUSTOMER_LOOKUPS:
        values = sorted({event.lookup[name] for event in events if name in event.lookup})
        column = "pk" if name == "id" else name
        for start in range(0, len(values), _CHUNK):
            rows = Customer.objects.live().filter(**{f"{column}__in": values[start : start + _CHUNK]})
            found.update(((name, value), pk) for value, pk in rows.values_list(column, "pk"))
    return found


def events_record(*, events: list[Any], source: str) -> list[EventResult]:
    """Record custom events, purchases and other activities from the API; one result per event, in order.

    Each event: ``customer`` (an object with id, email, phone, external_id,
    mastodon_handle or bluesky_handle; several must name the same customer),
    ``kind`` (``[a-z0-9_.]{1,64}``), ``occurred_at`` (ISO 8601, default now,
    UTC when it has no offset, at most 5 minutes ahead), optional ``channel``,
    ``campaign`` id, ``properties`` object and ``client_event_id``. A purchase
    needs ``properties.amount`` (a non-negative number; ``currency`` optional).

    Idempotent on ``client_event_id``: a repeat (in this call, an earlier one or
    a concurrent retry, which the unique constraint catches) is reported as
    ``duplicate`` with the original activity's id and adds no row. A bad event
    is ``error`` with reasons and never blocks the others. Derived stats and
    personas of the customers concerned are refreshed once per call.
    """
    if len(events) > EVENTS_LIMIT:
        raise ValidationError({"events": [f"At most {EVENTS_LIMIT:,} events per call; got {len(events):,}."]})
    now = timezone.now()
    results: dict[int, EventResult] = {}
    parsed: list[_Event] = []
    for index, raw in enumerate(events):
        try:
            parsed.append(_parse_event(index, raw, now=now, source=source))
        except ValidationError as exc:
            results[index] = EventResult(index, EventStatus.ERROR, errors=error_dict(exc))

    customers = _resolve_customers(parsed)
    campaign_model = Activity._meta.get_field("campaign").related_model
    campaign_ids = {event.campaign_id for event in parsed if event.campaign_id}
    known_campaigns = set(campaign_model.objects.filter(pk__in=campaign_ids).values_list("pk", flat=True))
    valid: list[_Event] = []
    for event in parsed:
        matched = {name: customers.get((name, value)) for name, value in event.lookup.items()}
        missing = [f"No customer with {name} {value!r}." for name, value in event.lookup.items() if not matched[name]]
        errors = {}
        if missing:
            errors["customer"] = missing
        elif len(set(matched.values())) > 1:
            detail = ", ".join(f"{name} matches customer {pk}" for name, pk in matched.items())
            errors["customer"] = [f"The lookups name different customers: {detail}."]
        if event.campaign_id and event.campaign_id not in known_campaigns:
            errors["campaign"] = [f"No campaign with id {event.campaign_id}."]
        if errors:
            results[event.index] = EventResult(event.index, EventStatus.ERROR, errors=errors)
            continue
        event.activity.customer_id = next(iter(matched.values()))
        valid.append(event)

    with transaction.atomic():
        results.update(_store(valid))
        recorded = [event for event in valid if results[event.index].status == EventStatus.RECORDED]
        stats_ids = {
            event.activity.customer_id
            for event in recorded
            if event.activity.kind == K.PURCHASE or counts_as_engagement(event.activity.kind, event.activity.channel)
        }
        customer_stats_refresh(customer_ids=stats_ids)
        personas_assign(customer_ids={event.activity.customer_id for event in recorded})
    return [results[index] for index in range(len(events))]


def _store(events: list[_Event]) -> dict[int, EventResult]:
    """Insert the events' activities; repeats of a client_event_id become duplicates of the first."""
    results: dict[int, EventResult] = {}
    keys = sorted({event.client_event_id for event in events if event.client_event_id})
    existing: dict[str, int] = {}
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        existing.update(Activity.objects.filter(client_event_id__in=chunk).values_list("client_event_id", "pk"))
    fresh, repeats, claimed = [], [], set()
    for event in events:
        key = event.client_event_id
        if key and (key in existing or key in claimed):
            repeats.append(event)
        else:
            claimed.add(key)
            fresh.append(event)
    try:
        with transaction.atomic():
            Activity.objects.bulk_create([event.activity for event in fresh], batch_size=1000)
    except IntegrityError:
        # A concurrent request recorded some of these client_event_ids first: insert one by one.
        for event in fresh:
            event.activity.pk = None
            try:
                with transaction.atomic():
                    event.activity.save(force_insert=True)
            except IntegrityError:
                event.activity.pk = None
                repeats.append(event)
    for event in fresh:
        if event.activity.pk:
            if event.client_event_id:
                existing.setdefault(event.client_event_id, event.activity.pk)
            results[event.index] = EventResult(event.index, EventStatus.RECORDED, id=event.activity.pk)
    missing = [event.client_event_id for event in repeats if event.client_event_id not in existing]
    if missing:
        existing.update(Activity.objects.filter(client_event_id__in=missing).values_list("client_event_id", "pk"))
    for event in repeats:
        results[event.index] = EventResult(event.index, EventStatus.DUPLICATE, id=existing[event.client_event_id])
    return results
