"""Template helpers for the privacy actions on the customer page."""

from __future__ import annotations

from django import template

from customers.models import Customer, Erasure

register = template.Library()


@register.simple_tag
def erasure_for(customer: Customer) -> Erasure | None:
    """The audit record of ``customer``'s erasure (who and when), or None if not erased."""
    if customer.erased_at is None:
        return None
    return Erasure.objects.filter(customer_id=customer.pk).select_related("erased_by").first()
