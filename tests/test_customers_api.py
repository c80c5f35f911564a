"""The customer record over REST: CRUD with identity conflicts, bulk upsert, timeline, consents."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from customers.models import Activity, Consent, Customer, Erasure, Persona
from customers.services import consent_current
from customers.services.customers import IdentityConflict, customer_upsert, customers_bulk_upsert
from tests.factories import CustomerFactory
from tests.factories import api_client as api

pytestmark = pytest.mark.django_db


def _persona(slug: str, rules: dict, priority: int = 0) -> Persona:
    return Persona.objects.create(name=slug.title(), slug=slug, rules=rules, priority=priority)


# --- create ----------------------------------------------------------------------


def test_create_normalises_identities_and_returns_consent_persona_and_stats(roles):
    _persona("germans", {"all": [{"field": "country", "op": "eq", "value": "DE"}]})
    response = api("Marketer").post(
        "/api/v1/customers/",
        {
            "email": " Jonas@Example.DE ",
            "phone": "030 12345678",
            "country": "de",
            "mastodon_handle": "Jonas@Mastodon.Social",
            "bluesky_handle": "@Jonas.bsky.social",
            "timezone": "Europe/Berlin",
            "attributes": {"tier": "gold"},
            "consents": {"email": "opted_in", "sms": "opted_out"},
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["email"] == "jonas@example.de"
    assert body["phone"] == "+493012345678"
    assert body["country"] == "DE"
    assert body["mastodon_handle"] == "@jonas@mastodon.social"
    assert body["bluesky_handle"] == "jonas.bsky.social"
    assert body["persona"] == "germans"
    assert body["consent"] == {"email": "opted_in", "sms": "opted_out", "whatsapp": "unknown", "social": "unknown"}
    assert body["orders_count"] == 0 and body["lifetime_value"] == "0.00" and body["last_purchase_at"] is None
    customer = Customer.objects.get(pk=body["id"])
    assert customer.activities.filter(kind="consent.changed").count() == 2


@pytest.mark.parametrize(
    ("payload", "field", "needle"),
    [
        ({"email": "ana@@example"}, "email", "not a valid email"),
        ({"phone": "+4860010"}, "phone", "not a valid phone number"),
        ({"phone": "+1 555"}, "phone", "too short"),
        ({"phone": "600100200"}, "phone", "no country code"),
        ({"email": "a@example.com", "timezone": "Europe/Atlantis"}, "timezone", "IANA"),
        ({"email": "a@example.com", "attributes": ["gold"]}, "attributes", "JSON object"),
        ({"email": "a@example.com", "attributes": "gold"}, "attributes", "JSON object"),
        ({"email": "a@example.com", "consents": {"fax": "opted_in"}}, "consents", "fax"),
        ({"email": "a@example.com", "consents": {"email": "yes"}}, "consents", "opted_in or opted_out"),
        ({"email": "a@example.com", "country": "Poland"}, "country", "alpha-2"),
        ({"email": "a@example.com", "locale": "english please"}, "locale", "locale"),
        ({"mastodon_handle": "anna"}, "mastodon_handle", "Mastodon handle"),
        ({"email": "a@example.com", "first_name": "x" * 101}, "first_name", "At most 100"),
        ({"email": "a" * 250 + "@example.com"}, "email", ""),
        ({"first_name": "Nobody"}, "non_field_errors", "at least one of email, phone"),
        ({"email": "a@example.com", "attributes": {"note": "a\x00b"}}, "attributes", "NUL"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_nothing_is_stored(roles, payload, field, needle):
    response = api("Marketer").post("/api/v1/customers/", payload, format="json")
    assert response.status_code == 400, response.json()
    assert needle in " ".join(response.json()[field])
    assert Customer.objects.count() == 0
    assert Consent.objects.count() == 0


def test_unknown_fields_are_rejected_rather_than_ignored(roles):
    customer = CustomerFactory(email="ana@example.com")
    response = api("Marketer").patch(f"/api/v1/customers/{customer.pk}/", {"emial": "x@example.com"}, format="json")
    assert response.status_code == 400
    assert "emial" in response.json()
    results = customers_bulk_upsert(rows=[{"email": "new@example.com", "emial": "x"}], source="api")
    assert results[0].status == "error"
    assert "emial" in results[0].errors
    assert Customer.objects.count() == 1


def test_create_with_identities_of_two_customers_is_a_409_naming_both(roles):
    ana = CustomerFactory(email="ana@example.com", first_name="Ana")
    bo = CustomerFactory(phone="+48600100999")
    response = api("Marketer").post(
        "/api/v1/customers/", {"email": "ANA@example.com", "phone": "+48 600 100 999", "first_name": "X"}, format="json"
    )
    assert response.status_code == 409
    body = response.json()
    assert body["conflicts"] == {"email": ana.pk, "phone": bo.pk}
    assert f"email matches customer {ana.pk}" in body["detail"]
    assert f"phone matches customer {bo.pk}" in body["detail"]
    assert Customer.objects.count() == 2
    assert Customer.objects.get(pk=ana.pk).first_name == "Ana"


# --- list and retrieve -------------------------------------------------------------


def test_list_filters_by_identities_normalised_like_writes(roles):
    ana = CustomerFactory(email="ana@example.com", phone="+48600100200", mastodon_handle="@ana@mastodon.social")
    CustomerFactory(email="bo@example.com", phone="+48600100300")
    client = api("Analyst")

    def ids(**params):
        response = client.get("/api/v1/customers/", params)
        assert response.status_code == 200, response.json()
        return [row["id"] for row in response.json()["results"]]

    assert ids(email="  ANA@Example.com") == [ana.pk]
    assert ids(phone="600 100 200", country="pl") == [ana.pk]
    assert ids(mastodon_handle="ana@Mastodon.social") == [ana.pk]
    assert ids(email="nobody@example.com") == []


def test_list_searches_and_filters_by_persona_and_country(roles):
    persona = _persona("locals", {"all": [{"field": "city", "op": "eq", "value": "Gdansk"}]})
    ana = CustomerFactory(first_name="Anastazja", country="PL", city="Gdansk")
    bo = CustomerFactory(first_name="Bo", country="DE", city="Berlin")
    Customer.objects.filter(pk=ana.pk).update(persona=persona)
    client = api("Analyst")
    assert [r["id"] for r in client.get("/api/v1/customers/", {"q": "anastaz"}).json()["results"]] == [ana.pk]
    assert [r["id"] for r in client.get("/api/v1/customers/", {"persona": "locals"}).json()["results"]] == [ana.pk]
    assert [r["id"] for r in client.get("/api/v1/customers/", {"country": "de"}).json()["results"]] == [bo.pk]


@pytest.mark.parametrize(("params", "field"), [({"phone": "12"}, "phone"), ({"q": "ana\x00"}, "q")])
def test_list_with_a_malformed_filter_is_a_400_naming_it(roles, params, field):
    response = api("Analyst").get("/api/v1/customers/", params)
    assert response.status_code == 400
    assert field in response.json()


def test_list_is_paginated_and_shows_consent_without_a_query_per_customer(roles, django_assert_max_num_queries):
    for _ in range(12):
        CustomerFactory(consents={"email": "opted_in"})
    client = api("Analyst")
    with django_assert_max_num_queries(8):
        body = client.get("/api/v1/customers/", {"limit": 10}).json()
    assert body["count"] == 12 and len(body["results"]) == 10
    assert all(row["consent"]["email"] == "opted_in" for row in body["results"])


def test_retrieve_unknown_customer_is_a_json_404(roles):
    response = api("Analyst").get("/api/v1/customers/999999/")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


# --- update ------------------------------------------------------------------------


def test_patch_overwrites_given_fields_and_merges_attributes(roles):
    customer = CustomerFactory(first_name="Ana", attributes={"tier": "gold", "vip": True, "source": "shop"})
    response = api("Marketer").patch(
        f"/api/v1/customers/{customer.pk}/",
        {"last_name": "Kowalska", "attributes": {"tier": "platinum", "vip": None, "size": "M"}},
        format="json",
    )
    assert response.status_code == 200, response.json()
    customer.refresh_from_db()
    assert customer.first_name == "Ana" and customer.last_name == "Kowalska"
    assert customer.attributes == {"tier": "platinum", "source": "shop", "size": "M"}


def test_put_replaces_the_record_clearing_what_is_left_out(roles):
    customer = CustomerFactory(email="ana@example.com", first_name="Ana", city="Krakow", attributes={"tier": "gold"})
    response = api("Marketer").put(
        f"/api/v1/customers/{customer.pk}/",
        {"email": "ana@example.com", "first_name": "Anna", "attributes": {"size": "M"}},
        format="json",
    )
    assert response.status_code == 200, response.json()
    customer.refresh_from_db()
    assert (customer.first_name, customer.city, customer.phone) == ("Anna", "", None)
    assert customer.attributes == {"size": "M"}


def test_update_to_an_email_another_customer_has_is_a_409_and_changes_nothing(roles):
    ana = CustomerFactory(email="ana@example.com", first_name="Ana")
    bo = CustomerFactory(email="bo@example.com")
    response = api("Marketer").patch(
        f"/api/v1/customers/{ana.pk}/", {"email": "BO@example.com", "first_name": "Changed"}, format="json"
    )
    assert response.status_code == 409
    assert response.json()["conflicts"] == {"email": bo.pk}
    ana.refresh_from_db()
    assert (ana.email, ana.first_name) == ("ana@example.com", "Ana")


def test_update_with_a_bad_timezone_is_a_400_and_changes_nothing(roles):
    customer = CustomerFactory(timezone="Europe/Warsaw", first_name="Ana")
    response = api("Marketer").patch(
        f"/api/v1/customers/{customer.pk}/", {"timezone": "Warsaw", "first_name": "X"}, format="json"
    )
    assert response.status_code == 400
    assert "IANA" in response.json()["timezone"][0]
    customer.refresh_from_db()
    assert (customer.timezone, customer.first_name) == ("Europe/Warsaw", "Ana")


def test_persona_is_reassigned_when_an_update_makes_the_rule_match(roles):
    _persona("germans", {"all": [{"field": "country", "op": "eq", "value": "DE"}]}, priority=1)
    _persona("everyone", {"all": [{"field": "email", "op": "is_set"}]}, priority=0)
    customer = CustomerFactory(country="PL")
    client = api("Marketer")
    assert (
        client.patch(f"/api/v1/customers/{customer.pk}/", {"city": "Gdansk"}, format="json").json()["persona"]
        == "everyone"
    )
    response = client.patch(f"/api/v1/customers/{customer.pk}/", {"country": "DE"}, format="json")
    assert response.json()["persona"] == "germans"
    assert Customer.objects.get(pk=customer.pk).persona.slug == "germans"


def test_consents_given_with_an_update_go_through_the_ledger(roles):
    customer = CustomerFactory(consents={"email": "opted_in"})
    response = api("Marketer").patch(
        f"/api/v1/customers/{customer.pk}/", {"consents": {"email": "opted_out"}}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["consent"]["email"] == "opted_out"
    assert customer.consents.count() == 2
    change = customer.activities.get(kind="consent.changed", properties__to="opted_out")
    assert change.properties["from"] == "opted_in"


# --- delete (erasure) ------------------------------------------------------------------


def test_only_an_admin_can_delete_and_delete_erases_the_customer(roles):
    customer = CustomerFactory(email="ana@example.com", first_name="Ana")
    assert api("Marketer").delete(f"/api/v1/customers/{customer.pk}/").status_code == 403
    assert api("Analyst").delete(f"/api/v1/customers/{customer.pk}/").status_code == 403
    admin = api("Admin")
    assert admin.delete(f"/api/v1/customers/{customer.pk}/").status_code == 204
    customer.refresh_from_db()
    assert customer.erased_at is not None and customer.email is None and customer.first_name == ""
    erasure = Erasure.objects.get(customer_id=customer.pk)
    assert erasure.reason == "API delete"
    assert admin.get(f"/api/v1/customers/{customer.pk}/").status_code == 404
    assert admin.delete(f"/api/v1/customers/{customer.pk}/").status_code == 404


# --- upsert service --------------------------------------------------------------------


def test_upsert_matches_by_any_identity_and_reads_national_phones_in_the_country():
    customer = CustomerFactory(email=None, phone="+48600100200", external_id=None)
    found, created = customer_upsert(
        data={"phone": "600-100-200", "country": "PL", "external_id": "crm-7"}, source="api"
    )
    assert (found.pk, created) == (customer.pk, False)
    assert Customer.objects.get(pk=customer.pk).external_id == "crm-7"
    again, created = customer_upsert(data={"external_id": "crm-7", "first_name": "Ola"}, source="api")
    assert (again.pk, created, again.first_name) == (customer.pk, False, "Ola")
    new, created = customer_upsert(data={"email": "new@example.com"}, source="api")
    assert created and new.pk != customer.pk


def test_upsert_matching_two_customers_raises_a_conflict_and_merges_nothing():
    ana = CustomerFactory(email="ana@example.com", external_id="A")
    bo = CustomerFactory(email="bo@example.com", external_id="B")
    with pytest.raises(IdentityConflict) as caught:
        customer_upsert(data={"email": "ana@example.com", "external_id": "B", "city": "Oslo"}, source="api")
    assert caught.value.matches == {"email": ana.pk, "external_id": bo.pk}
    assert f"email matches customer {ana.pk}, external_id matches customer {bo.pk}" in caught.value.messages[0]
    assert Customer.objects.filter(city="Oslo").count() == 0


def test_upsert_never_matches_or_updates_an_erased_customer():
    erased = CustomerFactory(email="gone@example.com", first_name="Gone")
    Customer.objects.filter(pk=erased.pk).update(erased_at=timezone.now())
    with pytest.raises(ValidationError) as caught:
        customer_upsert(data={"email": "gone@example.com", "first_name": "Back"}, source="api")
    assert "erased" in str(caught.value)
    assert Customer.objects.get(pk=erased.pk).first_name == "Gone"


# --- bulk ------------------------------------------------------------------------------


def test_bulk_upsert_reports_each_row_and_stores_only_the_good_ones(roles):
    ana = CustomerFactory(email="ana@example.com", first_name="Ana", attributes={"tier": "gold"})
    bo = CustomerFactory(email="bo@example.com", phone="+48600100999", external_id="B-1", first_name="Bo")
    cy = CustomerFactory(email="cy@example.com", first_name="Cy")
    rows = [
        {"email": "ANA@example.com", "last_name": "Nowak-Kowalska", "attributes": {"size": "M"}},  # 0 updated
        {"email": "new1@example.com", "first_name": "New", "consents": {"email": "opted_in"}},  # 1 created
        {"email": "bad-email"},  # 2 error
        {"email": "cy@example.com", "phone": "+48600100999"},  # 3 conflict (cy, bo)
        {"email": "new1@example.com", "first_name": "Dup"},  # 4 duplicate of row 1
        {"email": "new2@example.com", "timezone": "Mars/Base"},  # 5 error
        {"email": "bo@example.com", "first_name": "Bo"},  # 6 unchanged
        "not an object",  # 7 error
        {"external_id": "B-1", "city": "Sopot"},  # 8 same customer as row 6
        {"first_name": "No identity"},  # 9 error
        {"email": "new3@example.com", "attributes": [1, 2]},  # 10 error
        {"email": "new4@example.com", "consents": {"fax": "opted_in"}},  # 11 error
    ]
    response = api("Marketer").post("/api/v1/customers/bulk", {"customers": rows}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    results = body["results"]
    assert [r["status"] for r in results] == [
        "updated", "created", "error", "conflict", "error", "error", "unchanged", "error", "error", "error",
        "error", "error",
    ]  # fmt: skip
    assert (body["created"], body["updated"], body["unchanged"], body["failed"]) == (1, 1, 1, 9)
    assert [r["index"] for r in results] == list(range(len(rows)))
    assert results[0]["id"] == ana.pk
    assert "email" in results[2]["errors"]
    assert results[3]["conflicts"] == {"email": cy.pk, "phone": bo.pk}
    assert f"phone matches customer {bo.pk}" in results[3]["errors"]["non_field_errors"][0]
    assert "row 1" in results[4]["errors"]["email"][0]
    assert "timezone" in results[5]["errors"]
    assert results[6]["id"] == bo.pk
    assert "row 6" in results[8]["errors"]["non_field_errors"][0]
    assert "non_field_errors" in results[9]["errors"]
    assert "attributes" in results[10]["errors"]
    assert "fax" in results[11]["errors"]["consents"][0]

    ana.refresh_from_db()
    assert ana.last_name == "Nowak-Kowalska" and ana.attributes == {"tier": "gold", "size": "M"}
    new = Customer.objects.get(email="new1@example.com")
    assert new.first_name == "New" and results[1]["id"] == new.pk
    assert consent_current(customer=new, channel="email") == "opted_in"
    assert new.activities.filter(kind="consent.changed").count() == 1
    assert Customer.objects.count() == 4  # nothing from the bad rows
    assert Customer.objects.get(pk=bo.pk).city == "Krakow"
    assert Customer.objects.get(pk=cy.pk).phone != "+48600100999"


def test_bulk_consents_append_to_the_ledger_and_only_changes_reach_the_timeline():
    customer = CustomerFactory(email="ana@example.com", consents={"email": "opted_in", "sms": "opted_in"})
    results = customers_bulk_upsert(
        rows=[{"email": "ana@example.com", "consents": {"email": "opted_in", "sms": "opted_out"}}], source="import"
    )
    assert results[0].status == "updated"
    assert customer.consents.filter(source="import").count() == 4
    assert consent_current(customer=customer, channel="sms") == "opted_out"
    changes = customer.activities.filter(kind="consent.changed").order_by("id")
    assert [(a.channel, a.properties["to"]) for a in changes] == [
        ("email", "opted_in"),
        ("sms", "opted_in"),
        ("sms", "opted_out"),
    ]
    again = customers_bulk_upsert(rows=[{"email": "ana@example.com", "consents": {"sms": "opted_out"}}], source="api")
    assert again[0].status == "unchanged"


def test_bulk_upsert_assigns_personas_to_created_and_updated_customers():
    _persona("germans", {"all": [{"field": "country", "op": "eq", "value": "DE"}]})
    existing = CustomerFactory(email="ana@example.com", country="PL")
    results = customers_bulk_upsert(
        rows=[{"email": "ana@example.com", "country": "DE"}, {"email": "jonas@example.de", "country": "DE"}],
        source="api",
    )
    assert [r.status for r in results] == ["updated", "created"]
    assert Customer.objects.get(pk=existing.pk).persona.slug == "germans"
    assert Customer.objects.get(pk=results[1].id).persona.slug == "germans"


def test_bulk_of_ten_thousand_rows_is_set_based(roles, django_assert_max_num_queries):
    existing = [CustomerFactory(email=f"old{i}@example.com") for i in range(50)]
    rows = [{"email": f"old{i}@example.com", "city": "Gdansk"} for i in range(50)]
    rows += [
        {"email": f"bulk{i}@example.com", "phone": f"+4869{i:07d}", "consents": {"email": "opted_in"}}
        for i in range(9_950)
    ]
    with django_assert_max_num_queries(80):
        results = customers_bulk_upsert(rows=rows, source="api")
    statuses = [r.status for r in results]
    assert statuses.count("updated") == 50 and statuses.count("created") == 9_950
    assert Customer.objects.count() == 10_000
    assert Consent.objects.count() == 9_950
    assert Customer.objects.get(pk=existing[7].pk).city == "Gdansk"


def test_bulk_over_the_limit_is_a_400_saying_the_limit(roles):
    rows = [{"email": f"c{i}@example.com"} for i in range(10_001)]
    response = api("Marketer").post("/api/v1/customers/bulk", {"customers": rows}, format="json")
    assert response.status_code == 400
    assert "At most 10,000" in response.json()["customers"][0]
    assert Customer.objects.count() == 0


@pytest.mark.parametrize("body", [{"customers": {"email": "a@example.com"}}, {"rows": []}, ["a"]])
def test_bulk_with_a_malformed_body_is_a_400(roles, body):
    response = api("Marketer").post("/api/v1/customers/bulk", body, format="json")
    assert response.status_code == 400
    assert "customers" in response.json()


# --- timeline ----------------------------------------------------------------------------


def test_timeline_is_newest_first_paginated_and_filtered(roles):
    customer = CustomerFactory()
    now = timezone.now()
    for hours, kind, channel in [
        (5, "message.sent", "email"),
        (4, "message.opened", "email"),
        (3, "message.sent", "sms"),
        (2, "purchase", ""),
        (1, "message.clicked", "email"),
    ]:
        Activity.objects.create(customer=customer, kind=kind, channel=channel, occurred_at=now - timedelta(hours=hours))
    Activity.objects.create(customer=CustomerFactory(), kind="message.sent", channel="email")
    client = api("Analyst")
    url = f"/api/v1/customers/{customer.pk}/timeline"

    body = client.get(url, {"limit": 2}).json()
    assert body["count"] == 5
    assert [a["kind"] for a in body["results"]] == ["message.clicked", "purchase"]
    assert body["next"]
    assert [a["kind"] for a in client.get(url, {"channel": "email"}).json()["results"]] == [
        "message.clicked",
        "message.opened",
        "message.sent",
    ]
    assert [a["kind"] for a in client.get(url, {"kind": "message.sent"}).json()["results"]] == ["message.sent"] * 2
    window = {
        "since": (now - timedelta(hours=4, minutes=30)).isoformat(),
        "until": (now - timedelta(hours=2)).isoformat(),
    }
    assert [a["kind"] for a in client.get(url, window).json()["results"]] == ["message.sent", "message.opened"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "0001-01-01T00:00:00+14:00"}, "until"),
        ({"channel": "fax"}, "channel"),
    ],
)
def test_timeline_with_bad_filters_is_a_400_naming_them(roles, params, field):
    customer = CustomerFactory()
    response = api("Analyst").get(f"/api/v1/customers/{customer.pk}/timeline", params)
    assert response.status_code == 400
    assert field in response.json()


def test_timeline_of_an_unknown_customer_is_a_404(roles):
    assert api("Analyst").get("/api/v1/customers/999999/timeline").status_code == 404


# --- consents ------------------------------------------------------------------------------


def test_consents_show_current_state_and_the_full_history(roles):
    customer = CustomerFactory(consents={"email": "opted_in", "sms": "opted_in"})
    client = api("Marketer")
    response = client.post(
        f"/api/v1/customers/{customer.pk}/consents",
        {"channel": "sms", "status": "opted_out", "source": "form", "evidence": {"ip": "203.0.113.9"}},
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = client.get(f"/api/v1/customers/{customer.pk}/consents").json()
    assert body["current"] == {"email": "opted_in", "sms": "opted_out", "whatsapp": "unknown", "social": "unknown"}
    assert [(r["channel"], r["status"]) for r in body["history"]] == [
        ("sms", "opted_out"),
        ("sms", "opted_in"),
        ("email", "opted_in"),
    ]
    latest = body["history"][0]
    assert latest["source"] == "form"
    assert latest["evidence"]["ip"] == "203.0.113.9" and latest["evidence"]["recorded_by"]
    assert customer.activities.filter(kind="consent.changed", channel="sms").count() == 2


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"channel": "fax", "status": "opted_in"}, "channel"),
        ({"channel": "email", "status": "maybe"}, "status"),
        ({"channel": "email", "status": "opted_in", "source": "import"}, "source"),
        ({"channel": "email", "status": "opted_in", "evidence": "signed paper"}, "evidence"),
    ],
)
def test_bad_consent_changes_are_a_400_and_the_ledger_is_untouched(roles, payload, field):
    customer = CustomerFactory()
    response = api("Marketer").post(f"/api/v1/customers/{customer.pk}/consents", payload, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert customer.consents.count() == 0


# --- roles ----------------------------------------------------------------------------------


def test_analyst_reads_everything_but_cannot_write_anything(roles):
    customer = CustomerFactory(first_name="Ana")
    client = api("Analyst")
    assert client.get(f"/api/v1/customers/{customer.pk}/").status_code == 200
    assert client.get(f"/api/v1/customers/{customer.pk}/timeline").status_code == 200
    assert client.get(f"/api/v1/customers/{customer.pk}/consents").status_code == 200
    writes = [
        client.patch(f"/api/v1/customers/{customer.pk}/", {"first_name": "X"}, format="json"),
        client.put(f"/api/v1/customers/{customer.pk}/", {"email": "x@example.com"}, format="json"),
        client.delete(f"/api/v1/customers/{customer.pk}/"),
        client.post("/api/v1/customers/bulk", {"customers": [{"email": "x@example.com"}]}, format="json"),
        client.post(
            f"/api/v1/customers/{customer.pk}/consents", {"channel": "email", "status": "opted_in"}, format="json"
        ),
    ]
    assert [r.status_code for r in writes] == [403] * 5
    customer.refresh_from_db()
    assert customer.first_name == "Ana" and customer.consents.count() == 0
    assert Customer.objects.count() == 1


def test_every_new_endpoint_is_in_the_openapi_schema_with_its_errors(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    paths = schema["paths"]
    assert set(paths["/api/v1/customers/{id}/"]) >= {"get", "put", "patch", "delete"}
    assert "409" in paths["/api/v1/customers/"]["post"]["responses"]
    assert "409" in paths["/api/v1/customers/{id}/"]["patch"]["responses"]
    assert "400" in paths["/api/v1/customers/bulk"]["post"]["responses"]
    assert "400" in paths["/api/v1/customers/{id}/timeline"]["get"]["responses"]
    assert set(paths["/api/v1/customers/{id}/consents"]) >= {"get", "post"}
    assert {"200", "201", "400"} <= set(paths["/api/v1/events"]["post"]["responses"])
