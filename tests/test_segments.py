"""The rule compiler: one query, right members, errors that name the node."""

from __future__ import annotations

import pytest

from customers.models import Customer
from segments.rules import RuleError, compile_rules, validate
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


def members(tree) -> set[str]:
    return set(Customer.objects.filter(compile_rules(tree)).values_list("email", flat=True))


@pytest.fixture
def people():
    CustomerFactory(
        email="ana@example.com",
        country="PL",
        city="Krakow",
        attributes={"tier": "gold"},
        consents={"email": "opted_in"},
    )
    CustomerFactory(
        email="bo@example.com",
        country="DE",
        city="Berlin",
        attributes={"tier": "silver"},
        consents={"email": "opted_out"},
    )
    CustomerFactory(email="cy@example.com", country="PL", city="", attributes={})


def test_field_equality_and_groups(people):
    assert members({"field": "country", "op": "eq", "value": "PL"}) == {"ana@example.com", "cy@example.com"}
    assert members(
        {"all": [{"field": "country", "op": "eq", "value": "PL"}, {"field": "city", "op": "eq", "value": "Krakow"}]}
    ) == {"ana@example.com"}
    assert members(
        {"any": [{"field": "country", "op": "eq", "value": "DE"}, {"field": "city", "op": "eq", "value": "Krakow"}]}
    ) == {"ana@example.com", "bo@example.com"}
    assert members({"not": {"field": "country", "op": "in", "value": ["PL"]}}) == {"bo@example.com"}


def test_missing_values_match_only_negative_operators(people):
    assert "cy@example.com" in members({"field": "city", "op": "neq", "value": "Krakow"})
    assert "cy@example.com" in members({"field": "city", "op": "is_not_set"})
    assert "cy@example.com" not in members({"field": "city", "op": "starts_with", "value": ""})
    assert "cy@example.com" in members({"attribute": "tier", "op": "not_in", "value": ["gold"]})
    assert "cy@example.com" not in members({"attribute": "tier", "op": "is_set"})


def test_attribute_membership(people):
    assert members({"attribute": "tier", "op": "in", "value": ["gold", "silver"]}) == {
        "ana@example.com",
        "bo@example.com",
    }


def test_consent_state_uses_the_latest_ledger_row(people):
    assert members({"consent": "email", "op": "eq", "value": "opted_in"}) == {"ana@example.com"}
    assert members({"consent": "email", "op": "eq", "value": "opted_out"}) == {"bo@example.com"}
    assert members({"consent": "email", "op": "eq", "value": "unknown"}) == {"cy@example.com"}


def test_compiled_rules_count_in_a_single_query(people, django_assert_num_queries):
    with django_assert_num_queries(1):
        Customer.objects.filter(
            compile_rules(
                {
                    "all": [
                        {"consent": "email", "op": "eq", "value": "opted_in"},
                        {"field": "country", "op": "eq", "value": "PL"},
                    ]
                }
            )
        ).count()


@pytest.mark.parametrize(
    ("tree", "path", "reason"),
    [
        ({"all": []}, "all", "non-empty list"),
        ({"all": [{"field": "shoe_size", "op": "eq", "value": 1}]}, "all[0].field", "unknown field"),
        (
            {"any": [{"field": "country", "op": "eq", "value": "PL"}, {"field": "country", "op": "in", "value": "PL"}]},
            "any[1].value",
            "list",
        ),
        ({"not": {"field": "country", "op": "like", "value": "P"}}, "not.op", "unknown operator"),
        ({"consent": "fax", "op": "eq", "value": "opted_in"}, "consent", "unknown channel"),
        ("country = PL", "(root)", "JSON object"),
    ],
)
def test_invalid_trees_name_the_bad_node(tree, path, reason):
    with pytest.raises(RuleError) as error:
        validate(tree)
    assert error.value.path == path
    assert reason in error.value.reason
