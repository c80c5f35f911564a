"""GDPR: export everything about a person; erase it from every table, keeping only hashes and an audit record."""

from __future__ import annotations

import json

import pytest
from django.apps import apps
from django.contrib.auth.context_processors import PermWrapper
from django.core import serializers
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.template.loader import render_to_string
from django.urls import reverse
from rest_framework.test import APIClient

from campaigns.models import CampaignRun, Enrollment
from campaigns.services import enrollments_dispatch
from channels.models import Message, ProviderEvent, SandboxMessage, Suppression
from channels.services import messages_send
from config.roles import ADMIN, MARKETER
from customers.models import Activity, Consent, Customer, Erasure, Persona
from customers.services import consent_record
from customers.services.privacy import customer_erase, customer_export
from segments.models import Segment, SegmentMember
from tests.factories import (
    CustomerFactory,
    SegmentFactory,
    UserFactory,
    email_only_campaign,
    launch,
    two_channel_campaign,
)
from tests.factories import api_client as api

EMAIL, PHONE = "zofia.kowalczyk@example.org", "+48601234567"
FIRST, LAST, CITY = "Zofia", "Kowalczykówna", "Zakopane"
MASTODON, BLUESKY = "@zofiak@mastodon.social", "zofiak.bsky.social"
PERSONAL = (EMAIL, PHONE, FIRST, LAST, CITY, MASTODON, BLUESKY, "601234567", "crm-881-zk")


@pytest.fixture
def zofia(roles) -> Customer:
    """A customer with personal data in every table Chorus has."""
    customer = CustomerFactory(
        email=EMAIL,
        phone=PHONE,
        external_id="crm-881-zk",
        first_name=FIRST,
        last_name=LAST,
        city=CITY,
        locale="pl-PL",
        mastodon_handle=MASTODON,
        bluesky_handle=BLUESKY,
        attributes={"nickname": "zofia the brave", "tier": "gold"},
    )
    consent_record(customer=customer, channel="email", status="opted_in", source="form", evidence={"ip": "203.0.113.7"})
    consent_record(customer=customer, channel="sms", status="opted_in", source="import")
    customer.persona = Persona.objects.create(name="Mountain people", slug="mountain", rules={})
    customer.save(update_fields=["persona"])
    Activity.objects.create(customer=customer, kind="purchase", properties={"amount": "99.90", "note": f"{FIRST}"})

    campaign = two_channel_campaign(name="Winter sale")
    run = CampaignRun.objects.create(campaign=campaign, number=1)
    email_step, sms_step = campaign.steps.order_by("position")
    Enrollment.objects.create(run=run, customer=customer, step_position=1)
    email = Message.objects.create(
        run=run,
        step=email_step,
        customer=customer,
        channel="email",
        status="delivered",
        to_address=EMAIL,
        subject=f"Winter sale, {FIRST}",
        body=f"Hi {FIRST} {LAST}, see you in {CITY}.",
        provider="sendgrid",
        provider_message_id="sg-0001",
    )
    sms = Message.objects.create(
        run=run,
        step=sms_step,
        customer=customer,
        channel="sms",
        status="failed",
        to_address=PHONE,
        error=f"21610: The 'To' number {PHONE} is unsubscribed.",
    )
    event = ProviderEvent.objects.create(
        provider="sendgrid",
        kind="status",
        dedupe_key="sg-event-1",
        payload={"email": EMAIL, "event": "delivered"},
        message=email,
    )
    Activity.objects.create(
        customer=customer,
        kind="message.delivered",
        channel="email",
        campaign=campaign,
        message=email,
        properties={"provider_event": event.pk, "to": EMAIL},
    )
    # An inbound reply: tied to the customer only through the timeline.
    inbound = ProviderEvent.objects.create(
        provider="twilio",
        kind="inbound",
        dedupe_key="SM-inbound-1",
        payload={"From": PHONE, "Body": f"Thanks, {FIRST} here"},
    )
    Activity.objects.create(
        customer=customer,
        kind="message.replied",
        channel="sms",
        properties={"body": f"Thanks, {FIRST} here", "provider_event": inbound.pk},
    )
    SandboxMessage.objects.create(
        provider="sendgrid",
        provider_message_id="sg-0001.sandbox.0",
        to_address=EMAIL,
        subject=f"Winter sale, {FIRST}",
        body=f"Hi {FIRST} {LAST}",
        request={"personalizations": [{"to": [{"email": EMAIL}]}]},
    )
    SandboxMessage.objects.create(provider="twilio", provider_message_id="SM0001", to_address=PHONE, body="Hi")
    static = Segment.objects.create(name="Hand-picked", kind="static")
    SegmentMember.objects.create(segment=static, customer=customer)
    SegmentFactory(name="Poland", rules={"all": [{"field": "country", "op": "eq", "value": "PL"}]})
    customer.refresh_from_db()
    customer.test_refs = {"email": email, "sms": sms, "event": event, "inbound": inbound, "run": run}
    return customer


def _everything() -> str:
    """Every row of every Chorus table, as text."""
    rows = [
        serializers.serialize("python", model.objects.all())
        for label in ("customers", "channels", "segments", "campaigns")
        for model in apps.get_app_config(label).get_models()
    ]
    return json.dumps(rows, ensure_ascii=False, cls=DjangoJSONEncoder)


# --- export ------------------------------------------------------------------------


@pytest.mark.django_db
def test_export_holds_data_from_every_table_and_is_plain_json(zofia):
    data = customer_export(customer=zofia)
    text = json.dumps(data)  # no custom encoder needed
    refs = zofia.test_refs
    assert data["customer"]["identities"]["email"] == EMAIL
    assert data["customer"]["identities"]["mastodon_handle"] == MASTODON
    assert data["customer"]["profile"]["last_name"] == LAST
    assert data["customer"]["attributes"]["nickname"] == "zofia the brave"
    assert data["customer"]["persona"]["slug"] == "mountain"
    assert "lifetime_value" in data["customer"]["stats"]
    assert [c["evidence"] for c in data["consents"] if c["channel"] == "email"] == [{"ip": "203.0.113.7"}]
    assert {a["kind"] for a in data["activities"]} >= {"purchase", "message.delivered", "message.replied"}
    by_id = {m["id"]: m for m in data["messages"]}
    email = by_id[refs["email"].pk]
    assert (email["campaign"]["name"], email["subject"], email["status"]) == (
        "Winter sale",
        f"Winter sale, {FIRST}",
        "delivered",
    )
    assert email["body"].startswith(f"Hi {FIRST}")
    assert [e["payload"] for e in email["provider_events"]] == [{"email": EMAIL, "event": "delivered"}]
    assert by_id[refs["sms"].pk]["error"].startswith("21610")
    assert [e["payload"]["From"] for e in data["provider_events"]] == [PHONE]
    assert [(e["run__campaign__name"], e["step_position"]) for e in data["enrollments"]] == [("Winter sale", 1)]
    assert [s["segment__name"] for s in data["segments"]["static"]] == ["Hand-picked"]
    assert "Poland" in [s["name"] for s in data["segments"]["now"]]
    assert {m["to_address"] for m in data["sandbox_outbox"]} == {EMAIL, PHONE}
    assert data["erasure"] == {"erased": False, "erased_at": None, "erased_by": None, "reason": ""}
    assert "203.0.113.7" in text


@pytest.mark.django_db
def test_export_button_downloads_customer_json(client, zofia):
    client.force_login(UserFactory(username="mia", role=MARKETER))
    response = client.get(reverse("customers:export", args=[zofia.pk]))
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="customer-{zofia.pk}.json"'
    assert json.loads(response.content)["customer"]["identities"]["email"] == EMAIL


@pytest.mark.django_db
def test_api_export_returns_the_document(zofia):
    response = api(MARKETER).get(f"/api/v1/customers/{zofia.pk}/export")
    assert response.status_code == 200
    assert response.json()["customer"]["id"] == zofia.pk
    assert api(MARKETER).get("/api/v1/customers/987654/export").status_code == 404


@pytest.mark.django_db
def test_export_needs_the_view_permission(zofia):
    client = APIClient()
    user = UserFactory(username="nobody")  # no role
    client.force_authenticate(user)
    assert client.get(f"/api/v1/customers/{zofia.pk}/export").status_code == 403


# --- erase -------------------------------------------------------------------------


@pytest.mark.django_db
def test_after_erasure_no_table_holds_the_persons_data(zofia):
    before = _everything()
    assert all(value in before for value in (EMAIL, PHONE, LAST, CITY, "203.0.113.7"))
    admin = UserFactory(username="ola", role=ADMIN)

    erasure = customer_erase(customer=zofia, by=admin, reason="Request by email, ticket 4711")

    after = _everything()
    for value in (*PERSONAL, "203.0.113.7", "zofia the brave"):
        assert value.lower() not in after.lower(), value
    assert (erasure.customer_id, erasure.erased_by, erasure.reason) == (
        zofia.pk,
        admin,
        "Request by email, ticket 4711",
    )
    assert erasure.suppressed == 4  # email, phone, Mastodon and Bluesky handles
    assert Erasure.objects.filter(customer_id=zofia.pk).count() == 1


@pytest.mark.django_db
def test_erasure_keeps_the_anonymous_skeleton_reports_count_on(zofia):
    refs = zofia.test_refs
    customer_erase(customer=zofia, by=None)
    zofia.refresh_from_db()
    assert zofia.erased_at is not None
    assert (zofia.email, zofia.phone, zofia.persona_id, zofia.attributes) == (None, None, None, {})
    # Messages and activities stay (with their status, kind and campaign) so reports keep their counts.
    email = Message.objects.get(pk=refs["email"].pk)
    assert (email.status, email.to_address, email.subject, email.body) == ("delivered", "", "", "")
    assert Message.objects.get(pk=refs["sms"].pk).error == "21610: The 'To' number [erased] is unsubscribed."
    delivered = Activity.objects.get(customer=zofia, kind="message.delivered")
    assert (delivered.channel, delivered.campaign_id, delivered.properties) == ("email", refs["run"].campaign_id, {})
    assert ProviderEvent.objects.get(pk=refs["event"].pk).payload == {"erased": True}
    assert ProviderEvent.objects.get(pk=refs["inbound"].pk).payload == {"erased": True}
    assert Consent.objects.filter(customer=zofia).count() == 2
    assert not SegmentMember.objects.filter(customer=zofia).exists()
    assert Enrollment.objects.get(customer=zofia).state == "exited"
    hashes = set(Suppression.objects.filter(reason="erasure").values_list("address_hash", flat=True))
    assert hashes == {Suppression.address_hash_for(a) for a in (EMAIL, PHONE, MASTODON, BLUESKY)}


@pytest.mark.django_db
def test_erasing_twice_is_a_clear_error_and_records_one_erasure(zofia):
    customer_erase(customer=zofia, by=None)
    with pytest.raises(ValidationError, match="already erased"):
        customer_erase(customer=zofia, by=None)
    assert Erasure.objects.filter(customer_id=zofia.pk).count() == 1


@pytest.mark.django_db
def test_export_of_an_erased_customer_shows_the_erasure_and_no_personal_data(zofia):
    customer_erase(customer=zofia, by=UserFactory(username="ola", role=ADMIN), reason="GDPR request")
    data = customer_export(customer=zofia)
    assert data["erasure"]["erased"] is True
    assert (data["erasure"]["erased_by"], data["erasure"]["reason"]) == ("ola", "GDPR request")
    text = json.dumps(data).lower()
    assert not any(value.lower() in text for value in PERSONAL)


@pytest.mark.django_db
def test_api_erase_by_admin_returns_the_erasure_record(zofia):
    response = api(ADMIN).post(f"/api/v1/customers/{zofia.pk}/erase", {"reason": "ticket 4711"}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["customer_id"], body["reason"], body["suppressed"]) == (zofia.pk, "ticket 4711", 4)
    assert body["erased_by"]
    again = api(ADMIN).post(f"/api/v1/customers/{zofia.pk}/erase", {}, format="json")
    assert again.status_code == 400
    assert "already erased" in str(again.json())


@pytest.mark.django_db
def test_api_erase_with_a_too_long_reason_is_400_and_erases_nothing(zofia):
    response = api(ADMIN).post(f"/api/v1/customers/{zofia.pk}/erase", {"reason": "x" * 201}, format="json")
    assert response.status_code == 400
    assert "reason" in response.json()
    zofia.refresh_from_db()
    assert zofia.erased_at is None and zofia.email == EMAIL


@pytest.mark.django_db
def test_marketer_gets_403_on_erase_through_the_api_and_nothing_changes(zofia):
    response = api(MARKETER).post(f"/api/v1/customers/{zofia.pk}/erase", {}, format="json")
    assert response.status_code == 403
    zofia.refresh_from_db()
    assert zofia.erased_at is None and zofia.email == EMAIL
    assert not Erasure.objects.exists()


@pytest.mark.django_db
def test_marketer_gets_403_on_the_erase_page_and_sees_no_erase_button(client, zofia):
    marketer = UserFactory(username="mia", role=MARKETER)
    client.force_login(marketer)
    url = reverse("customers:erase", args=[zofia.pk])
    assert client.get(url).status_code == 403
    assert client.post(url, {"confirm": str(zofia.pk)}).status_code == 403
    zofia.refresh_from_db()
    assert zofia.erased_at is None
    actions = render_to_string("customers/_privacy_actions.html", {"customer": zofia, "perms": PermWrapper(marketer)})
    assert 'data-testid="export-button"' in actions and 'data-testid="merge-button"' in actions
    assert 'data-testid="erase-button"' not in actions


@pytest.mark.django_db
def test_erase_page_needs_the_customers_id_typed_to_confirm(client, zofia):
    client.force_login(UserFactory(username="ola", role=ADMIN))
    url = reverse("customers:erase", args=[zofia.pk])
    assert client.get(url).status_code == 200
    wrong = client.post(url, {"confirm": str(zofia.pk + 1), "reason": "ticket 1"})
    assert wrong.status_code == 400
    assert f"Type {zofia.pk}" in wrong.content.decode()
    zofia.refresh_from_db()
    assert zofia.erased_at is None


@pytest.mark.django_db
def test_admin_erases_from_the_page_and_the_customer_page_says_who_and_when(client, zofia):
    admin = UserFactory(username="ola", role=ADMIN)
    client.force_login(admin)
    response = client.post(reverse("customers:erase", args=[zofia.pk]), {"confirm": str(zofia.pk), "reason": "GDPR"})
    assert response.status_code == 302
    assert response["Location"] == reverse("customers:detail", args=[zofia.pk])
    assert Erasure.objects.get(customer_id=zofia.pk).erased_by == admin
    zofia.refresh_from_db()
    actions = render_to_string("customers/_privacy_actions.html", {"customer": zofia, "perms": PermWrapper(admin)})
    assert "Erased on" in actions and "by ola" in actions
    assert 'data-testid="erase-button"' not in actions
    page = client.get(response["Location"]).content.decode()
    assert "Erased on" in page and "by ola" in page
    assert EMAIL not in page


# --- never messaged again ----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_recreated_customer_with_an_erased_address_is_skipped_as_suppressed(sandbox):
    old = CustomerFactory(email=EMAIL, consents={"email": "opted_in"})
    customer_erase(customer=old, by=None)
    # Re-imported later, with fresh consent: the hash on the suppression list still matches.
    again = CustomerFactory(email=EMAIL, consents={"email": "opted_in"})
    other = CustomerFactory(consents={"email": "opted_in"})
    run = launch(email_only_campaign())
    while enrollments_dispatch():
        pass
    skipped = Message.objects.get(run=run, customer=again)
    assert (skipped.status, skipped.skip_reason) == ("skipped", "suppressed")
    assert Activity.objects.filter(customer=again, kind="message.skipped", properties={"reason": "suppressed"}).exists()
    assert Message.objects.get(run=run, customer=other).status == "delivered"
    assert list(SandboxMessage.objects.values_list("to_address", flat=True)) == [other.email]


@pytest.mark.django_db(transaction=True)
def test_a_customer_erased_between_dispatch_and_send_is_skipped_at_send(sandbox, hold_sends):
    zofia = CustomerFactory(email=EMAIL, consents={"email": "opted_in"})
    run = launch(email_only_campaign())
    enrollments_dispatch()
    message = Message.objects.get(run=run, customer=zofia)
    assert message.status == "queued"
    customer_erase(customer=zofia, by=None)
    messages_send(message_ids=[message.pk])
    message.refresh_from_db()
    assert (message.status, message.skip_reason, message.to_address) == ("skipped", "erased", "")
    assert Activity.objects.filter(message=message, kind="message.skipped", properties={"reason": "erased"}).exists()
    assert not SandboxMessage.objects.exists()
