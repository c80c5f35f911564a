"""Personas: saving their definitions and assigning customers to them.

A customer's persona is the highest-priority persona whose rule tree matches.
Assignment is one UPDATE over the customers in scope, whatever their number:
``persona = CASE WHEN <rules of the top persona> THEN ... ELSE NULL END``, each
``WHEN`` being the compiled rule tree (the same compiler as segments).

Who calls what:

* a persona is created, edited or deleted (UI, API): ``persona_create`` /
  ``persona_update`` / ``persona_delete`` validate, save and recompute every
  customer (inline while the audience is small, otherwise in a Celery task
  enqueued after commit, see ``personas_recompute_schedule``);
* a customer changes (API upsert, import, events, merge): the caller runs
  ``personas_assign(customer_ids=[...])`` for just those customers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import BigIntegerField, Case, Q, Value, When
from django.db.models.functions import Coalesce
from django.db.models.lookups import Exact
from django.utils import timezone
from django.utils.text import slugify

from customers.models import Channel, Customer, Persona

# Imported at module level, not lazily: every process that assigns personas (the
# worker too, through the webhook and event services) then knows the task by name.
from customers.tasks import personas_recompute

logger = logging.getLogger(__name__)

# The fields a marketer or integrator may set; everything else is managed here.
PERSONA_FIELDS = (
    "name",
    "slug",
    "description",
    "goals",
    "pain_points",
    "preferred_channels",
    "tone_of_voice",
    "rules",
    "priority",
)
# Up to this many customers the recompute runs inside the saving request (well
# under a second); above it a Celery task does it so the request returns at once.
INLINE_RECOMPUTE_MAX_CUSTOMERS = 20_000
# Slugs that are page addresses under /customers/personas/.
RESERVED_SLUGS = frozenset({"new", "check-rules"})


class Recompute(StrEnum):
    """What happened to the customers' personas after a persona changed."""

    DONE = "done"  # recomputed in the same transaction: counts are current
    QUEUED = "queued"  # a background task recomputes them after commit


def personas_assign(*, customer_ids: Iterable[int] | None = None, now: datetime | None = None) -> int:
    """Recompute the persona of the given customers (all customers when None).

    One UPDATE statement whatever the number of customers. Only rows whose persona
    actually changes are written, so recomputing a million customers after a small
    edit does not rewrite a million rows. Returns the number of customers whose
    persona changed. A persona whose stored rules no longer compile (say a segment
    it refers to was deleted) matches nobody until fixed; its page shows why.
    """
    from segments.rules import RuleError, compile_rules

    now = now or timezone.now()
    whens = []
    for persona in Persona.objects.order_by("-priority", "name").only("pk", "name", "rules"):
        try:
            whens.append(When(compile_rules(persona.rules, now=now), then=Value(persona.pk)))
        except RuleError as exc:
            logger.warning("Persona %r matches nobody: its rules do not compile (%s)", persona.name, exc)
    persona = Case(*whens, default=Value(None), output_field=BigIntegerField()) if whens else Value(None)

    customers = Customer.objects.live()
    if customer_ids is not None:
        customer_ids = list(customer_ids)
        if not customer_ids:
            return 0
        customers = customers.filter(pk__in=customer_ids)
    # NULL-safe "persona_id IS DISTINCT FROM <new persona>", with the CASE written once.
    unchanged = Exact(
        Coalesce("persona_id", Value(0), output_field=BigIntegerField()),
        Coalesce(persona, Value(0), output_field=BigIntegerField()),
    )
    with transaction.atomic():
        return customers.filter(~Q(unchanged)).update(persona_id=persona)


def personas_recompute_schedule() -> Recompute:
    """Recompute every customer's persona now (small audiences) or after commit in a task.

    Call inside the transaction that changed a persona: the inline recompute then
    commits or rolls back with it, and the task only runs once the change is visible.
    """
    many = Customer.objects.order_by().values("pk")[INLINE_RECOMPUTE_MAX_CUSTOMERS : INLINE_RECOMPUTE_MAX_CUSTOMERS + 1]
    if not many.exists():
        personas_assign()
        return Recompute.DONE
    transaction.on_commit(personas_recompute.delay)
    return Recompute.QUEUED


def _unique_slug(name: str, *, exclude_pk: int | None) -> str:
    base = slugify(name)[:90] or "persona"
    if base.isdigit():
        base = f"persona-{base}"
    taken = set(Persona.objects.exclude(pk=exclude_pk).filter(slug__startswith=base).values_list("slug", flat=True))
    taken |= RESERVED_SLUGS
    slug, n = base, 2
    while slug in taken:
        slug, n = f"{base}-{n}", n + 1
    return slug


def _clean_preferred_channels(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValidationError({"preferred_channels": f"Use a list of channels from {', '.join(Channel.values)}."})
    unknown = sorted(set(value) - set(Channel.values))
    if unknown:
        raise ValidationError(
            {
                "preferred_channels": f"Unknown channel(s) {', '.join(unknown)}; "
                f"use channels from {', '.join(Channel.values)}."
            }
        )
    return list(dict.fromkeys(value))  # de-duplicated, in the marketer's order


def _validate_rules(rules: Any) -> None:
    from segments.rules import RuleError, validate

    try:
        validate(rules, for_persona=True)
    except RuleError as exc:
        raise ValidationError({"rules": f"{exc.path}: {exc.reason}"}) from None


@transaction.atomic
def persona_save(*, persona: Persona, data: Mapping[str, Any]) -> tuple[Persona, Recompute]:
    """Validate ``data`` onto ``persona`` (new or existing), save it and recompute personas.

    ``data`` holds any of ``PERSONA_FIELDS``; absent keys keep their value. The slug
    is derived from the name when not given (and kept when the name changes, since
    segment rules refer to personas by slug). Raises ``ValidationError`` naming the
    field, and for rules the offending node's path, before anything is written.
    """
    unknown = sorted(set(data) - set(PERSONA_FIELDS))
    if unknown:
        raise ValidationError({"non_field_errors": f"Unknown field(s): {', '.join(unknown)}."})
    for field, value in data.items():
        setattr(persona, field, value)
    persona.name = (persona.name or "").strip()
    persona.preferred_channels = _clean_preferred_channels(persona.preferred_channels)
    if persona.rules in (None, "", {}):
        raise ValidationError({"rules": "A persona needs rules: who belongs to it?"})
    _validate_rules(persona.rules)
    persona.slug = (persona.slug or "").strip()
    if not persona.slug and persona.name:
        persona.slug = _unique_slug(persona.name, exclude_pk=persona.pk)
    elif persona.slug in RESERVED_SLUGS or persona.slug.isdigit():
        # Digits-only would read as an id in /api/v1/personas/<id or slug>/.
        raise ValidationError({"slug": f"“{persona.slug}” cannot be a slug: pick another one."})
    # Field types, lengths, uniqueness of name and slug (the rules are checked again, harmlessly).
    persona.full_clean()
    persona.save()
    return persona, personas_recompute_schedule()


def persona_create(*, data: Mapping[str, Any]) -> tuple[Persona, Recompute]:
    """Create a persona from ``data`` (see ``persona_save``)."""
    return persona_save(persona=Persona(), data=data)


def persona_update(*, persona: Persona, data: Mapping[str, Any]) -> tuple[Persona, Recompute]:
    """Change some fields of ``persona`` (see ``persona_save``)."""
    return persona_save(persona=persona, data=data)


@transaction.atomic
def persona_delete(*, persona: Persona) -> Recompute:
    """Delete ``persona``; its members fall to their next matching persona (or none)."""
    persona.delete()  # customers.persona is SET_NULL in the same statement batch
    return personas_recompute_schedule()
