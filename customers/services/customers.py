"""Creating and updating customer records."""

from __future__ import annotations

from django.db import transaction

from customers.models import Consent, Customer
from customers.services.consent import consent_record


@transaction.atomic
def customer_create(
    *, data: dict, consents: dict[str, str] | None = None, source: str = Consent.Source.API
) -> Customer:
    """Create a validated customer, with optional initial consents per channel."""
    customer = Customer(**data)
    customer.full_clean()
    customer.save()
    for channel, status in (consents or {}).items():
        consent_record(customer=customer, channel=channel, status=status, source=source)
    return customer
