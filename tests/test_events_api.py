"""POST /api/v1/events and the derived stats the timeline keeps current."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from customers.models import Activity, Customer, Persona
from customers.services.activities import activity_record, customer_stats_refresh, events_record
from tests.factories import CampaignFactory, CustomerFactory
from tests.factories import api_client as api

pytestmark = pytest.mark.django_db

URL = "/api/v1/events"


def _purchase(customer: Customer, amount, **extra) -> dict:
    return {"customer": {"email": customer.email}, "kind": "purchase", "properties": {"amount": amount}, **extra}


def test_a_purchase_is_recorded_and_updates_lifetime_value_orders_and_last_purchase(roles):
    customer = CustomerFactory(email="ana@example.com")
    at = timezone.now() - timedelta(days=2)
    client = api("Marketer")
    first = client.post(
        URL,
        {
            "customer": {"email": "ANA@example.com"},
            "kind": "purchase",
            "occurred_at": at.isoformat(),
            "properties": {"amount": 49.9, "currency": "eur", "order_id": "A-1"},
        },
        format="json",
    )
    assert first.status_code == 201, first.json()
    assert first.json()["results"][0]["status"] == "recorded"
    second = client.post(URL, _purchase(customer, "20.10"), format="json")
    assert second.status_code == 201, second.json()
    customer.refresh_from_db()
    assert customer.orders_count == 2
    assert customer.lifetime_value == Decimal("70.00")
    assert customer.last_purchase_at > at
    activity = Activity.objects.get(pk=first.json()["results"][0]["id"])
    assert activity.customer == customer and activity.occurred_at == at
    assert activity.properties["currency"] == "EUR" and activity.properties["order_id"] == "A-1"


def test_a_repeated_client_event_id_is_a_duplicate_and_adds_nothing(roles):
    customer = CustomerFactory()
    client = api("Marketer")
    event = _purchase(customer, 10, client_event_id="order-1")
    first = client.post(URL, event, format="json").json()["results"][0]
    again = client.post(URL, [event, {**event, "properties": {"amount": 999}}], format="json")
    assert again.status_code == 201
    assert [(r["status"], r["id"]) for r in again.json()["results"]] == [("duplicate", first["id"])] * 2
    assert Activity.objects.filter(kind="purchase").count() == 1
    customer.refresh_from_db()
    assert (customer.orders_count, customer.lifetime_value) == (1, Decimal("10.00"))


def test_a_client_event_id_repeated_inside_one_batch_is_recorded_once(roles):
    customer = CustomerFactory()
    body = (
        api("Marketer")
        .post(
            URL,
            [_purchase(customer, 5, client_event_id="x"), _purchase(customer, 5, client_event_id="x")],
            format="json",
        )
        .json()
    )
    first, second = body["results"]
    assert (first["status"], second["status"]) == ("recorded", "duplicate")
    assert second["id"] == first["id"]
    assert Activity.objects.filter(client_event_id="x").count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_of_one_event_record_it_once(roles):
    customer = CustomerFactory()
    event = _purchase(customer, 7, client_event_id="retry-me")
    barrier = threading.Barrier(3)
    outcomes = []

    def post():
        try:
            barrier.wait()
            outcomes.append(events_record(events=[event], source="api")[0])
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Activity.objects.filter(client_event_id="retry-me").count() == 1
    original = Activity.objects.get(client_event_id="retry-me").pk
    assert sorted(o.status for o in outcomes) == ["duplicate", "duplicate", "recorded"]
    assert {o.id for o in outcomes} == {original}
    customer.refresh_from_db()
    assert customer.orders_count == 1


def test_a_batch_with_bad_events_records_the_good_ones_and_names_each_problem(roles):
    customer = CustomerFactory(email="ana@example.com")
    campaign = CampaignFactory()
    future = (timezone.now() + timedelta(hours=1)).isoformat()
    events = [
        {"customer": {"email": "ana@example.com"}, "kind": "page.viewed", "properties": {"url": "/tents"}},  # 0
        {"customer": {"email": "ana@example.com"}, "kind": "Page Viewed"},  # 1 bad kind
        {"customer": {"email": "ana@example.com"}, "kind": "page.viewed", "occurred_at": future},  # 2 future
        {"customer": {"email": "ana@example.com"}, "kind": "purchase", "properties": {"currency": "EUR"}},  # 3
        {"customer": {"email": "nobody@example.com"}, "kind": "page.viewed"},  # 4 unknown customer
        {"customer": {"email": "ana@example.com"}, "kind": "purchase", "properties": {"amount": -5}},  # 5
        {"customer": {"email": "ana@example.com"}, "kind": "page.viewed", "channel": "fax"},  # 6
        {"customer": {"email": "ana@example.com"}, "kind": "page.viewed", "campaign": 999999},  # 7
        {"customer": {"email": "ana@example.com"}, "kind": "page.viewed", "occurred_at": "last tuesday"},  # 8
        {"customer": {"email": "ana@example.com"}, "kind": "page.viewed", "properties": [1]},  # 9
        {"customer": {"email": "ana@example.com"}, "kind": "purchase", "properties": {"amount": "lots"}},  # 10
        "not an event",  # 11
        {"customer": {"email": "ana@example.com"}, "kind": "note", "campaign": campaign.pk, "channel": "sms"},  # 12
        {"customer": {"email": "ana@example.com"}, "kind": "consent.changed"},  # 13
        {"customer": {"name": "Ana"}, "kind": "page.viewed"},  # 14
    ]
    response = api("Marketer").post(URL, events, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    results = body["results"]
    assert [r["status"] for r in results] == ["recorded"] + ["error"] * 11 + ["recorded"] + ["error"] * 2
    assert (body["recorded"], body["failed"]) == (2, 13)
    assert "kind" in results[1]["errors"]
    assert "future" in results[2]["errors"]["occurred_at"][0]
    assert "amount" in results[3]["errors"]["properties"][0]
    assert "nobody@example.com" in results[4]["errors"]["customer"][0]
    assert "negative" in results[5]["errors"]["properties"][0]
    assert "fax" in results[6]["errors"]["channel"][0]
    assert "999999" in results[7]["errors"]["campaign"][0]
    assert "ISO 8601" in results[8]["errors"]["occurred_at"][0]
    assert "properties" in results[9]["errors"]
    assert "not a number" in results[10]["errors"]["properties"][0]
    assert results[11]["errors"]
    assert "consents" in results[13]["errors"]["kind"][0]
    assert "name" in results[14]["errors"]["customer"][0]
    assert sorted(customer.activities.values_list("kind", flat=True)) == ["note", "page.viewed"]
    assert customer.activities.get(kind="note").campaign == campaign
    customer.refresh_from_db()
    assert customer.orders_count == 0


@pytest.mark.parametrize(
    ("event", "field", "needle"),
    [
        ({"customer": {"email": "ana@example.com"}, "kind": "x" * 65}, "kind", "1-64"),
        ({"customer": {"email": "nobody@example.com"}, "kind": "visit"}, "customer", "No customer with email"),
        ({"customer": {"email": "ana@example.com"}, "kind": "purchase"}, "properties", "amount"),
        ({"customer": {"email": "ana@example.com"}, "kind": "visit", "surprise": 1}, "surprise", "Unknown field"),
        ({"customer": "ana@example.com", "kind": "visit"}, "customer", "object"),
        ({"kind": "visit"}, "customer", "object"),
        ({"customer": {"email": "ana@example.com"}, "kind": "visit", "properties": {"q": "\x00"}}, "properties", "NUL"),
        (
            {"customer": {"email": "ana@example.com"}, "kind": "visit", "occurred_at": "0001-01-01T00:00:00"},
            "occurred_at",
            "1900",
        ),
    ],
)
def test_a_single_bad_event_is_a_400_naming_the_field(roles, event, field, needle):
    CustomerFactory(email="ana@example.com")
    response = api("Marketer").post(URL, event, format="json")
    assert response.status_code == 400, response.json()
    assert needle in " ".join(response.json()[field])
    assert Activity.objects.count() == 0


def test_an_event_more_than_five_minutes_ahead_is_refused_but_slight_clock_skew_is_fine(roles):
    CustomerFactory(email="ana@example.com")
    client = api("Marketer")
    soon = (timezone.now() + timedelta(minutes=2)).isoformat()
    later = (timezone.now() + timedelta(minutes=10)).isoformat()
    event = {"customer": {"email": "ana@example.com"}, "kind": "visit"}
    assert client.post(URL, {**event, "occurred_at": soon}, format="json").status_code == 201
    response = client.post(URL, {**event, "occurred_at": later}, format="json")
    assert response.status_code == 400
    assert "5 minutes in the future" in response.json()["occurred_at"][0]


@pytest.mark.parametrize("body", [[], "visit", 42])
def test_a_body_that_is_not_events_is_a_400(roles, body):
    response = api("Marketer").post(URL, body, format="json")
    assert response.status_code == 400
    assert "events" in response.json()


def test_more_than_ten_thousand_events_is_a_400_saying_the_limit(roles):
    customer = CustomerFactory()
    events = [{"customer": {"id": customer.pk}, "kind": "visit"}] * 10_001
    response = api("Marketer").post(URL, events, format="json")
    assert response.status_code == 400
    assert "At most 10,000" in response.json()["events"][0]
    assert Activity.objects.count() == 0


def test_customers_are_found_by_any_identity_and_lookups_must_agree(roles):
    ana = CustomerFactory(
        email="ana@example.com", phone="+48600100200", external_id="crm-1", bluesky_handle="ana.bsky.social"
    )
    bo = CustomerFactory(email="bo@example.com")
    lookups = [
        {"id": ana.pk},
        {"phone": "+48 600 100 200"},
        {"external_id": "crm-1"},
        {"bluesky_handle": "@Ana.bsky.social"},
        {"email": "ana@example.com", "external_id": "crm-1"},
    ]
    events = [{"customer": lookup, "kind": "visit"} for lookup in lookups]
    events.append({"customer": {"email": "bo@example.com", "external_id": "crm-1"}, "kind": "visit"})
    results = api("Marketer").post(URL, events, format="json").json()["results"]
    assert [r["status"] for r in results] == ["recorded"] * 5 + ["error"]
    assert f"email matches customer {bo.pk}" in results[5]["errors"]["customer"][0]
    assert ana.activities.count() == 5 and bo.activities.count() == 0


def test_an_event_for_an_erased_customer_names_an_unknown_customer(roles):
    customer = CustomerFactory()
    Customer.objects.filter(pk=customer.pk).update(erased_at=timezone.now())
    response = api("Marketer").post(URL, {"customer": {"id": customer.pk}, "kind": "visit"}, format="json")
    assert response.status_code == 400
    assert f"No customer with id {customer.pk}" in response.json()["customer"][0]


def test_a_custom_event_with_a_channel_counts_as_engagement_on_that_channel(roles):
    customer = CustomerFactory()
    at = timezone.now() - timedelta(hours=1)
    client = api("Marketer")
    client.post(URL, {"customer": {"id": customer.pk}, "kind": "visit"}, format="json")
    customer.refresh_from_db()
    assert customer.last_engaged_sms_at is None and customer.last_engaged_email_at is None
    event = {"customer": {"id": customer.pk}, "kind": "link.tapped", "channel": "sms", "occurred_at": at.isoformat()}
    assert client.post(URL, event, format="json").status_code == 201
    customer.refresh_from_db()
    assert customer.last_engaged_sms_at == at and customer.last_engaged_email_at is None


def test_events_reassign_personas(roles):
    Persona.objects.create(
        name="Browsers", slug="browsers", rules={"all": [{"field": "country", "op": "eq", "value": "PL"}]}
    )
    customer = CustomerFactory(country="PL")
    assert customer.persona is None
    api("Marketer").post(URL, {"customer": {"id": customer.pk}, "kind": "visit"}, format="json")
    customer.refresh_from_db()
    assert customer.persona.slug == "browsers"


def test_analyst_cannot_record_events(roles):
    customer = CustomerFactory()
    response = api("Analyst").post(URL, {"customer": {"id": customer.pk}, "kind": "visit"}, format="json")
    assert response.status_code == 403
    assert Activity.objects.count() == 0


# --- derived stats --------------------------------------------------------------------


def test_stats_refresh_recomputes_everything_from_the_timeline_and_is_idempotent():
    customer = CustomerFactory()
    other = CustomerFactory()
    now = timezone.now()
    rows = [
        ("purchase", "", {"amount": 10.5}, 30),
        ("purchase", "email", {"amount": 4}, 10),
        ("message.sent", "email", {}, 1),  # sent is not engagement
        ("message.opened", "email", {}, 5),
        ("message.clicked", "email", {}, 3),
        ("message.replied", "sms", {}, 8),
        ("message.delivered", "whatsapp", {}, 2),  # nor is delivered
        ("wishlist.added", "social", {}, 4),  # a custom event with a channel is
    ]
    for kind, channel, properties, days in rows:
        Activity.objects.create(
            customer=customer, kind=kind, channel=channel, properties=properties, occurred_at=now - timedelta(days=days)
        )
    Customer.objects.filter(pk=customer.pk).update(orders_count=99, lifetime_value=1, last_engaged_whatsapp_at=now)
    for _ in range(2):
        assert customer_stats_refresh(customer_ids=[customer.pk, other.pk]) == 2
        customer.refresh_from_db()
        assert customer.orders_count == 2
        assert customer.lifetime_value == Decimal("14.50")
        assert customer.last_purchase_at == now - timedelta(days=10)
        assert customer.last_engaged_email_at == now - timedelta(days=3)
        assert customer.last_engaged_sms_at == now - timedelta(days=8)
        assert customer.last_engaged_whatsapp_at is None
        assert customer.last_engaged_social_at == now - timedelta(days=4)
    other.refresh_from_db()
    assert (other.orders_count, other.lifetime_value, other.last_purchase_at) == (0, Decimal(0), None)


def test_stats_follow_activities_moved_to_another_customer_as_a_merge_does():
    survivor, duplicate = CustomerFactory(), CustomerFactory()
    events_record(events=[_purchase(duplicate, 30)], source="api")
    duplicate.refresh_from_db()
    assert duplicate.orders_count == 1
    Activity.objects.filter(customer=duplicate).update(customer=survivor)
    customer_stats_refresh(customer_ids=[survivor.pk, duplicate.pk])
    survivor.refresh_from_db()
    duplicate.refresh_from_db()
    assert (survivor.orders_count, survivor.lifetime_value) == (1, Decimal("30.00"))
    assert (duplicate.orders_count, duplicate.lifetime_value) == (0, Decimal(0))


def test_activity_record_moves_last_engaged_forward_only():
    customer = CustomerFactory()
    now = timezone.now()
    activity_record(customer=customer, kind="message.opened", channel="email", occurred_at=now)
    activity_record(customer=customer, kind="message.clicked", channel="email", occurred_at=now - timedelta(days=1))
    activity_record(customer=customer, kind="message.delivered", channel="sms", occurred_at=now)
    customer.refresh_from_db()
    assert customer.last_engaged_email_at == now
    assert customer.last_engaged_sms_at is None
    assert customer.activities.count() == 3
