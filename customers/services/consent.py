"""The consent ledger: append-only rows, the latest per channel is the current state."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from customers.models import Activity, Consent, Customer


def consent_current(*, customer: Customer, channel: str) -> str | None:
    latest = customer.consents.filter(channel=channel).order_by("-occurred_at", "-id").first()
    return latest.status if latest else None


@transaction.atomic
def consent_record(
    *,
    customer: Customer,
    channel: str,
    status: str,
    source: str,
    evidence: dict | None = None,
    at: datetime | None = None,
) -> Consent:
    """Append a consent row; a change of state also lands on the timeline."""
    at = at or timezone.now()
    previous = consent_current(customer=customer, channel=channel)
    consent = Consent.objects.create(
        customer=customer, channel=channel, status=status, source=source, evidence=evidence or {}, occurred_at=at
    )
    if previous != status:
        Activity.objects.create(
            customer=customer,
            kind=Activity.Kind.CONSENT_CHANGED,
            channel=channel,
            occurred_at=at,
            properties={"from": previous or "unknown", "to": status, "source": source},
        )
    return consent
