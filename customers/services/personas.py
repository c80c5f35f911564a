"""Assigning customers to personas.

A customer's persona is the highest-priority persona whose rule tree matches.
Assignment is one UPDATE over the customers in scope, whatever their number:
``persona = CASE WHEN <rules of the top persona> THEN ... ELSE NULL END``, each
``WHEN`` being the compiled rule tree (the same compiler as segments).
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.db.models import BigIntegerField, Case, Value, When

from customers.models import Customer, Persona


def personas_assign(*, customer_ids: Iterable[int] | None = None) -> int:
    """Recompute the persona of the given customers (all customers when None); returns rows updated."""
    from segments.rules import compile_rules

    personas = list(Persona.objects.order_by("-priority", "name"))
    persona = Case(
        *[When(compile_rules(p.rules), then=Value(p.pk)) for p in personas],
        default=Value(None),
        output_field=BigIntegerField(),
    )
    customers = Customer.objects.filter(erased_at__isnull=True)
    if customer_ids is not None:
        customer_ids = list(customer_ids)
        if not customer_ids:
            return 0
        customers = customers.filter(pk__in=customer_ids)
    with transaction.atomic():
        return customers.update(persona_id=persona)
