"""Property: for random rule trees and random customers, the compiled SQL selects exactly
the customers the plain-Python evaluator (tests/rules_oracle.py) accepts, and explain()
marks every node as the evaluator does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from customers.models import Activity, Consent, Customer, Persona
from segments.models import Segment, SegmentMember
from segments.rules import compile_rules, explain
from tests.factories import CampaignFactory, SegmentFactory
from tests.rules_oracle import World, evaluate

pytestmark = pytest.mark.django_db

NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)
CHANNELS = ["email", "sms", "whatsapp", "social"]
KINDS = ["purchase", "message.clicked", "message.opened"]
PERSONAS = ["bargain-hunter", "loyal"]
ATTRIBUTE_KEYS = ["tier", "score", "vip", "since", "note"]
TEXTS = ["", "Ana", "ana", "Bo", "PL", "pl", "DE", "Krakow", "krak", "K%_x", "%", "_", "北京", "M", "gold", "Gold"]
ATTRIBUTE_TEXTS = [
    "gold",
    "Gold",
    "silver",
    "10",
    "",
    "2025-06-01",
    "2025-06-15",
    "2025-05-16",
    "2025-06-14T23:30:00Z",
    "2024-01-31 08:00",
    "2025-13-40",
    "abc-2025",
]
NUMBERS = [0, 1, 2, 3, 5, 10, 2.5, 10.0, 10.25, 99.99, -1]


DAYS = [1, 2, 7, 30, 31, 365]
# Offsets from NOW in whole hours, biased to the edges rules care about: exactly N days ago
# (and an hour either side), now, and midnights (NOW is noon).
hours = st.one_of(
    st.sampled_from(sorted({-24 * d + e for d in DAYS for e in (-1, 0, 1)} | {-13, -12, -11, 0, 1, 11, 12, 13})),
    st.integers(-24 * 400, 24 * 5),
)


@st.composite
def moments(draw, *, nullable: bool = False):
    if nullable and draw(st.booleans()):
        return None
    return NOW + timedelta(hours=draw(hours))


iso_values = st.one_of(
    hours.map(lambda h: (NOW + timedelta(hours=h)).date().isoformat()),
    hours.map(lambda h: (NOW + timedelta(hours=h)).isoformat()),
    hours.map(lambda h: (NOW + timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%S")),
)
attribute_values = st.one_of(
    st.booleans(), st.sampled_from(NUMBERS), st.sampled_from(ATTRIBUTE_TEXTS), iso_values.map(lambda s: s[:10])
)
stored_attribute_values = st.one_of(
    st.none(),
    attribute_values,
    st.just(["gold"]),
    st.just({"a": 1}),
    iso_values.map(lambda s: s.replace("+00:00", "Z")),
)
days = st.sampled_from(DAYS)


def _sorted_pair(values):
    return st.lists(values, min_size=2, max_size=2).map(sorted)


def _condition(name_key: str, name: str, type_: str):
    """A valid condition on a field or attribute, with an operator fitting its type."""
    if type_ == "text":
        scalar = st.sampled_from(TEXTS)
        ops = {
            "eq": scalar,
            "neq": scalar,
            "in": st.lists(scalar, min_size=1, max_size=3),
            "not_in": st.lists(scalar, min_size=1, max_size=3),
            "contains": scalar,
            "starts_with": scalar,
            "gt": scalar,
            "lte": scalar,
            "between": _sorted_pair(scalar),
        }
    elif type_ == "number":
        scalar = st.sampled_from([*NUMBERS, 10.005, 12.34])
        ops = {
            "eq": scalar,
            "neq": scalar,
            "in": st.lists(scalar, min_size=1, max_size=3),
            "not_in": st.lists(scalar, min_size=1, max_size=3),
            "gt": scalar,
            "gte": scalar,
            "lt": scalar,
            "lte": scalar,
            "between": _sorted_pair(scalar),
        }
    elif type_ == "datetime":
        ops = {
            "eq": iso_values,
            "neq": iso_values,
            "gt": iso_values,
            "gte": iso_values,
            "lt": iso_values,
            "lte": iso_values,
            "between": st.lists(iso_values, min_size=2, max_size=2).map(lambda p: sorted(p, key=lambda s: s[:19])),
            "within_last_days": days,
            "before_last_days": days,
        }
    else:
        ordered = st.one_of(
            st.sampled_from(NUMBERS), st.sampled_from(ATTRIBUTE_TEXTS), iso_values.map(lambda s: s[:10]), iso_values
        )
        ops = {
            "eq": attribute_values,
            "neq": attribute_values,
            "in": st.lists(attribute_values, min_size=1, max_size=3),
            "not_in": st.lists(attribute_values, min_size=1, max_size=3),
            "contains": st.sampled_from(ATTRIBUTE_TEXTS),
            "starts_with": st.sampled_from(ATTRIBUTE_TEXTS),
            "gt": ordered,
            "gte": ordered,
            "lt": ordered,
            "lte": ordered,
            "between": st.one_of(
                _sorted_pair(st.sampled_from(NUMBERS)),
                _sorted_pair(st.sampled_from(["gold", "silver", "10", "abc"])),
                _sorted_pair(iso_values.map(lambda s: s[:10])),
            ),
            "within_last_days": days,
            "before_last_days": days,
        }
    presence = st.sampled_from(["is_set", "is_not_set"]).map(lambda op: {name_key: name, "op": op})
    valued = st.sampled_from(sorted(ops)).flatmap(
        lambda op: ops[op].map(lambda value: {name_key: name, "op": op, "value": value})
    )
    return st.one_of(presence, valued)


FIELD_TYPES = {
    "email": "text",
    "external_id": "text",
    "first_name": "text",
    "country": "text",
    "city": "text",
    "lifetime_value": "number",
    "orders_count": "number",
    "created_at": "datetime",
    "last_purchase_at": "datetime",
    "last_engaged_email_at": "datetime",
}
field_conditions = st.one_of(*[_condition("field", name, type_) for name, type_ in FIELD_TYPES.items()])
attribute_conditions = st.sampled_from(ATTRIBUTE_KEYS).flatmap(lambda key: _condition("attribute", key, "attribute"))
consent_conditions = st.builds(
    lambda channel, value: {"consent": channel, "op": "eq", "value": value},
    st.sampled_from(CHANNELS[:2]),
    st.sampled_from(["opted_in", "opted_out", "unknown"]),
)
persona_conditions = st.sampled_from(PERSONAS).map(lambda slug: {"persona": slug})


@st.composite
def activity_conditions(draw, campaign_ids):
    node = {"activity": draw(st.sampled_from(KINDS))}
    if draw(st.booleans()):
        node["channel"] = draw(st.sampled_from(CHANNELS[:2]))
    if draw(st.booleans()):
        node["campaign"] = draw(st.sampled_from(campaign_ids))
    if draw(st.booleans()):
        node["min_count"] = draw(st.integers(1, 3))
    if draw(st.booleans()):
        node["within_days"] = draw(days)
    if draw(st.booleans()):
        node["performed"] = draw(st.booleans())
    return node


def rule_trees(campaign_ids: list[int], segment_ids: list[int]):
    leaves = st.one_of(
        field_conditions,
        attribute_conditions,
        attribute_conditions,
        consent_conditions,
        persona_conditions,
        activity_conditions(campaign_ids),
        st.sampled_from(segment_ids).map(lambda pk: {"segment": pk}),
    )

    def grow(depth: int):
        if depth == 0:
            return leaves
        inner = grow(depth - 1)
        return st.one_of(
            leaves,
            st.lists(inner, min_size=1, max_size=3).map(lambda xs: {"all": xs}),
            st.lists(inner, min_size=1, max_size=3).map(lambda xs: {"any": xs}),
            inner.map(lambda x: {"not": x}),
        )

    return grow(3)


@st.composite
def customers_data(draw, campaign_ids):
    """A few customers with missing values, typed attributes, consents and activities."""
    people = []
    for i in range(draw(st.integers(1, 5))):
        people.append(
            {
                "email": draw(st.sampled_from([None, f"ana{i}@example.com", f"Bo{i}@shop.pl"])),
                "external_id": draw(st.sampled_from([None, f"ext-{i}", f"K%_x{i}"])),
                "first_name": draw(st.sampled_from(["", "Ana", "ana", "Bo"])),
                "country": draw(st.sampled_from(["", "PL", "DE", "pl"])),
                "city": draw(st.sampled_from(["", "Krakow", "krakow", "Berlin", "北京", "K%_x"])),
                "lifetime_value": Decimal(draw(st.sampled_from([0, 250, 1000, 1001, 1234, 9999]))) / 100,
                "orders_count": draw(st.integers(0, 4)),
                "created_at": draw(moments()),
                "last_purchase_at": draw(moments(nullable=True)),
                "last_engaged_email_at": draw(moments(nullable=True)),
                "attributes": draw(
                    st.dictionaries(st.sampled_from(ATTRIBUTE_KEYS), stored_attribute_values, max_size=4)
                ),
                "persona": draw(st.sampled_from([None, *PERSONAS])),
                "static_member": draw(st.booleans()),
                "consents": draw(
                    st.lists(
                        st.tuples(
                            st.sampled_from(CHANNELS[:2]),
                            st.sampled_from(["opted_in", "opted_out"]),
                            st.integers(-48, 0),
                        ),
                        max_size=4,
                    )
                ),
                "activities": draw(
                    st.lists(
                        st.tuples(
                            st.sampled_from(KINDS),
                            st.sampled_from(["", *CHANNELS[:2]]),
                            st.sampled_from([None, *campaign_ids]),
                            moments(),
                        ),
                        max_size=6,
                    )
                ),
            }
        )
    return people


@pytest.fixture
def world_fixture(db):
    personas = {
        slug: Persona.objects.create(name=slug, slug=slug, rules={"field": "country", "op": "eq", "value": "PL"})
        for slug in PERSONAS
    }
    campaigns = [CampaignFactory().pk, CampaignFactory().pk]
    static = SegmentFactory(name="Static list", kind=Segment.Kind.STATIC, rules={})
    dynamic = SegmentFactory(
        name="Big spenders or gold",
        rules={
            "any": [
                {"field": "lifetime_value", "op": "gte", "value": 10},
                {"attribute": "tier", "op": "eq", "value": "gold"},
            ]
        },
    )
    return {"personas": personas, "campaigns": campaigns, "static": static, "segments": [static.pk, dynamic.pk]}


def _create(people, fixture) -> list[Customer]:
    personas = fixture["personas"]
    customers = Customer.objects.bulk_create(
        [
            Customer(
                **{k: v for k, v in person.items() if k not in ("persona", "static_member", "consents", "activities")},
                persona=personas[person["persona"]] if person["persona"] else None,
            )
            for person in people
        ]
    )
    consents, activities, members = [], [], []
    for customer, person in zip(customers, people, strict=True):
        for channel, status, hours in person["consents"]:
            consents.append(
                Consent(
                    customer=customer,
                    channel=channel,
                    status=status,
                    source=Consent.Source.API,
                    occurred_at=NOW + timedelta(hours=hours),
                )
            )
        for kind, channel, campaign_id, at in person["activities"]:
            activities.append(
                Activity(customer=customer, kind=kind, channel=channel, campaign_id=campaign_id, occurred_at=at)
            )
        if person["static_member"]:
            members.append(SegmentMember(segment=fixture["static"], customer=customer))
    Consent.objects.bulk_create(consents)
    Activity.objects.bulk_create(activities)
    SegmentMember.objects.bulk_create(members)
    return list(Customer.objects.filter(pk__in=[c.pk for c in customers]))


def _nodes(tree: dict) -> list[dict]:
    found = [tree]
    for group in ("all", "any"):
        for child in tree.get(group, ()):
            found.extend(_nodes(child))
    if "not" in tree:
        found.extend(_nodes(tree["not"]))
    return found


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_compiled_rules_select_exactly_what_the_python_evaluator_accepts(world_fixture, data):
    tree = data.draw(rule_trees(world_fixture["campaigns"], world_fixture["segments"]), label="tree")
    people = data.draw(customers_data(world_fixture["campaigns"]), label="customers")
    # Each example's rows live in a savepoint rolled back at its end; the fixture's rows stay.
    with transaction.atomic():
        customers = _create(people, world_fixture)
        ids = [c.pk for c in customers]
        world = World.load(now=NOW, customer_ids=ids)

        selected = set(
            Customer.objects.filter(pk__in=ids).filter(compile_rules(tree, now=NOW)).values_list("pk", flat=True)
        )
        expected = {c.pk for c in customers if evaluate(tree, c, world)}
        assert selected == expected

        explained = explain(tree, customers[0], now=NOW)
        assert [n["matched"] for n in _nodes(explained)] == [evaluate(n, customers[0], world) for n in _nodes(tree)]
        transaction.set_rollback(True)
