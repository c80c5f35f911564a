"""A plain-Python evaluator of the segment rule language, independent of the SQL compiler.

It restates the semantics documented in ``segments/rules.py`` the obvious way, over
loaded objects, and shares no code with the compiler: the property test checks that the
compiled SQL selects exactly the customers this evaluator accepts.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.utils import timezone

from customers.models import Activity, Consent, Customer, Persona
from segments.models import Segment, SegmentMember

TEXT_FIELDS = {
    "email",
    "phone",
    "external_id",
    "mastodon_handle",
    "bluesky_handle",
    "first_name",
    "last_name",
    "locale",
    "timezone",
    "country",
    "city",
}
NUMBER_FIELDS = {"lifetime_value", "orders_count"}
DATETIME_FIELDS = {
    "created_at",
    "last_purchase_at",
    "last_engaged_email_at",
    "last_engaged_sms_at",
    "last_engaged_whatsapp_at",
    "last_engaged_social_at",
}
_DATE_SHAPED = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}([T ].*)?", re.DOTALL)
_CMP = {
    "eq": lambda a, b: a == b,
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
}


@dataclass
class World:
    """Everything a rule can look at besides the customer row, loaded once."""

    now: datetime
    personas: dict[str, int] = field(default_factory=dict)
    segments: dict[int, Segment] = field(default_factory=dict)
    members: dict[int, set[int]] = field(default_factory=lambda: defaultdict(set))
    activities: dict[int, list[Activity]] = field(default_factory=lambda: defaultdict(list))
    consents: dict[int, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))

    @classmethod
    def load(cls, *, now: datetime, customer_ids: list[int]) -> World:
        world = cls(now=now)
        world.personas = dict(Persona.objects.values_list("slug", "pk"))
        world.segments = {s.pk: s for s in Segment.objects.all()}
        for segment_id, customer_id in SegmentMember.objects.values_list("segment_id", "customer_id"):
            world.members[segment_id].add(customer_id)
        for activity in Activity.objects.filter(customer_id__in=customer_ids):
            world.activities[activity.customer_id].append(activity)
        latest: dict[tuple[int, str], tuple[datetime, int, str]] = {}
        for consent in Consent.objects.filter(customer_id__in=customer_ids):
            key = (consent.customer_id, consent.channel)
            candidate = (consent.occurred_at, consent.pk, consent.status)
            if key not in latest or candidate[:2] > latest[key][:2]:
                latest[key] = candidate
        for (customer_id, channel), (_, _, status) in latest.items():
            world.consents[customer_id][channel] = status
        return world


def evaluate(node: dict, customer: Customer, world: World) -> bool:
    """Does ``customer`` match ``node``?"""
    if "all" in node:
        return all(evaluate(child, customer, world) for child in node["all"])
    if "any" in node:
        return any(evaluate(child, customer, world) for child in node["any"])
    if "not" in node:
        return not evaluate(node["not"], customer, world)
    if "consent" in node:
        return world.consents[customer.pk].get(node["consent"], "unknown") == node["value"]
    if "persona" in node:
        return customer.persona_id is not None and customer.persona_id == world.personas[node["persona"]]
    if "segment" in node:
        segment = world.segments[node["segment"]]
        if segment.kind == "static":
            return customer.pk in world.members[segment.pk]
        return evaluate(segment.rules, customer, world)
    if "activity" in node:
        return _activity(node, customer, world)
    if "field" in node:
        return _field(node["field"], node["op"], node.get("value"), customer, world.now)
    return _attribute(node["attribute"], node["op"], node.get("value"), customer, world.now)


def _activity(node: dict, customer: Customer, world: World) -> bool:
    count = 0
    for activity in world.activities[customer.pk]:
        if activity.kind != node["activity"]:
            continue
        if node.get("channel") is not None and activity.channel != node["channel"]:
            continue
        if node.get("campaign") is not None and activity.campaign_id != node["campaign"]:
            continue
        days = node.get("within_days")
        if days is not None and not (world.now - timedelta(days=days) <= activity.occurred_at <= world.now):
            continue
        count += 1
    performed = count >= (node.get("min_count") or 1)
    return performed == node.get("performed", True)


def _field(name: str, op: str, value: Any, customer: Customer, now: datetime) -> bool:
    current = getattr(customer, name)
    missing = current is None or (name in TEXT_FIELDS and current == "")
    if op == "is_set":
        return not missing
    if op == "is_not_set":
        return missing
    if op == "neq":
        return not _field(name, "eq", value, customer, now)
    if op == "not_in":
        return not _field(name, "in", value, customer, now)
    if missing:
        return False
    if name in DATETIME_FIELDS:
        return _datetime(current, op, value, now)
    if name in NUMBER_FIELDS:
        current = Decimal(current)

        def convert(v):
            return Decimal(str(v))
    else:

        def convert(v):
            return v

    if op == "in":
        return any(current == convert(v) for v in value)
    if op == "contains":
        return value.lower() in current.lower()
    if op == "starts_with":
        return current.lower().startswith(value.lower())
    if op == "between":
        return convert(value[0]) <= current <= convert(value[1])
    return _CMP[op](current, convert(value))


def _datetime(current: datetime, op: str, value: Any, now: datetime) -> bool:
    if op == "within_last_days":
        return now - timedelta(days=value) <= current <= now
    if op == "before_last_days":
        return current < now - timedelta(days=value)
    if op == "between":
        return _datetime(current, "gte", value[0], now) and _datetime(current, "lte", value[1], now)
    if len(value) == 10:
        # A date stands for that whole day in the current time zone.
        return _CMP[op](timezone.localtime(current).date(), date.fromisoformat(value))
    moment = datetime.fromisoformat(value)
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return _CMP[op](current, moment)


def _is_iso_value(value: Any) -> bool:
    if not isinstance(value, str) or not re.match(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        return False
    try:
        if len(value) == 10:
            date.fromisoformat(value)
            return True
        if value[10] in "T ":
            datetime.fromisoformat(value)
            return True
    except ValueError:
        return False
    return False


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _attribute(key: str, op: str, value: Any, customer: Customer, now: datetime) -> bool:
    attributes = customer.attributes if isinstance(customer.attributes, dict) else {}
    present = attributes.get(key) is not None
    if op == "is_set":
        return present
    if op == "is_not_set":
        return not present
    if op == "neq":
        return not _attribute(key, "eq", value, customer, now)
    if op == "not_in":
        return not _attribute(key, "in", value, customer, now)
    if not present:
        return False
    current = attributes[key]
    is_date = isinstance(current, str) and _DATE_SHAPED.fullmatch(current) is not None
    if op == "in":
        return any(_attribute(key, "eq", v, customer, now) for v in value)
    if op == "contains":
        return isinstance(current, str) and value.lower() in current.lower()
    if op == "starts_with":
        return isinstance(current, str) and current.lower().startswith(value.lower())
    if op == "between":
        return _attribute(key, "gte", value[0], customer, now) and _attribute(key, "lte", value[1], customer, now)
    if op in ("within_last_days", "before_last_days"):
        if not is_date:
            return False
        since = timezone.localtime(now - timedelta(days=value)).date().isoformat()
        if op == "before_last_days":
            return current[:10] < since
        return since <= current[:10] <= timezone.localtime(now).date().isoformat()
    compare = _CMP[op]
    if isinstance(value, bool):
        return isinstance(current, bool) and compare(current, value)
    if _is_number(value):
        return _is_number(current) and compare(current, value)
    if _is_iso_value(value):
        return is_date and compare(current[:10], value[:10])
    return isinstance(current, str) and compare(current, value)
