from __future__ import annotations

import re

from django.db import models
from django.db.models import OuterRef, Q, Subquery
from django.db.models.functions import Reverse
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


_PHONE_LIKE = re.compile(r"^\+?[\d\s().-]+$")


class CustomerQuerySet(models.QuerySet):
    def live(self) -> CustomerQuerySet:
        """Customers not erased (an erased row stays, anonymous, so reports keep their counts)."""
        return self.filter(erased_at__isnull=True)

    def consented(self, channel: str) -> CustomerQuerySet:
        return self.filter(consent_q(channel))

    def search(self, term: str) -> CustomerQuerySet:
        """Customers matching what a marketer types in the search box, by prefix.

        An email (or its start) when the term has an ``@``; a phone number's start
        (``+48 600``) or end (national digits, ``600 100 200``) when it looks like
        one; otherwise the start of the first or last name, of the email, or an exact
        external id. "anna now" matches first name Anna* and last name Now*.
        Prefix matching is what keeps search index-backed at 1M customers
        (see migration 0007's search indexes on PostgreSQL).
        """
        term = " ".join(term.split())
        if not term:
            return self
        if "@" in term:
            return self.filter(email__startswith=term.lower())
        digits = re.sub(r"\D", "", term)
        if len(digits) >= 4 and _PHONE_LIKE.match(term):
            if term.startswith("+"):
                return self.filter(phone__startswith=f"+{digits}")
            return self.annotate(_phone_reversed=Reverse("phone")).filter(_phone_reversed__startswith=digits[::-1])
        words = term.split(" ")
        match = (
            Q(first_name__istartswith=term)
            | Q(last_name__istartswith=term)
            | Q(email__startswith=term.lower())
            | Q(external_id=term)
        )
        if len(words) > 1:
            match |= Q(first_name__istartswith=words[0], last_name__istartswith=" ".join(words[1:]))
        return self.filter(match)
