"""The customer search box: prefix matching on names, email, phone and external id."""

from __future__ import annotations

import pytest

from customers.models import Customer
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def people():
    return {
        "anna": CustomerFactory(
            first_name="Anna", last_name="Nowak", email="anna.nowak@example.com", phone="+48601234567"
        ),
        "jan": CustomerFactory(
            first_name="Jan", last_name="Kowalski", email="jk@shop.example", phone="+4915112345678", external_id="CRM-7"
        ),
        "nowakowska": CustomerFactory(first_name="Ewa", last_name="Nowakowska", email="ewa@example.org", phone=None),
    }


def found(term: str) -> set[str]:
    return set(Customer.objects.search(term).values_list("first_name", flat=True))


def test_a_name_prefix_matches_first_or_last_name_in_any_case(people):
    assert found("nowak") == {"Anna", "Ewa"}
    assert found("JA") == {"Jan"}


def test_first_and_last_name_together_narrow_the_match(people):
    assert found("anna now") == {"Anna"}
    assert found("ewa nowak") == {"Ewa"}


def test_an_email_or_its_start_matches_case_insensitively(people):
    assert found("Anna.Nowak@") == {"Anna"}
    assert found("jk@shop.example") == {"Jan"}


def test_a_phone_matches_by_international_start_or_national_end(people):
    assert found("+48 601") == {"Anna"}
    assert found("601 234 567") == {"Anna"}
    assert found("151 1234 5678") == {"Jan"}


def test_an_external_id_matches_exactly(people):
    assert found("CRM-7") == {"Jan"}
    assert found("CRM") == set()


def test_a_term_in_the_middle_of_a_name_does_not_match(people):
    assert found("owak") == set()
