"""Merging two customer records into one: everything moves, collisions resolve, an audit entry stays."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from campaigns.models import CampaignRun, Enrollment
from channels.models import Message
from config.roles import ADMIN, ANALYST, MARKETER
from customers.models import Activity, Consent, Customer, Persona
from customers.services import consent_current, consent_record
from customers.services.merge import customers_merge
from customers.services.privacy import customer_erase
from segments.models import Segment, SegmentMember
from tests.factories import CustomerFactory, UserFactory, two_channel_campaign
from tests.factories import api_client as api

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _roles(roles):
    """Every test here acts as a role."""


def message(run: CampaignRun, position: int, customer: Customer, **fields) -> Message:
    step = run.campaign.steps.get(position=position)
    return Message.objects.create(run=run, step=step, customer=customer, channel=step.channel, **fields)


@pytest.fixture
def pair():
    """Two records of one person: the survivor has the email, the duplicate the phone and more profile."""
    survivor = CustomerFactory(
        email="ana@example.com", phone=None, first_name="Ana", last_name="", city="", attributes={"tier": "gold"}
    )
    duplicate = CustomerFactory(
        email="ana.nowak@work.example",
        phone="+48600999111",
        external_id="crm-42",
        first_name="Anna",
        last_name="Nowak",
        city="Gdansk",
        attributes={"tier": "silver", "shoe_size": 38},
    )
    return survivor, duplicate


def test_merge_moves_timeline_consents_messages_enrollments_and_memberships(pair):
    survivor, duplicate = pair
    Activity.objects.create(customer=duplicate, kind="purchase", properties={"amount": "25.50"})
    Activity.objects.create(customer=duplicate, kind="page.viewed", channel="email")
    consent_record(customer=duplicate, channel="sms", status="opted_in", source="import")
    run = CampaignRun.objects.create(campaign=two_channel_campaign(), number=1)
    sms = message(run, 1, duplicate, to_address=duplicate.phone, status="sent")
    Enrollment.objects.create(run=run, customer=duplicate, step_position=1)
    static = Segment.objects.create(name="VIP list", kind="static")
    SegmentMember.objects.create(segment=static, customer=duplicate)
    user = UserFactory(username="mia", role=MARKETER)

    merged = customers_merge(survivor=survivor, duplicate=duplicate, by=user)

    assert merged.pk == survivor.pk
    assert not Customer.objects.filter(pk=duplicate.pk).exists()
    assert merged.activities.filter(kind="page.viewed").exists()
    assert consent_current(customer=merged, channel="sms") == "opted_in"
    sms.refresh_from_db()
    assert sms.customer_id == merged.pk
    assert Enrollment.objects.get(run=run).customer_id == merged.pk
    assert SegmentMember.objects.get(segment=static).customer_id == merged.pk
    # Stats are recomputed from the moved purchase.
    assert (merged.orders_count, merged.lifetime_value) == (1, Decimal("25.50"))


def test_merge_fills_blanks_from_the_duplicate_and_the_survivor_wins_on_conflicts(pair):
    survivor, duplicate = pair
    merged = customers_merge(survivor=survivor, duplicate=duplicate, by=None)
    # Empty identity keys are taken over (the duplicate lets go first: they are unique).
    assert (merged.email, merged.phone, merged.external_id) == ("ana@example.com", "+48600999111", "crm-42")
    assert (merged.first_name, merged.last_name, merged.city) == ("Ana", "Nowak", "Gdansk")
    assert merged.attributes == {"tier": "gold", "shoe_size": 38}


def test_merge_recomputes_the_persona_from_the_merged_record(pair):
    survivor, duplicate = pair
    persona = Persona.objects.create(
        name="Tri-city", slug="tri-city", rules={"all": [{"field": "city", "op": "eq", "value": "Gdansk"}]}
    )
    merged = customers_merge(survivor=survivor, duplicate=duplicate, by=None)
    assert merged.persona_id == persona.pk


def test_merge_leaves_an_audit_activity_with_who_what_and_counts(pair):
    survivor, duplicate = pair
    Activity.objects.create(customer=duplicate, kind="page.viewed")
    user = UserFactory(username="mia", role=MARKETER)
    duplicate_id = duplicate.pk
    merged = customers_merge(survivor=survivor, duplicate=duplicate, by=user)
    audit = merged.activities.get(kind="customer.merged")
    assert audit.properties["merged_by"] == "mia"
    assert audit.properties["duplicate_id"] == duplicate_id
    assert audit.properties["duplicate_identities"] == {
        "email": "ana.nowak@work.example",
        "phone": "+48600999111",
        "external_id": "crm-42",
    }
    assert audit.properties["moved"]["activities"] == 1
    assert set(audit.properties["filled_fields"]) >= {"phone", "external_id", "last_name", "city"}


def test_latest_consent_across_both_records_becomes_the_current_state(pair):
    survivor, duplicate = pair
    earlier = timezone.now() - timedelta(days=2)
    consent_record(customer=survivor, channel="email", status="opted_in", source="import", at=earlier)
    consent_record(customer=duplicate, channel="email", status="opted_out", source="one_click")
    merged = customers_merge(survivor=survivor, duplicate=duplicate, by=None)
    # The ledger stays append-only: both rows are kept, the newer one rules.
    assert list(Consent.objects.filter(customer=merged, channel="email").values_list("status", flat=True)) == [
        "opted_out",
        "opted_in",
    ]
    assert consent_current(customer=merged, channel="email") == "opted_out"


def test_colliding_messages_enrollments_and_memberships_keep_the_survivors_rows(pair):
    survivor, duplicate = pair
    run = CampaignRun.objects.create(campaign=two_channel_campaign(), number=1)
    kept = message(run, 0, survivor, to_address=survivor.email, status="delivered")
    message(run, 0, duplicate, to_address=duplicate.email, status="sent")
    only_duplicate = message(run, 1, duplicate, to_address=duplicate.phone, status="sent")
    Enrollment.objects.create(run=run, customer=survivor, step_position=1)
    Enrollment.objects.create(run=run, customer=duplicate, step_position=2)
    static = Segment.objects.create(name="VIP list", kind="static")
    SegmentMember.objects.create(segment=static, customer=survivor)
    SegmentMember.objects.create(segment=static, customer=duplicate)

    merged = customers_merge(survivor=survivor, duplicate=duplicate, by=None)

    assert sorted(Message.objects.filter(customer=merged).values_list("pk", flat=True)) == sorted(
        [kept.pk, only_duplicate.pk]
    )
    assert Message.objects.filter(run=run).count() == 2
    assert list(Enrollment.objects.filter(run=run).values_list("customer_id", "step_position")) == [(merged.pk, 1)]
    assert SegmentMember.objects.filter(segment=static).count() == 1
    audit = merged.activities.get(kind="customer.merged").properties
    assert audit["moved"]["messages"] == 1
    assert audit["dropped"] == {"messages": 1, "enrollments": 1, "segment_memberships": 1}


def test_merging_a_customer_with_itself_is_refused():
    ana = CustomerFactory()
    with pytest.raises(ValidationError, match="itself"):
        customers_merge(survivor=ana, duplicate=ana, by=None)
    assert Customer.objects.filter(pk=ana.pk).exists()


def test_merging_with_an_erased_customer_is_refused_and_changes_nothing():
    ana, bo = CustomerFactory(), CustomerFactory()
    Activity.objects.create(customer=bo, kind="page.viewed")
    customer_erase(customer=bo, by=None)
    for survivor, duplicate in ((ana, bo), (bo, ana)):
        with pytest.raises(ValidationError, match="erased"):
            customers_merge(survivor=survivor, duplicate=duplicate, by=None)
    assert Customer.objects.filter(pk__in=[ana.pk, bo.pk]).count() == 2
    assert Activity.objects.get(kind="page.viewed").customer_id == bo.pk


# --- API ---------------------------------------------------------------------------


def test_api_merge_returns_the_merged_customer(pair):
    survivor, duplicate = pair
    response = api(MARKETER).post(f"/api/v1/customers/{survivor.pk}/merge", {"duplicate": duplicate.pk}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["id"] == survivor.pk
    assert response.json()["phone"] == "+48600999111"
    assert not Customer.objects.filter(pk=duplicate.pk).exists()


@pytest.mark.parametrize(
    ("body", "field", "needle"),
    [
        ({"duplicate": "self"}, "non_field_errors", "itself"),
        ({"duplicate": 987654}, "duplicate", "no customer #987654"),
        ({"duplicate": "erased"}, "non_field_errors", "erased"),
        ({"duplicate": "abc"}, "duplicate", "valid integer"),
        ({}, "duplicate", "required"),
    ],
)
def test_api_merge_bad_requests_get_400_naming_the_problem(body, field, needle):
    ana, bo = CustomerFactory(), CustomerFactory()
    if body.get("duplicate") == "self":
        body = {"duplicate": ana.pk}
    elif body.get("duplicate") == "erased":
        customer_erase(customer=bo, by=None)
        body = {"duplicate": bo.pk}
    response = api(ADMIN).post(f"/api/v1/customers/{ana.pk}/merge", body, format="json")
    assert response.status_code == 400
    assert needle in str(response.json()[field])
    assert Customer.objects.filter(pk__in=[ana.pk, bo.pk]).count() == 2


def test_api_merge_into_an_unknown_customer_is_404():
    ana = CustomerFactory()
    response = api(ADMIN).post("/api/v1/customers/987654/merge", {"duplicate": ana.pk}, format="json")
    assert response.status_code == 404


def test_api_merge_is_forbidden_to_analysts(pair):
    survivor, duplicate = pair
    response = api(ANALYST).post(f"/api/v1/customers/{survivor.pk}/merge", {"duplicate": duplicate.pk}, format="json")
    assert response.status_code == 403
    assert Customer.objects.filter(pk=duplicate.pk).exists()


# --- UI ----------------------------------------------------------------------------


def test_merge_page_live_search_lists_other_customers_but_not_itself_or_erased(marketer_client, pair):
    survivor, duplicate = pair
    erased = CustomerFactory(first_name="Annabel")
    customer_erase(customer=erased, by=None)
    url = reverse("customers:merge", args=[survivor.pk])
    response = marketer_client.get(url, {"q": "ann"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert response.templates[0].name == "customers/_merge_candidates.html"
    rows = response.content.decode()
    assert f'data-customer="{duplicate.pk}"' in rows
    assert f'data-customer="{survivor.pk}"' not in rows
    assert f'data-customer="{erased.pk}"' not in rows


def test_merge_page_compares_both_records_side_by_side(marketer_client, pair):
    survivor, duplicate = pair
    response = marketer_client.get(reverse("customers:merge", args=[survivor.pk]), {"other": duplicate.pk})
    page = response.content.decode()
    assert response.status_code == 200
    assert 'data-testid="merge-comparison"' in page
    for value in ("ana@example.com", "ana.nowak@work.example", "+48600999111", "shoe_size", "Gdansk"):
        assert value in page
    assert f'name="survivor" value="{duplicate.pk}"' in page


def test_merging_from_the_page_keeps_the_chosen_record_and_redirects_to_it(marketer_client, pair):
    survivor, duplicate = pair
    # Keep the *other* record this time: the page's own customer is the duplicate.
    response = marketer_client.post(
        reverse("customers:merge", args=[survivor.pk]), {"other": duplicate.pk, "survivor": duplicate.pk}
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("customers:detail", args=[duplicate.pk])
    assert not Customer.objects.filter(pk=survivor.pk).exists()
    kept = Customer.objects.get(pk=duplicate.pk)
    assert kept.email == "ana.nowak@work.example"
    assert kept.activities.get(kind="customer.merged").properties["merged_by"] == "mia"
    follow = marketer_client.get(response["Location"])
    assert f"Customer #{survivor.pk} was merged into this record" in follow.content.decode()


def test_merge_form_without_a_valid_survivor_is_400_and_merges_nothing(marketer_client, pair):
    survivor, duplicate = pair
    response = marketer_client.post(
        reverse("customers:merge", args=[survivor.pk]), {"other": duplicate.pk, "survivor": "12345"}
    )
    assert response.status_code == 400
    assert "Choose which of the two records to keep" in response.content.decode()
    assert Customer.objects.filter(pk__in=[survivor.pk, duplicate.pk]).count() == 2


def test_analyst_cannot_open_or_post_the_merge_page(client, pair):
    survivor, duplicate = pair
    client.force_login(UserFactory(username="ada", role=ANALYST))
    url = reverse("customers:merge", args=[survivor.pk])
    assert client.get(url).status_code == 403
    assert client.post(url, {"other": duplicate.pk, "survivor": survivor.pk}).status_code == 403
    assert Customer.objects.filter(pk=duplicate.pk).exists()
