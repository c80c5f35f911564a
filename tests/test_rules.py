"""The segment rule language: every node type and operator, missing values, typed attributes,
references and cycles, validation messages, "why in/out?" and the one-query contract."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from customers.models import Activity, Customer, Persona
from customers.services import consent_record
from segments.models import Segment, SegmentMember
from segments.rules import FIELDS, OPERATORS, RuleError, compile_rules, explain, operators_for, validate
from segments.selectors import customer_segments, rules_count, rules_customers, segment_count, segment_customers
from tests.factories import CampaignFactory, CustomerFactory, SegmentFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)


def members(tree, *, now=NOW) -> set[str]:
    """Who a tree selects, by last name (tests label customers with it)."""
    return set(Customer.objects.filter(compile_rules(tree, now=now)).values_list("last_name", flat=True))


def person(label: str, **kwargs) -> Customer:
    return CustomerFactory(last_name=label, **kwargs)


# --- fields -------------------------------------------------------------------------------------


@pytest.fixture
def towns():
    person("a", first_name="Ana", city="Krakow", country="PL")
    person("b", first_name="bo", city="krakow", country="pl")
    person("c", first_name="Cy", city="Berlin", country="DE")
    person("d", first_name="Di", city="北京", country="CN")
    person("e", first_name="Ed", city="K%_x", country="")


def test_text_eq_and_in_are_exact_while_contains_and_starts_with_ignore_case(towns):
    assert members({"field": "city", "op": "eq", "value": "Krakow"}) == {"a"}
    assert members({"field": "city", "op": "in", "value": ["krakow", "Berlin"]}) == {"b", "c"}
    assert members({"field": "city", "op": "contains", "value": "RAK"}) == {"a", "b"}
    assert members({"field": "city", "op": "starts_with", "value": "k"}) == {"a", "b", "e"}
    assert members({"field": "first_name", "op": "starts_with", "value": "B"}) == {"b"}


def test_like_wildcards_in_a_value_match_only_themselves(towns):
    assert members({"field": "city", "op": "contains", "value": "%"}) == {"e"}
    assert members({"field": "city", "op": "contains", "value": "_"}) == {"e"}
    assert members({"field": "city", "op": "starts_with", "value": "K%"}) == {"e"}


def test_text_ordering_is_by_code_point_on_every_backend(towns):
    # Code points: "B" < "K" < "k" < "北"; a locale collation would sort "krakow" next to "Krakow".
    assert members({"field": "city", "op": "gt", "value": "Krakow"}) == {"b", "d"}
    assert members({"field": "city", "op": "lte", "value": "K%_x"}) == {"c", "e"}
    assert members({"field": "city", "op": "between", "value": ["Berlin", "Krakow"]}) == {"a", "c", "e"}


def test_neq_and_not_in_are_exact_complements_of_eq_and_in(towns):
    everyone = {"a", "b", "c", "d", "e"}
    for op, negated, value in (("eq", "neq", "Krakow"), ("in", "not_in", ["Berlin", "北京"])):
        positive = members({"field": "city", "op": op, "value": value})
        assert members({"field": "city", "op": negated, "value": value}) == everyone - positive


def test_number_fields_compare_exactly_even_with_fractions():
    person("low", lifetime_value=Decimal("10.00"), orders_count=2)
    person("high", lifetime_value=Decimal("10.01"), orders_count=3)
    assert members({"field": "lifetime_value", "op": "gt", "value": 10.004}) == {"high"}
    assert members({"field": "lifetime_value", "op": "gte", "value": 10.001}) == {"high"}
    assert members({"field": "lifetime_value", "op": "eq", "value": 10}) == {"low"}
    # An integer column must not round 2.5 down to 2.
    assert members({"field": "orders_count", "op": "gte", "value": 2.5}) == {"high"}
    assert members({"field": "orders_count", "op": "in", "value": [2.5, 3]}) == {"high"}
    assert members({"field": "orders_count", "op": "between", "value": [1, 2]}) == {"low"}
    assert members({"field": "orders_count", "op": "not_in", "value": [3]}) == {"low"}


@pytest.fixture
def purchases():
    person("never", last_purchase_at=None)
    person("exactly_30d", last_purchase_at=NOW - timedelta(days=30))
    person("30d_1h", last_purchase_at=NOW - timedelta(days=30, hours=1))
    person("yesterday_late", last_purchase_at=datetime(2025, 6, 14, 23, 30, tzinfo=UTC))
    person("today", last_purchase_at=datetime(2025, 6, 15, 0, 0, tzinfo=UTC))
    person("future", last_purchase_at=NOW + timedelta(hours=1))


def test_within_last_days_includes_the_boundary_and_excludes_the_future(purchases):
    assert members({"field": "last_purchase_at", "op": "within_last_days", "value": 30}) == {
        "exactly_30d",
        "yesterday_late",
        "today",
    }


def test_before_last_days_means_strictly_more_than_n_days_ago(purchases):
    assert members({"field": "last_purchase_at", "op": "before_last_days", "value": 30}) == {"30d_1h"}


def test_a_date_value_stands_for_the_whole_day(purchases):
    day = "2025-06-14"
    assert members({"field": "last_purchase_at", "op": "eq", "value": day}) == {"yesterday_late"}
    assert members({"field": "last_purchase_at", "op": "gt", "value": day}) == {"today", "future"}
    assert members({"field": "last_purchase_at", "op": "lte", "value": day}) == {
        "exactly_30d",
        "30d_1h",
        "yesterday_late",
    }
    assert members({"field": "last_purchase_at", "op": "lt", "value": "2025-06-15"}) == {
        "exactly_30d",
        "30d_1h",
        "yesterday_late",
    }
    assert members({"field": "last_purchase_at", "op": "between", "value": ["2025-06-14", "2025-06-15"]}) == {
        "yesterday_late",
        "today",
        "future",
    }
    assert "never" in members({"field": "last_purchase_at", "op": "neq", "value": day})


def test_a_datetime_value_compares_exactly_and_takes_its_offset(purchases):
    assert members({"field": "last_purchase_at", "op": "eq", "value": "2025-06-15T02:00:00+02:00"}) == {"today"}
    assert members({"field": "last_purchase_at", "op": "gte", "value": "2025-06-15T00:00:00Z"}) == {"today", "future"}
    assert members({"field": "last_purchase_at", "op": "gt", "value": "2025-06-15T00:00:00"}) == {"future"}


def test_date_values_are_days_in_the_current_time_zone(purchases):
    # 23:30 UTC on the 14th is 01:30 on the 15th in Warsaw.
    with timezone.override("Europe/Warsaw"):
        assert members({"field": "last_purchase_at", "op": "eq", "value": "2025-06-15"}) == {
            "yesterday_late",
            "today",
            "future",
        }


# --- missing values -----------------------------------------------------------------------------

MISSING_CASES = [
    # (condition, matches a customer missing the value)
    ({"op": "eq", "value": "x"}, False),
    ({"op": "neq", "value": "x"}, True),
    ({"op": "in", "value": ["x", ""]}, False),
    ({"op": "not_in", "value": ["x"]}, True),
    ({"op": "contains", "value": ""}, False),
    ({"op": "starts_with", "value": ""}, False),
    ({"op": "gt", "value": ""}, False),
    ({"op": "lte", "value": "zzz"}, False),
    ({"op": "between", "value": ["", "zzz"]}, False),
    ({"op": "is_set"}, False),
    ({"op": "is_not_set"}, True),
]


@pytest.mark.parametrize(("condition", "matches"), MISSING_CASES)
@pytest.mark.parametrize(
    ("subject", "stored"),
    [
        ({"field": "email"}, {"email": None}),
        ({"field": "city"}, {"city": ""}),
        ({"attribute": "tier"}, {"attributes": {}}),
        ({"attribute": "tier"}, {"attributes": {"tier": None}}),
    ],
    ids=["null-field", "blank-field", "absent-attribute", "json-null-attribute"],
)
def test_a_missing_value_matches_only_neq_not_in_and_is_not_set(subject, stored, condition, matches):
    person("missing", **stored)
    assert ("missing" in members({**subject, **condition})) is matches
    assert ("missing" in members({"not": {**subject, **condition}})) is not matches


@pytest.mark.parametrize(
    ("condition", "matches"),
    [
        ({"op": "eq", "value": "2025-06-01"}, False),
        ({"op": "neq", "value": "2025-06-01"}, True),
        ({"op": "within_last_days", "value": 3650}, False),
        ({"op": "before_last_days", "value": 1}, False),
        ({"op": "is_not_set"}, True),
    ],
)
def test_a_missing_date_matches_only_negative_operators(condition, matches):
    person("missing", last_engaged_sms_at=None, attributes={})
    for subject in ({"field": "last_engaged_sms_at"}, {"attribute": "since"}):
        assert ("missing" in members({**subject, **condition})) is matches


# --- typed attributes ---------------------------------------------------------------------------


@pytest.fixture
def typed():
    person("num10", attributes={"score": 10, "vip": True, "since": "2025-06-01T10:00:00Z"})
    person("float10", attributes={"score": 10.0, "vip": False, "since": "2025-06-14"})
    person("str10", attributes={"score": "10", "vip": "true", "since": "June 1st"})
    person("int1", attributes={"score": 1, "vip": 1, "since": "2024-12-31 23:00"})
    person("list", attributes={"score": [10], "vip": {"a": True}, "since": ["2025-06-01"]})
    person("none", attributes={})


def test_number_values_compare_only_with_json_numbers(typed):
    assert members({"attribute": "score", "op": "eq", "value": 10}) == {"num10", "float10"}
    assert members({"attribute": "score", "op": "gt", "value": 2}) == {"num10", "float10"}
    assert members({"attribute": "score", "op": "between", "value": [0.5, 1.5]}) == {"int1"}
    assert members({"attribute": "score", "op": "in", "value": [1, 99]}) == {"int1"}


def test_string_values_compare_only_with_json_strings(typed):
    assert members({"attribute": "score", "op": "eq", "value": "10"}) == {"str10"}
    assert members({"attribute": "score", "op": "contains", "value": "1"}) == {"str10"}
    assert members({"attribute": "score", "op": "gte", "value": "1"}) == {"str10"}


def test_boolean_values_compare_only_with_json_booleans(typed):
    assert members({"attribute": "vip", "op": "eq", "value": True}) == {"num10"}
    assert members({"attribute": "vip", "op": "eq", "value": False}) == {"float10"}
    assert members({"attribute": "vip", "op": "in", "value": [True, "true"]}) == {"num10", "str10"}


def test_a_different_json_type_is_present_but_not_equal(typed):
    assert members({"attribute": "score", "op": "neq", "value": 10}) == {"str10", "int1", "list", "none"}
    assert members({"attribute": "score", "op": "not_in", "value": [10, "10"]}) == {"int1", "list", "none"}
    assert members({"attribute": "score", "op": "is_set"}) == {"num10", "float10", "str10", "int1", "list"}
    assert members({"attribute": "score", "op": "lt", "value": 100}) == {"num10", "float10", "int1"}


def test_iso_date_values_compare_attribute_dates_by_day(typed):
    assert members({"attribute": "since", "op": "eq", "value": "2025-06-01"}) == {"num10"}
    assert members({"attribute": "since", "op": "eq", "value": "2025-06-01T23:59:00+02:00"}) == {"num10"}
    assert members({"attribute": "since", "op": "gt", "value": "2025-01-01"}) == {"num10", "float10"}
    assert members({"attribute": "since", "op": "lte", "value": "2025-06-01"}) == {"num10", "int1"}
    assert members({"attribute": "since", "op": "between", "value": ["2024-12-31", "2025-06-01"]}) == {
        "num10",
        "int1",
    }


def test_relative_days_on_date_attributes(typed):
    # NOW is 2025-06-15 noon: the 14th is within 1 day, the 1st within 14 days, 2024-12-31 long ago.
    assert members({"attribute": "since", "op": "within_last_days", "value": 1}) == {"float10"}
    assert members({"attribute": "since", "op": "within_last_days", "value": 14}) == {"num10", "float10"}
    assert members({"attribute": "since", "op": "before_last_days", "value": 14}) == {"int1"}


def test_attribute_keys_that_look_like_paths_or_indexes_are_plain_keys():
    person("odd", attributes={"0": "zero", "a.b": 2, "with space": True, "it's": "x"})
    person("nested", attributes={"a": {"b": 2}})
    assert members({"attribute": "0", "op": "eq", "value": "zero"}) == {"odd"}
    assert members({"attribute": "a.b", "op": "gte", "value": 2}) == {"odd"}
    assert members({"attribute": "with space", "op": "eq", "value": True}) == {"odd"}
    assert members({"attribute": "it's", "op": "starts_with", "value": "X"}) == {"odd"}


# --- consent, persona, activity -----------------------------------------------------------------


def test_consent_uses_the_latest_ledger_row_and_its_negation_is_exact():
    person("in", consents={"email": "opted_in"})
    flipped = person("flipped", consents={"email": "opted_in"})
    consent_record(customer=flipped, channel="email", status="opted_out", source="api")
    person("never")
    assert members({"consent": "email", "op": "eq", "value": "opted_in"}) == {"in"}
    assert members({"consent": "email", "op": "eq", "value": "opted_out"}) == {"flipped"}
    assert members({"consent": "email", "op": "eq", "value": "unknown"}) == {"never"}
    assert members({"not": {"consent": "email", "op": "eq", "value": "opted_in"}}) == {"flipped", "never"}


def test_persona_condition_and_its_negation_include_customers_without_a_persona():
    loyal = Persona.objects.create(name="Loyal", slug="loyal", rules={"field": "country", "op": "eq", "value": "PL"})
    other = Persona.objects.create(name="Other", slug="other", rules={"field": "country", "op": "eq", "value": "DE"})
    person("loyal", persona=loyal)
    person("other", persona=other)
    person("none", persona=None)
    assert members({"persona": "loyal"}) == {"loyal"}
    assert members({"not": {"persona": "loyal"}}) == {"other", "none"}


@pytest.fixture
def clicks():
    campaign = CampaignFactory()
    other_campaign = CampaignFactory()
    one = person("one")
    three = person("three")
    old = person("old")
    person("none")
    Activity.objects.create(customer=one, kind="message.clicked", channel="email", campaign=campaign, occurred_at=NOW)
    for hours in (1, 24, 24 * 7):
        Activity.objects.create(
            customer=three,
            kind="message.clicked",
            channel="sms",
            campaign=other_campaign,
            occurred_at=NOW - timedelta(hours=hours),
        )
    Activity.objects.create(customer=old, kind="message.clicked", channel="email", occurred_at=NOW - timedelta(days=30))
    Activity.objects.create(
        customer=old, kind="message.clicked", channel="email", occurred_at=NOW - timedelta(days=30, seconds=1)
    )
    return {"campaign": campaign, "other": other_campaign}


def test_activity_performed_at_least_once_ever(clicks):
    assert members({"activity": "message.clicked"}) == {"one", "three", "old"}
    assert members({"activity": "purchase"}) == set()


def test_activity_filters_by_channel_campaign_and_window(clicks):
    assert members({"activity": "message.clicked", "channel": "email"}) == {"one", "old"}
    assert members({"activity": "message.clicked", "campaign": clicks["campaign"].pk}) == {"one"}
    # The window [now - 30 days, now] includes its start: "old" has one click exactly then.
    assert members({"activity": "message.clicked", "within_days": 30, "min_count": 2}) == {"three"}
    assert members({"activity": "message.clicked", "within_days": 30, "channel": "email"}) == {"one", "old"}
    assert members({"activity": "message.clicked", "within_days": 2}) == {"one", "three"}


def test_activity_min_count_counts_only_matching_activities(clicks):
    assert members({"activity": "message.clicked", "min_count": 2}) == {"three", "old"}
    assert members({"activity": "message.clicked", "min_count": 3}) == {"three"}
    assert members({"activity": "message.clicked", "min_count": 3, "within_days": 2}) == set()
    assert members({"activity": "message.clicked", "min_count": 2, "channel": "email"}) == {"old"}


def test_activity_performed_false_is_the_complement(clicks):
    assert members({"activity": "message.clicked", "performed": False}) == {"none"}
    assert members({"activity": "message.clicked", "min_count": 3, "performed": False}) == {"one", "old", "none"}
    assert members({"activity": "message.clicked", "channel": "sms", "within_days": 7, "performed": False}) == {
        "one",
        "old",
        "none",
    }


def test_optional_activity_keys_may_be_null():
    person("a")
    tree = {"activity": "purchase", "channel": None, "campaign": None, "min_count": None, "within_days": None}
    validate(tree)
    assert members(tree) == set()


# --- segment references and cycles --------------------------------------------------------------


def test_segment_conditions_inline_dynamic_rules_and_use_static_members():
    pl = person("pl", country="PL")
    person("de", country="DE")
    listed = person("listed", country="DE")
    dynamic = SegmentFactory(rules={"field": "country", "op": "eq", "value": "PL"})
    static = SegmentFactory(kind=Segment.Kind.STATIC, rules={})
    SegmentMember.objects.create(segment=static, customer=listed)
    wrapper = SegmentFactory(rules={"any": [{"segment": dynamic.pk}, {"segment": static.pk}]})
    assert members({"segment": dynamic.pk}) == {"pl"}
    assert members({"segment": static.pk}) == {"listed"}
    assert members({"segment": wrapper.pk}) == {"pl", "listed"}
    assert members({"not": {"segment": wrapper.pk}}) == {"de"}
    assert pl.pk in set(segment_customers(wrapper).values_list("pk", flat=True))


def test_a_segment_referring_to_itself_is_a_cycle():
    segment = SegmentFactory()
    with pytest.raises(RuleError) as error:
        validate(
            {"all": [{"field": "country", "op": "eq", "value": "PL"}, {"segment": segment.pk}]}, segment_id=segment.pk
        )
    assert error.value.path == "all[1].segment"
    assert error.value.reason == f"segment cycle: {segment.pk} → {segment.pk}"


def test_a_cycle_through_other_segments_is_named_in_full():
    first = SegmentFactory()
    second = SegmentFactory(rules={"not": {"segment": first.pk}})
    with pytest.raises(RuleError) as error:
        validate({"any": [{"segment": second.pk}]}, segment_id=first.pk)
    assert error.value.path == "any[0].segment"
    assert error.value.reason == f"segment cycle: {first.pk} → {second.pk} → {first.pk}"
    first.rules = {"any": [{"segment": second.pk}]}
    with pytest.raises(ValidationError, match="segment cycle"):
        first.full_clean()


def test_a_cycle_among_referenced_segments_is_rejected_for_an_unsaved_tree():
    a = SegmentFactory()
    b = SegmentFactory(rules={"segment": a.pk})
    Segment.objects.filter(pk=a.pk).update(rules={"segment": b.pk})  # stored without validation
    with pytest.raises(RuleError) as error:
        validate({"segment": a.pk})
    assert error.value.reason == f"segment cycle: {a.pk} → {b.pk} → {a.pk}"


def test_a_diamond_of_references_is_not_a_cycle():
    base = SegmentFactory(rules={"field": "country", "op": "eq", "value": "PL"})
    left = SegmentFactory(rules={"segment": base.pk})
    right = SegmentFactory(rules={"not": {"segment": base.pk}})
    validate({"all": [{"segment": left.pk}, {"segment": right.pk}]})


def test_a_referenced_segment_with_broken_rules_is_reported_at_the_reference():
    broken = SegmentFactory()
    Segment.objects.filter(pk=broken.pk).update(rules={"field": "shoe_size", "op": "eq", "value": 1})
    with pytest.raises(RuleError) as error:
        validate({"all": [{"segment": broken.pk}]})
    assert error.value.path == "all[0].segment"
    assert f"segment {broken.pk} has invalid rules" in error.value.reason
    assert "unknown field" in error.value.reason


# --- validation ---------------------------------------------------------------------------------

COUNTRY = {"field": "country", "op": "eq", "value": "PL"}


@pytest.mark.parametrize(
    ("tree", "path", "reason"),
    [
        ([], "(root)", "JSON object"),
        ({}, "(root)", "JSON object"),
        ({"every": []}, "(root)", "expected one of"),
        ({"any": []}, "any", "empty group"),
        ({"all": [COUNTRY, {"any": [COUNTRY, {"all": []}]}]}, "all[1].any[1].all", "empty group"),
        ({"all": [COUNTRY], "any": [COUNTRY]}, "any", "unknown key"),
        ({"field": "country", "op": "eq", "value": "PL", "extra": 1}, "extra", "unknown key 'extra'"),
        ({"all": [{"field": "shoe_size", "op": "eq", "value": 1}]}, "all[0].field", "unknown field"),
        ({"not": {"field": "country", "op": "like", "value": "P"}}, "not.op", "unknown operator"),
        ({"field": "country", "op": "gt", "value": ["PL"]}, "value", "single value"),
        ({"field": "country", "op": "eq", "value": 5}, "value", "text field needs text"),
        ({"field": "orders_count", "op": "contains", "value": "1"}, "op", "'contains' does not apply"),
        ({"field": "orders_count", "op": "gt", "value": "5"}, "value", "needs numbers"),
        ({"field": "orders_count", "op": "gt", "value": True}, "value", "needs numbers"),
        ({"field": "country", "op": "within_last_days", "value": 3}, "op", "does not apply"),
        ({"field": "created_at", "op": "in", "value": ["2025-01-01"]}, "op", "does not apply"),
        ({"field": "created_at", "op": "gt", "value": "yesterday"}, "value", "ISO dates"),
        ({"field": "created_at", "op": "gt", "value": "2025-02-30"}, "value", "ISO dates"),
        ({"field": "created_at", "op": "within_last_days", "value": 0}, "value", "whole number of days"),
        ({"field": "created_at", "op": "within_last_days", "value": 2.5}, "value", "whole number of days"),
        ({"field": "created_at", "op": "before_last_days", "value": "7"}, "value", "whole number of days"),
        ({"field": "orders_count", "op": "between", "value": [1]}, "value", "[low, high]"),
        ({"field": "orders_count", "op": "between", "value": 1}, "value", "[low, high]"),
        ({"field": "orders_count", "op": "between", "value": [5, 1]}, "value", "low <= high"),
        ({"field": "country", "op": "in", "value": []}, "value", "non-empty list"),
        ({"any": [COUNTRY, {"field": "country", "op": "in", "value": "PL"}]}, "any[1].value", "list"),
        ({"field": "country", "op": "in", "value": ["PL", 1]}, "value[1]", "text values"),
        ({"attribute": "", "op": "eq", "value": 1}, "attribute", "non-empty attribute name"),
        ({"attribute": 'a"b', "op": "eq", "value": 1}, "attribute", "cannot contain"),
        ({"attribute": "vip", "op": "gt", "value": True}, "value", "cannot compare booleans"),
        ({"attribute": "tier", "op": "eq", "value": None}, "value", "text, number or boolean"),
        ({"attribute": "tier", "op": "eq", "value": {"a": 1}}, "value", "text, number or boolean"),
        ({"attribute": "tier", "op": "between", "value": [1, "9"]}, "value", "same type"),
        ({"attribute": "tier", "op": "contains", "value": 1}, "value", "text value"),
        ({"consent": "fax", "op": "eq", "value": "opted_in"}, "consent", "unknown channel"),
        ({"consent": "email", "op": "neq", "value": "opted_in"}, "op", "only support 'eq'"),
        ({"consent": "email", "op": "eq", "value": "yes"}, "value", "opted_in"),
        ({"persona": "nobody"}, "persona", "unknown persona 'nobody'"),
        ({"persona": ""}, "persona", "persona slug"),
        ({"all": [COUNTRY, {"segment": 987654}]}, "all[1].segment", "unknown segment id 987654"),
        ({"segment": "3"}, "segment", "segment id"),
        ({"activity": "Clicked!"}, "activity", "bad activity kind"),
        ({"activity": "x" * 65}, "activity", "bad activity kind"),
        ({"activity": "purchase", "channel": "fax"}, "channel", "unknown channel"),
        ({"activity": "purchase", "campaign": 987654}, "campaign", "unknown campaign id 987654"),
        ({"activity": "purchase", "min_count": 0}, "min_count", "at least 1"),
        ({"activity": "purchase", "within_days": 0}, "within_days", "within_days"),
        ({"activity": "purchase", "performed": "no"}, "performed", "true or false"),
        ({"activity": "purchase", "performed": None}, "performed", "true or false"),
        ({"activity": "purchase", "times": 2}, "times", "unknown key 'times'"),
    ],
)
def test_invalid_trees_are_rejected_naming_the_node_and_the_reason(tree, path, reason):
    with pytest.raises(RuleError) as error:
        validate(tree)
    assert error.value.path == path
    assert reason in error.value.reason
    assert str(error.value).startswith(f"{path}: ")


@pytest.mark.parametrize(
    ("tree", "path"),
    [
        ({"persona": "loyal"}, "(root)"),
        ({"all": [COUNTRY, {"not": {"segment": 1}}]}, "all[1].not"),
    ],
)
def test_persona_rules_cannot_refer_to_personas_or_segments(tree, path):
    with pytest.raises(RuleError) as error:
        validate(tree, for_persona=True)
    assert error.value.path == path
    assert "persona rules cannot" in error.value.reason


def test_rules_nested_too_deep_are_rejected():
    tree = COUNTRY
    for _ in range(30):
        tree = {"not": tree}
    with pytest.raises(RuleError, match="deeper than"):
        validate(tree)


def test_every_field_and_operator_the_builder_offers_compiles_and_runs():
    person("someone", last_purchase_at=NOW)
    samples = {
        "text": {"single": "x", "list": ["x", "y"], "pair": ["a", "z"]},
        "number": {"single": 3, "list": [1, 2.5], "pair": [1, 9]},
        "datetime": {"single": "2025-06-01", "list": [], "pair": ["2025-01-01", "2025-06-01T10:00:00Z"]},
    }
    for name, spec in FIELDS.items():
        assert hasattr(Customer, name), name
        for op in operators_for(spec.type):
            assert op in OPERATORS
            sample = samples[spec.type]
            value = {
                "in": sample["list"],
                "not_in": sample["list"],
                "between": sample["pair"],
                "within_last_days": 7,
                "before_last_days": 7,
            }.get(op, sample["single"])
            tree = {"field": name, "op": op, "value": value}
            Customer.objects.filter(compile_rules(tree, now=NOW)).count()


def test_operators_for_offers_only_operators_that_fit_the_type():
    assert "within_last_days" not in operators_for("text")
    assert "contains" not in operators_for("number")
    assert "in" not in operators_for("datetime")
    assert operators_for("boolean") == ["eq", "neq", "in", "not_in", "is_set", "is_not_set"]
    assert operators_for("attribute") == list(OPERATORS)
    with pytest.raises(ValueError, match="unknown field type"):
        operators_for("colour")


# --- one query, explain, selectors --------------------------------------------------------------

NESTED = {
    "all": [
        {"any": [{"field": "country", "op": "eq", "value": "PL"}, {"attribute": "tier", "op": "eq", "value": "gold"}]},
        {"not": {"consent": "email", "op": "eq", "value": "opted_out"}},
        {"activity": "message.clicked", "channel": "email", "within_days": 30},
        {"not": {"activity": "purchase", "min_count": 2}},
    ]
}


@pytest.fixture
def nested_people():
    fan = person("fan", country="DE", attributes={"tier": "gold"})
    Activity.objects.create(customer=fan, kind="message.clicked", channel="email", occurred_at=NOW - timedelta(days=1))
    buyer = person("buyer", country="PL", consents={"email": "opted_in"})
    Activity.objects.create(customer=buyer, kind="message.clicked", channel="email", occurred_at=NOW)
    for _ in range(2):
        Activity.objects.create(customer=buyer, kind="purchase", occurred_at=NOW)
    quiet = person("quiet", country="PL", consents={"email": "opted_out"})
    Activity.objects.create(customer=quiet, kind="message.clicked", channel="email", occurred_at=NOW)
    return {"fan": fan, "buyer": buyer, "quiet": quiet}


def test_a_nested_tree_counts_and_lists_in_one_sql_query(nested_people, django_assert_num_queries):
    q = compile_rules(NESTED, now=NOW)
    with django_assert_num_queries(1):
        assert Customer.objects.filter(q).count() == 1
    with django_assert_num_queries(1):
        assert [c.last_name for c in Customer.objects.filter(q)] == ["fan"]


def test_explain_marks_every_node_for_the_customer(nested_people):
    explained = explain(NESTED, nested_people["buyer"], now=NOW)
    assert explained == {
        "matched": False,
        "all": [
            {
                "matched": True,
                "any": [
                    {"field": "country", "op": "eq", "value": "PL", "matched": True},
                    {"attribute": "tier", "op": "eq", "value": "gold", "matched": False},
                ],
            },
            {"matched": True, "not": {"consent": "email", "op": "eq", "value": "opted_out", "matched": False}},
            {"activity": "message.clicked", "channel": "email", "within_days": 30, "matched": True},
            {"matched": False, "not": {"activity": "purchase", "min_count": 2, "matched": True}},
        ],
    }
    assert explain(NESTED, nested_people["fan"], now=NOW)["matched"] is True
    assert "matched" not in NESTED  # the caller's tree is left alone


def test_explain_evaluates_every_node_in_one_query(nested_people, django_assert_num_queries):
    with django_assert_num_queries(1):
        explain(NESTED, nested_people["quiet"], now=NOW)


def test_explain_rejects_an_invalid_tree(nested_people):
    with pytest.raises(RuleError):
        explain({"all": []}, nested_people["fan"])


def test_selectors_leave_erased_customers_out(nested_people):
    segment = SegmentFactory(rules=NESTED)
    assert segment_count(segment, now=NOW) == 1
    Customer.objects.filter(pk=nested_people["fan"].pk).update(erased_at=NOW)
    assert segment_count(segment, now=NOW) == 0
    assert Customer.objects.filter(compile_rules(NESTED, now=NOW)).count() == 1  # the compiler does not filter
    assert rules_count({"field": "country", "op": "is_set"}) == 2
    assert set(rules_customers({"field": "country", "op": "is_set"}).values_list("last_name", flat=True)) == {
        "buyer",
        "quiet",
    }


def test_customer_segments_lists_memberships_in_one_query_after_lookups(django_assert_max_num_queries):
    loyal = Persona.objects.create(name="Loyal", slug="loyal", rules=COUNTRY)
    customer = person("c", country="PL", persona=loyal)
    in_pl = SegmentFactory(name="B in Poland", rules=COUNTRY)
    SegmentFactory(name="C in Germany", rules={"field": "country", "op": "eq", "value": "DE"})
    loyal_segment = SegmentFactory(name="A loyal", rules={"persona": "loyal"})
    listed = SegmentFactory(name="D listed", kind=Segment.Kind.STATIC, rules={})
    SegmentFactory(name="E unlisted", kind=Segment.Kind.STATIC, rules={})
    SegmentMember.objects.create(segment=listed, customer=customer)
    SegmentFactory(name="F wraps B", rules={"not": {"segment": in_pl.pk}})
    broken = SegmentFactory(name="G broken")
    Segment.objects.filter(pk=broken.pk).update(rules={"all": []})
    # Segments, personas, then one membership query for all of them.
    with django_assert_max_num_queries(3):
        found = customer_segments(customer)
    assert [s.name for s in found] == [loyal_segment.name, in_pl.name, listed.name]
    Customer.objects.filter(pk=customer.pk).update(erased_at=NOW)
    assert customer_segments(customer) == []


def test_static_segment_audience_is_its_members():
    a = person("a")
    person("b")
    static = SegmentFactory(kind=Segment.Kind.STATIC, rules={})
    SegmentMember.objects.create(segment=static, customer=a)
    assert list(segment_customers(static).values_list("last_name", flat=True)) == ["a"]


def test_segment_clean_passes_its_own_id_so_self_reference_is_an_error():
    segment = SegmentFactory()
    segment.rules = {"segment": segment.pk}
    with pytest.raises(ValidationError, match="segment cycle"):
        segment.full_clean()


def test_persona_clean_rejects_persona_conditions():
    persona = Persona(name="Odd", slug="odd", rules={"persona": "odd"})
    with pytest.raises(ValidationError, match="persona rules cannot"):
        persona.full_clean()


def test_attribute_equality_uses_jsonb_containment_on_postgresql():
    sql = str(Customer.objects.filter(compile_rules({"attribute": "tier", "op": "in", "value": ["gold", 1]})).query)
    if connection.vendor == "postgresql":
        assert sql.count("@>") == 2
    else:
        assert "JSON_TYPE" in sql
