"""Personas and the customer record in headless Chromium: list, persona page, form, customer page."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from config.roles import MARKETER
from customers.models import Consent, Customer
from customers.services import consent_record
from customers.services.personas import persona_create
from tests.factories import CustomerFactory, SegmentFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
LOYAL = {"all": [{"field": "orders_count", "op": "gte", "value": 5}]}


@pytest.fixture
def audience(roles):
    UserFactory(username="marta", first_name="Marta", last_name="Lis", role=MARKETER)
    anna = CustomerFactory(
        first_name="Anna",
        last_name="Kowalska",
        email="anna.kowalska@example.com",
        phone="+48600100200",
        external_id="crm-1042",
        mastodon_handle="@anna@mastodon.social",
    )
    for n in range(3):
        CustomerFactory(first_name=f"Casual{n}", country="DE", city="Berlin", timezone="Europe/Berlin")
    Customer.objects.filter(pk=anna.pk).update(
        orders_count=7, lifetime_value=Decimal("1250.00"), last_purchase_at=timezone.now() - timedelta(days=2)
    )
    month_ago = timezone.now() - timedelta(days=30)
    consent_record(customer=anna, channel="email", status="opted_in", source=Consent.Source.IMPORT, at=month_ago)
    consent_record(customer=anna, channel="sms", status="opted_in", source=Consent.Source.IMPORT, at=month_ago)
    consent_record(
        customer=anna,
        channel="sms",
        status="opted_out",
        source=Consent.Source.SMS_KEYWORD,
        evidence={"keyword": "STOP"},
        at=month_ago + timedelta(days=5),
    )
    persona_create(
        data={
            "name": "Loyal regular",
            "rules": LOYAL,
            "priority": 20,
            "description": "Five orders or more: our best customers.",
            "goals": "Early access to new collections.",
            "pain_points": "Discounts that reward newcomers more than them.",
            "tone_of_voice": "Warm, personal, insider.",
            "preferred_channels": ["email", "sms"],
        }
    )
    SegmentFactory(name="Customers in Poland")
    return {"anna": anna}


def test_marketer_browses_personas_and_reads_a_customer_record(page, live_server, log_in, audience, tmp_path):
    anna = audience["anna"]
    log_in()
    expect(page.get_by_test_id("user-name")).to_have_text("Marta Lis")

    # The persona list: member counts and shares.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Personas").click()
    expect(page.get_by_role("heading", name="Personas", exact=True)).to_be_visible()
    card = page.locator('[data-persona="loyal-regular"]')
    expect(card.get_by_test_id("member-count")).to_have_text("1")
    expect(card).to_contain_text("25.0% of customers")
    expect(page.get_by_test_id("unassigned")).to_contain_text("3 of 4 customers match no persona")
    page.screenshot(path=tmp_path / "personas.png", full_page=True)

    # One persona: its definition, readable rules, members and channel engagement (loaded by htmx).
    card.get_by_role("link", name="Loyal regular").click()
    expect(page.get_by_role("heading", name="Loyal regular")).to_be_visible()
    expect(page.get_by_test_id("persona-count")).to_have_text("1")
    expect(page.get_by_test_id("persona-definition")).to_contain_text("Early access to new collections.")
    expect(page.get_by_test_id("persona-rules")).to_contain_text("Orders ≥ 5")
    engagement = page.get_by_test_id("persona-engagement")
    expect(engagement.locator('tr[data-channel="email"] td[data-metric="reachable"]')).to_have_text("1")
    expect(engagement.locator('tr[data-channel="sms"] td[data-metric="reachable"]')).to_have_text("0")
    expect(page.get_by_test_id("persona-sample")).to_contain_text("Anna Kowalska")
    page.screenshot(path=tmp_path / "persona.png", full_page=True)

    # The customer: identities, persona badge, stats, consent with its ledger.
    page.get_by_test_id("persona-sample").get_by_role("link", name="Anna Kowalska").click()
    expect(page.get_by_role("heading", name="Anna Kowalska")).to_be_visible()
    expect(page.get_by_test_id("persona-badge")).to_have_text("Loyal regular")
    expect(page.get_by_test_id("identities")).to_contain_text("@anna@mastodon.social")
    expect(page.locator('[data-stat="orders_count"]')).to_have_text("7")
    expect(page.locator('[data-testid="current-consent"] tr[data-channel="sms"]')).to_contain_text("Opted out")
    ledger = page.get_by_test_id("consent-history")
    expect(ledger).to_be_hidden()
    page.get_by_text("Full ledger history").click()
    expect(ledger.locator("tbody tr")).to_have_count(3)
    expect(ledger.locator("tbody tr").first).to_contain_text("keyword: STOP")
    expect(page.get_by_test_id("customer-segments")).to_contain_text("Customers in Poland")

    # Why in/out? swaps the segment's explanation in without leaving the page.
    page.evaluate("window.__sameDocument = true")
    page.get_by_test_id("why-picker").select_option(label="Customers in Poland")
    expect(page.locator("#why-result")).not_to_be_empty()
    assert page.evaluate("window.__sameDocument") is True
    page.screenshot(path=tmp_path / "customer.png", full_page=True)

    # The persona badge leads back to the persona.
    page.get_by_test_id("persona-badge").click()
    expect(page).to_have_url(f"{live_server.url}/customers/personas/loyal-regular/")
    assert anna.pk


def test_marketer_creates_a_persona_with_rules_checked_as_they_type(page, live_server, log_in, audience, tmp_path):
    log_in()
    page.goto("/customers/personas/new/")

    page.get_by_label("Name").fill("Berliners")
    rules = page.get_by_label("Rule tree (JSON)")
    rules.fill('{"all": [{"field": "city", "op": "eq"}]}')
    expect(page.get_by_test_id("rules-check")).to_contain_text("all[0]")
    rules.fill('{"all": [{"field": "city", "op": "eq", "value": "Berlin"}]}')
    expect(page.get_by_test_id("rules-check")).to_contain_text("3 customers match")
    page.get_by_label("SMS").check()
    page.screenshot(path=tmp_path / "persona-form.png", full_page=True)
    page.get_by_role("button", name="Create persona").click()

    expect(page).to_have_url(f"{live_server.url}/customers/personas/berliners/")
    expect(page.get_by_role("status").first).to_contain_text("3 customers in it now")
    expect(page.get_by_test_id("persona-count")).to_have_text("3")
    page.goto("/customers/?persona=" + str(Customer.objects.filter(city="Berlin").first().persona_id))
    expect(page.locator("#customer-results tbody tr")).to_have_count(3)
