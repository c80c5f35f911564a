"""Reads of segment audiences: every caller goes through one compiled query."""

from __future__ import annotations

from django.db.models import QuerySet

from customers.models import Customer
from segments.models import Segment
from segments.rules import compile_rules


def segment_customers(segment: Segment) -> QuerySet[Customer]:
    if segment.kind == Segment.Kind.STATIC:
        return Customer.objects.filter(pk__in=segment.members.values("customer_id"))
    return Customer.objects.filter(compile_rules(segment.rules))


def segment_count(segment: Segment) -> int:
    return segment_customers(segment).count()
