"""The REST API: token auth, JSON errors naming the field, read-only Analysts."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from customers.models import Customer
from customers.services import consent_current
from tests.factories import CustomerFactory, two_channel_campaign
from tests.factories import api_client as api

pytestmark = pytest.mark.django_db


def test_anonymous_requests_are_refused_with_json():
    response = APIClient().get("/api/v1/customers/")
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"


def test_marketer_creates_a_customer_with_consent(roles):
    response = api("Marketer").post(
        "/api/v1/customers/",
        {
            "email": "  Ana@Example.COM ",
            "phone": "+48600100200",
            "first_name": "Ana",
            "consents": {"email": "opted_in"},
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    customer = Customer.objects.get(pk=response.json()["id"])
    assert customer.email == "ana@example.com"
    assert consent_current(customer=customer, channel="email") == "opted_in"


@pytest.mark.parametrize(
    ("payload", "field", "needle"),
    [
        ({"email": "not-an-email"}, "email", "valid email"),
        ({"phone": "600100200"}, "phone", "no country code (start with +)"),
        ({"email": "a@example.com", "timezone": "Mars/Olympus"}, "timezone", "IANA"),
        ({"email": "a@example.com", "consents": {"fax": "opted_in"}}, "consents", "fax"),
        ({"first_name": "Nobody"}, "non_field_errors", "at least one of email, phone, external_id"),
    ],
)
def test_bad_customer_payloads_get_400_naming_the_field(roles, payload, field, needle):
    response = api("Marketer").post("/api/v1/customers/", payload, format="json")
    assert response.status_code == 400
    body = response.json()
    assert needle in str(body[field])
    assert Customer.objects.count() == 0


def test_duplicate_email_is_a_409_naming_the_customer_and_the_existing_one_is_untouched(roles):
    ana = CustomerFactory(email="ana@example.com", first_name="Ana")
    response = api("Marketer").post(
        "/api/v1/customers/", {"email": "ana@example.com", "first_name": "X"}, format="json"
    )
    assert response.status_code == 409
    assert response.json()["conflicts"] == {"email": ana.pk}
    assert Customer.objects.get(email="ana@example.com").first_name == "Ana"


def test_lookup_by_email(roles):
    CustomerFactory(email="ana@example.com")
    CustomerFactory(email="bo@example.com")
    response = api("Analyst").get("/api/v1/customers/", {"email": "ANA@example.com"})
    assert [c["email"] for c in response.json()["results"]] == ["ana@example.com"]


def test_analyst_reads_but_cannot_write(roles):
    client = api("Analyst")
    assert client.get("/api/v1/customers/").status_code == 200
    assert client.get("/api/v1/campaigns/").status_code == 200
    response = client.post("/api/v1/customers/", {"email": "x@example.com"}, format="json")
    assert response.status_code == 403
    assert Customer.objects.count() == 0


def test_campaign_detail_shows_steps_and_per_channel_stats(roles):
    campaign = two_channel_campaign()
    body = api("Analyst").get(f"/api/v1/campaigns/{campaign.pk}/").json()
    assert [s["channel"] for s in body["steps"]] == ["email", "sms"]
    assert body["state"] == "draft"
    assert body["stats"] == []


def test_unknown_campaign_is_a_json_404(roles):
    response = api("Analyst").get("/api/v1/campaigns/999999/")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


def test_openapi_schema_and_docs_are_served(client):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/customers/" in schema.content
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"cdn." not in docs.content  # Swagger UI is served from our own static files
