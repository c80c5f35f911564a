"""The consent ledger: append-only rows, the latest per channel is the current state."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import NamedTuple

from django.db import transaction
from django.utils import timezone

from config.db import in_values, insert_many
from customers.models import Activity, Consent, Customer


def consent_current(*, customer: Customer, channel: str) -> str | None:
    latest = customer.consents.filter(channel=channel).order_by("-occurred_at", "-id").first()
    return latest.status if latest else None


class ConsentChange(NamedTuple):
    """One row for ``consents_record``: a customer's new consent ``status`` on ``channel``."""

    customer_id: int
    channel: str
    status: str
    source: str
    evidence: dict | None = None
    at: datetime | None = None


def consent_record(
    *,
    customer: Customer,
    channel: str,
    status: str,
    source: str,
    evidence: dict | None = None,
    at: datetime | None = None,
) -> bool:
    """Append a consent row; a change of state also lands on the timeline. Returns whether it changed."""
    return bool(consents_record(changes=[ConsentChange(customer.pk, channel, status, source, evidence, at)]))


@transaction.atomic
def consents_record(*, changes: Sequence[ConsentChange], new: Collection[int] = ()) -> set[int]:
    """Append many consent rows at once; returns the ids of the customers whose consent state changed.

    Leaves what appending them one at a time, in order, leaves (in a few
    statements: ``config.db.insert_many``): every row is
    kept (it is evidence) and each change of the current state adds one
    ``consent.changed`` activity. The customers are locked first (``FOR NO KEY
    UPDATE``, in id order), so two writers changing the same customer's consent
    take turns and a change is on the timeline once, not twice. A row without
    ``at`` takes effect now; one dated before the current state is kept but
    does not become current. Customers in ``new`` were created in this
    transaction: nobody else sees them and they have no consent yet, so they
    are neither locked nor looked up.
    """
    if not changes:
        return set()
    now = timezone.now()
    customer_ids = sorted({change.customer_id for change in changes}.difference(new))
    current: dict[tuple[int, str], tuple[datetime, str]] = {}
    if customer_ids:
        locked = Customer.objects.select_for_update(no_key=True).filter(pk__in=in_values(customer_ids))
        list(locked.order_by("pk").values_list("pk"))
        # The latest row per (customer, channel): rows arrive newest first, so the first one seen.
        for customer_id, channel, occurred_at, status in (
            Consent.objects.filter(customer_id__in=in_values(customer_ids), channel__in={c.channel for c in changes})
            .order_by("customer_id", "channel", "-occurred_at", "-id")
            .values_list("customer_id", "channel", "occurred_at", "status")
        ):
            current.setdefault((customer_id, channel), (occurred_at, status))
    changed: set[int] = set()
    ledger, timeline = [], []
    for change in changes:
        at = change.at or now
        pair = (change.customer_id, change.channel)
        previous = current[pair][1] if pair in current else None
        ledger.append(
            {
                "customer_id": change.customer_id,
                "channel": change.channel,
                "status": change.status,
                "source": change.source,
                "evidence": change.evidence or {},
                "occurred_at": at,
            }
        )
        if previous != change.status:
            changed.add(change.customer_id)
            timeline.append(
                {
                    "customer_id": change.customer_id,
                    "kind": Activity.Kind.CONSENT_CHANGED,
                    "channel": change.channel,
                    "occurred_at": at,
                    "properties": {"from": previous or "unknown", "to": change.status, "source": change.source},
                }
            )
        if pair not in current or at >= current[pair][0]:  # a later id wins a tie, as in consent_current
            current[pair] = (at, change.status)
    insert_many(Consent, ledger)
    insert_many(Activity, timeline)
    return changed
