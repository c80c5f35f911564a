"""Reads of segment audiences: every caller goes through one compiled query.

Erased customers are in no audience: these selectors exclude them, the compiled rules do not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import BooleanField, Exists, ExpressionWrapper, OuterRef, Q, QuerySet

from customers.models import Customer
from segments.models import Segment, SegmentMember
from segments.rules import compile_rules, compile_segment_rules, explain


def rules_customers(tree: Any, *, now: datetime | None = None) -> QuerySet[Customer]:
    """Customers an unsaved rule tree selects (API preview, UI builder); raises RuleError if invalid."""
    return Customer.objects.live().filter(compile_rules(tree, now=now))


def rules_count(tree: Any, *, now: datetime | None = None) -> int:
    """How many customers an unsaved rule tree selects, in one COUNT query."""
    return rules_customers(tree, now=now).count()


def segment_customers(segment: Segment, *, now: datetime | None = None) -> QuerySet[Customer]:
    """The segment's audience: its member rows (static) or its rules (dynamic; RuleError if invalid)."""
    if segment.kind == Segment.Kind.STATIC:
        return Customer.objects.live().filter(
            Exists(SegmentMember.objects.filter(segment_id=segment.pk, customer_id=OuterRef("pk")))
        )
    return rules_customers(segment.rules, now=now)


def segment_count(segment: Segment, *, now: datetime | None = None) -> int:
    return segment_customers(segment, now=now).count()


@dataclass(frozen=True)
class Explanation:
    """Whether a customer is in a segment, and why."""

    matched: bool
    tree: dict | None = None  # dynamic: the rule tree with "matched" on every node
    member: SegmentMember | None = None  # static: the customer's row on the uploaded list
    erased: bool = False


def segment_explanation(*, segment: Segment, customer: Customer, now: datetime | None = None) -> Explanation:
    """Why ``customer`` is in or out of ``segment``, agreeing with :func:`segment_customers`.

    Static: the customer's member row. Dynamic: :func:`segments.rules.explain` of its rules
    (``RuleError`` if they no longer validate). An erased customer is in no segment, whatever
    its remaining rows would match, so there is nothing to explain.
    """
    if customer.erased_at is not None:
        return Explanation(matched=False, erased=True)
    if segment.kind == Segment.Kind.STATIC:
        member = SegmentMember.objects.filter(segment=segment, customer=customer).first()
        return Explanation(matched=member is not None, member=member)
    tree = explain(segment.rules, customer, now=now)
    return Explanation(matched=tree["matched"], tree=tree)


def customer_segments(
    customer: Customer, *, segments: list[Segment] | None = None, now: datetime | None = None
) -> list[Segment]:
    """The segments ``customer`` is in, by name; membership of all segments is one query on their row.

    ``segments`` are the candidates (default: every segment, by name) for a caller that has them loaded.
    Segments whose rules no longer validate are left out (their own page shows the error);
    an erased customer is in none.
    """
    if segments is None:
        segments = list(Segment.objects.order_by("name", "pk"))
    memberships = compile_segment_rules(segments, now=now)
    if not memberships:
        return []
    row = (
        Customer.objects.live()
        .filter(pk=customer.pk)
        .values(**{f"s{pk}": ExpressionWrapper(Q(q), BooleanField()) for pk, q in memberships.items()})
        .first()
    )
    if row is None:
        return []
    return [segment for segment in segments if row.get(f"s{segment.pk}")]
