"""Reads for the customer pages and the persona pages.

Every function here costs a fixed number of queries whatever the data size:
aggregates are computed in SQL (GROUP BY / conditional COUNT), lists are
sliced, and nothing loads a customer's whole timeline.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.db import connection
from django.db.models import Count, F, IntegerField, OuterRef, Q, QuerySet, Subquery, Value, Window
from django.db.models.functions import Coalesce, RowNumber

from customers.models import Activity, Channel, Consent, Customer, Persona
from customers.querysets import consent_q, consent_status_subquery

# Above this many rows, PostgreSQL's own estimate stands in for COUNT(*) of all customers.
ESTIMATE_ABOVE = 200_000
NO_PERSONA = "none"  # the customer list's persona filter value for "customers without a persona"
CONSENT_HISTORY_MAX = 200  # ledger rows shown on the customer page, newest first
ENGAGEMENT_KINDS = {
    Activity.Kind.MESSAGE_SENT: "sent",
    Activity.Kind.MESSAGE_DELIVERED: "delivered",
    Activity.Kind.MESSAGE_OPENED: "opened",
    Activity.Kind.MESSAGE_CLICKED: "clicked",
    Activity.Kind.MESSAGE_BOUNCED: "bounced",
}


# Customer list -------------------------------------------------------------------------------


def customer_search(*, query: str = "", persona: str = "") -> QuerySet[Customer]:
    """Live customers matching the search box and persona filter (a persona id, ``NO_PERSONA`` or "").

    Erased customers are anonymous rows kept for reports; like segments and the total, the list leaves them out.
    """
    customers = Customer.objects.live().search(query)
    if persona == NO_PERSONA:
        customers = customers.filter(persona__isnull=True)
    elif persona:
        customers = customers.filter(persona_id=persona)
    return customers.select_related("persona").annotate(
        email_consent=consent_status_subquery(Channel.EMAIL),
        sms_consent=consent_status_subquery(Channel.SMS),
    )


def customers_total() -> tuple[int, bool]:
    """How many customers there are, and whether that is an estimate.

    Exact on SQLite and on small tables; on a big PostgreSQL table the planner's row
    estimate (kept by ANALYZE/autovacuum), which is instant where COUNT(*) over a
    million rows is not.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [Customer._meta.db_table])
            row = cursor.fetchone()
        if row and row[0] >= ESTIMATE_ABOVE:
            return int(row[0]), True
    return Customer.objects.live().count(), False


def persona_choices() -> list[Persona]:
    """Personas for pickers: id, name and slug only."""
    return list(Persona.objects.only("pk", "name", "slug", "priority"))


# The customer page ---------------------------------------------------------------------------


def customer_get(*, pk: int) -> Customer | None:
    return Customer.objects.select_related("persona").filter(pk=pk).first()


def customer_timeline(*, customer: Customer, channel: str = "", kind: str = "") -> QuerySet[Activity]:
    """The customer's activities, newest first, optionally one channel and/or kind (paginate it)."""
    activities = Activity.objects.filter(customer=customer).select_related("campaign").order_by("-occurred_at", "-id")
    if channel:
        activities = activities.filter(channel=channel)
    if kind:
        activities = activities.filter(kind=kind)
    return activities


@dataclass
class ActivitySummary:
    """What the customer page says about the whole timeline, from one GROUP BY."""

    total: int = 0
    kinds: list[str] = field(default_factory=list)
    # channel -> {"sent": n, "delivered": n, ...}, only channels with message activity
    engagement: list[dict[str, Any]] = field(default_factory=list)


def customer_activity_summary(*, customer: Customer) -> ActivitySummary:
    """Totals, distinct kinds (for the filter) and per-channel engagement counts in one query."""
    rows = (
        Activity.objects.filter(customer=customer)
        .order_by()
        .values("channel", "kind")
        .annotate(n=Count("pk"))
        .values_list("channel", "kind", "n")
    )
    summary = ActivitySummary()
    kinds: set[str] = set()
    per_channel: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(ENGAGEMENT_KINDS.values(), 0))
    for channel, kind, n in rows:
        summary.total += n
        kinds.add(kind)
        if channel and kind in ENGAGEMENT_KINDS:
            per_channel[channel][ENGAGEMENT_KINDS[kind]] += n
    summary.kinds = sorted(kinds)
    labels = dict(Channel.choices)
    for value in Channel.values:  # channel order, not query order
        if value in per_channel:
            counts = per_channel[value]
            summary.engagement.append(
                {
                    "channel": value,
                    "label": labels[value],
                    **counts,
                }
            )
    return summary


@dataclass
class ConsentOverview:
    """The customer's consent: the current state per channel and the ledger, newest first."""

    channels: list[dict[str, Any]]
    ledger: list[Consent]
    total: int


def customer_consents(*, customer: Customer, history_max: int = CONSENT_HISTORY_MAX) -> ConsentOverview:
    """Current state per channel (the latest ledger row) and the newest ``history_max`` ledger rows.

    Three queries whatever the ledger's length: the latest row per channel (a window
    function), the row count per channel, and the newest rows.
    """
    ledger = Consent.objects.filter(customer=customer)
    newest_first = [F("occurred_at").desc(), F("id").desc()]
    position = Window(RowNumber(), partition_by=[F("channel")], order_by=newest_first)
    latest = {row.channel: row for row in ledger.annotate(position=position).filter(position=1)}
    counts = dict(ledger.order_by().values("channel").annotate(n=Count("pk")).values_list("channel", "n"))
    channels = [
        {
            "channel": value,
            "label": label,
            "current": latest.get(value),
            "status": latest[value].status if value in latest else None,
            "changes": counts.get(value, 0),
        }
        for value, label in Channel.choices
    ]
    rows = list(ledger.order_by("-occurred_at", "-id")[:history_max])
    return ConsentOverview(channels=channels, ledger=rows, total=sum(counts.values()))


# Personas ------------------------------------------------------------------------------------


def _member_count() -> Coalesce:
    # A count per persona through the index on customer.persona (erased customers have
    # no persona), rather than a join and GROUP BY over every customer.
    members = (
        Customer.objects.filter(persona=OuterRef("pk")).order_by().values("persona").annotate(n=Count("*")).values("n")
    )
    return Coalesce(Subquery(members, output_field=IntegerField()), Value(0))


def personas_with_member_counts() -> QuerySet[Persona]:
    """Personas with ``member_count``, in priority order; one query."""
    return Persona.objects.annotate(member_count=_member_count()).order_by("-priority", "name")


def persona_overview() -> tuple[list[Persona], int, bool]:
    """The persona list: each persona with ``member_count``, ``share`` (percent of all customers)
    and its preferred channels' labels; the number of customers and whether it is an estimate."""
    personas = list(personas_with_member_counts())
    total, estimated = customers_total()
    total = max(total, sum(p.member_count for p in personas))  # an estimate may lag behind
    labels = dict(Channel.choices)
    for persona in personas:
        persona.channel_labels = [(value, labels.get(value, value)) for value in persona.preferred_channels or []]
        persona.share = round(100 * persona.member_count / total, 1) if total else 0.0
    return personas, total, estimated


def persona_members(*, persona: Persona) -> QuerySet[Customer]:
    """The persona's customers. Erased customers have no persona (erasure clears it and
    assignment skips them), so this is a plain indexed filter."""
    return Customer.objects.filter(persona=persona)


def persona_member_sample(*, persona: Persona, size: int = 20) -> list[Customer]:
    """``size`` members, in no particular order: the first the persona index yields.

    Deliberately unordered: "newest first" over a big persona means sorting it or
    walking the primary key past everyone else (half a second at 1M customers
    without an index on (persona, id)); any 20 members make the sample.
    """
    return list(persona_members(persona=persona).order_by()[:size])


def _rate(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 1) if whole else None


def persona_channel_engagement(*, persona: Persona) -> list[dict[str, Any]]:
    """Per channel, for the persona's members: how many are reachable (opted in now) and how
    their messages did (sent, delivered, opened, clicked, bounced, with rates). Two queries.

    Message counts come from ``Message`` (one row per message, status only moves
    forward), so a message opened twice counts once and rates stay below 100%.
    """
    from channels.models import Message

    members = persona_members(persona=persona)
    reachable = members.aggregate(**{value: Count("pk", filter=consent_q(value)) for value in Channel.values})
    delivered_or_better = [Message.Status.DELIVERED, Message.Status.OPENED, Message.Status.CLICKED]
    outcomes = {
        row["channel"]: row
        for row in Message.objects.filter(customer__persona=persona)
        .order_by()
        .values("channel")
        .annotate(
            sent=Count("pk", filter=Q(sent_at__isnull=False)),
            delivered=Count("pk", filter=Q(status__in=delivered_or_better)),
            opened=Count("pk", filter=Q(status__in=[Message.Status.OPENED, Message.Status.CLICKED])),
            clicked=Count("pk", filter=Q(status=Message.Status.CLICKED)),
            bounced=Count("pk", filter=Q(status=Message.Status.BOUNCED)),
        )
    }
    rows = []
    for value, label in Channel.choices:
        counts = outcomes.get(value, {})
        sent, delivered = counts.get("sent", 0), counts.get("delivered", 0)
        opened, clicked = counts.get("opened", 0), counts.get("clicked", 0)
        rows.append(
            {
                "channel": value,
                "label": label,
                "preferred": value in (persona.preferred_channels or []),
                "tracks_opens": value == Channel.EMAIL,  # SMS, WhatsApp and social report no opens
                "reachable": reachable[value],
                "sent": sent,
                "delivered": delivered,
                "opened": opened,
                "clicked": clicked,
                "bounced": counts.get("bounced", 0),
                "delivery_rate": _rate(delivered, sent),
                "open_rate": _rate(opened, delivered),
                "click_rate": _rate(clicked, delivered),
            }
        )
    return rows
