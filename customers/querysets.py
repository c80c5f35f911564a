from __future__ import annotations

from django.db import models
from django.db.models import OuterRef, Q, Subquery
from django.db.models.lookups import Exact, IsNull


def consent_status_subquery(channel: str) -> Subquery:
    """The customer's latest consent status on ``channel`` (NULL if never asked)."""
    from customers.models import Consent

    latest = Consent.objects.filter(customer=OuterRef("pk"), channel=channel).order_by("-occurred_at", "-id")
    return Subquery(latest.values("status")[:1])


def consent_q(channel: str, status: str = "opted_in") -> Q:
    """Customers whose current consent on ``channel`` is ``status`` ("unknown": never asked)."""
    if status == "unknown":
        return Q(IsNull(consent_status_subquery(channel), True))
    return Q(Exact(consent_status_subquery(channel), status))


class CustomerQuerySet(models.QuerySet):
    def consented(self, channel: str) -> CustomerQuerySet:
        return self.filter(consent_q(channel))

    def search(self, term: str) -> CustomerQuerySet:
        term = term.strip()
        if not term:
            return self
        return self.filter(
            Q(email__icontains=term)
            | Q(phone__contains=term)
            | Q(first_name__icontains=term)
            | Q(last_name__icontains=term)
            | Q(external_id=term)
        )
