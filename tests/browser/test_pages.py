"""The htmx pages in headless Chromium: log in, read a customer, watch a campaign, search."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from campaigns.models import Campaign, CampaignRun
from channels.models import Message, SandboxMessage
from config.roles import MARKETER
from customers.models import Activity, Consent
from customers.services import consent_record
from tests.factories import (
    PASSWORD,
    CampaignFactory,
    CustomerFactory,
    SegmentFactory,
    UserFactory,
    two_channel_campaign,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _message(run, step, customer, status, *, sent=True, delivered=False, failed=False, reason=""):
    now = timezone.now()
    return Message.objects.create(
        run=run,
        step=step,
        customer=customer,
        channel=step.channel,
        status=status,
        rank=Message.RANK[status],
        skip_reason=reason,
        to_address=customer.address_for(step.channel) or "",
        sent_at=now - timedelta(minutes=50) if sent else None,
        delivered_at=now - timedelta(minutes=49) if delivered else None,
        failed_at=now - timedelta(minutes=49) if failed else None,
    )


@pytest.fixture
def shop(roles):
    """A marketer, a Polish segment, four customers and a running two-step campaign with results."""
    now = timezone.now()
    user = UserFactory(username="marta", first_name="Marta", last_name="Lis", role=MARKETER)

    segment = SegmentFactory(
        name="Customers in Poland", rules={"all": [{"field": "country", "op": "eq", "value": "PL"}]}
    )
    anna = CustomerFactory(
        first_name="Anna",
        last_name="Kowalska",
        email="anna.kowalska@example.com",
        phone="+48600100200",
        external_id="crm-1042",
        locale="pl-PL",
        attributes={"tier": "gold", "lifetime_value": 1250, "favourite_categories": ["running", "outdoor"]},
    )
    jan = CustomerFactory(first_name="Jan", last_name="Wisniewski", consents={"email": "opted_in"})
    piotr = CustomerFactory(
        first_name="Piotr", last_name="Zielinski", consents={"email": "opted_in", "sms": "opted_in"}
    )
    CustomerFactory(first_name="Maria", last_name="Garcia", country="ES", city="Madrid", timezone="Europe/Madrid")

    month_ago = now - timedelta(days=30)
    consent_record(
        customer=anna,
        channel="email",
        status=Consent.Status.OPTED_IN,
        source=Consent.Source.FORM,
        evidence={"ip": "203.0.113.7"},
        at=month_ago,
    )
    consent_record(
        customer=anna, channel="sms", status=Consent.Status.OPTED_IN, source=Consent.Source.IMPORT, at=month_ago
    )
    consent_record(
        customer=anna,
        channel="whatsapp",
        status=Consent.Status.OPTED_OUT,
        source=Consent.Source.SMS_KEYWORD,
        evidence={"keyword": "STOP"},
        at=now - timedelta(days=3),
    )

    campaign = two_channel_campaign(
        name="Spring sale",
        goal="Bring lapsed runners back with 20% off the spring collection.",
        segment=segment,
        state=Campaign.State.RUNNING,
        scheduled_at=now - timedelta(hours=1),
        launched_at=now - timedelta(hours=1),
        created_by=user,
    )
    email, sms = campaign.steps.get(channel="email"), campaign.steps.get(channel="sms")
    run = CampaignRun.objects.create(campaign=campaign, number=1, started_at=now - timedelta(hours=1))
    # Email: 3 targeted, 3 sent, 2 delivered, 1 opened, 1 clicked, 1 failed (bounced).
    _message(run, email, anna, Message.Status.CLICKED, delivered=True)
    _message(run, email, jan, Message.Status.DELIVERED, delivered=True)
    _message(run, email, piotr, Message.Status.BOUNCED, failed=True)
    # SMS: 3 targeted, 1 skipped (no consent), 1 sent and delivered, 1 still queued.
    _message(run, sms, anna, Message.Status.DELIVERED, delivered=True)
    _message(run, sms, jan, Message.Status.SKIPPED, sent=False, reason=Message.SkipReason.NO_CONSENT)
    queued = _message(run, sms, piotr, Message.Status.QUEUED, sent=False)

    timeline = [
        (50, "message.sent", "email", {"subject": "Spring sale, Anna", "provider": "sendgrid"}),
        (49, "message.delivered", "email", {"response": "250 OK"}),
        (30, "message.opened", "email", {"user_agent": "Mozilla/5.0"}),
        (20, "message.clicked", "email", {"url": "https://shop.example/spring"}),
        (10, "message.delivered", "sms", {"provider": "twilio"}),
    ]
    for minutes, kind, channel, properties in timeline:
        Activity.objects.create(
            customer=anna,
            kind=kind,
            channel=channel,
            campaign=campaign,
            properties=properties,
            occurred_at=now - timedelta(minutes=minutes),
        )
    Activity.objects.create(
        customer=anna,
        kind=Activity.Kind.PURCHASE,
        properties={"order_id": "A-1042", "amount": 189.0, "currency": "PLN"},
        occurred_at=now - timedelta(minutes=5),
    )

    SandboxMessage.objects.create(
        provider="sendgrid",
        provider_message_id="sg-1.sandbox.0",
        to_address=anna.email,
        from_address="hello@northwind.example",
        subject="Spring sale, Anna",
        body="Hi Anna, 20% off everything this week.",
        events_sent_at=now,
        callback_url="http://testserver/webhooks/sendgrid/events",
    )
    SandboxMessage.objects.create(
        provider="twilio",
        provider_message_id="SM" + "0" * 32,
        to_address=anna.phone,
        from_address="+15005550006",
        body="Anna: 20% off today. Reply STOP to opt out",
        callback_url="http://testserver/webhooks/twilio/status",
    )
    return {"user": user, "anna": anna, "campaign": campaign, "segment": segment, "queued_sms": queued}


def test_marketer_logs_in_reads_a_customer_watches_a_campaign_and_searches(page, live_server, shop, tmp_path):
    anna, campaign = shop["anna"], shop["campaign"]

    # Every page needs a login; the form brings us back to the dashboard.
    page.goto("/")
    expect(page).to_have_url(f"{live_server.url}/login/?next=/")
    page.screenshot(path=tmp_path / "login.png", full_page=True)
    page.fill("#id_username", "marta")
    page.fill("#id_password", PASSWORD)
    page.get_by_role("button", name="Sign in").click()

    expect(page).to_have_url(f"{live_server.url}/")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    expect(page.get_by_test_id("user-name")).to_have_text("Marta Lis")
    expect(page.get_by_test_id("customer-total")).to_have_text("4")
    expect(page.get_by_test_id("campaign-total")).to_have_text("1")
    expect(page.get_by_test_id("sent-7d")).to_have_text("4")
    expect(page.get_by_test_id("delivered-7d")).to_have_text("3")
    expect(page.get_by_test_id("totals")).to_contain_text("1 failed or bounced")
    expect(page.get_by_test_id("recent-campaigns")).to_contain_text("Spring sale")
    page.screenshot(path=tmp_path / "dashboard.png", full_page=True)

    # The customer record: identities, consent and the timeline, newest first.
    page.goto(f"/customers/{anna.pk}/")
    expect(page.get_by_role("heading", name="Anna Kowalska")).to_be_visible()
    expect(page.get_by_text("crm-1042")).to_be_visible()
    expect(page.locator('[data-testid="current-consent"] tr[data-channel="whatsapp"]')).to_contain_text("Opted out")
    expect(page.locator('[data-testid="current-consent"] tr[data-channel="email"]')).to_contain_text("Opted in")
    rows = page.locator('[data-testid="timeline"] tbody tr')
    expect(rows).to_have_count(Activity.objects.filter(customer=anna).count())
    expect(rows.first).to_have_attribute("data-kind", "purchase")
    expect(rows.first).to_contain_text("order_id: A-1042")
    clicked = page.locator('tr[data-kind="message.clicked"]')
    expect(clicked).to_contain_text("https://shop.example/spring")
    expect(clicked.get_by_role("link", name="Spring sale")).to_be_visible()
    page.screenshot(path=tmp_path / "customer.png", full_page=True)

    # Filtering the timeline swaps only the timeline.
    page.evaluate("window.__sameDocument = true")
    page.select_option('select[name="channel"]', "sms")
    expect(rows).to_have_count(Activity.objects.filter(customer=anna, channel="sms").count())
    for text in rows.locator("td:nth-child(3)").all_inner_texts():
        assert "SMS" in text
    page.select_option('select[name="kind"]', "message.delivered")
    expect(rows).to_have_count(1)
    assert page.evaluate("window.__sameDocument") is True

    # The campaign page, reached from the timeline: results per channel, refreshed live.
    page.select_option('select[name="kind"]', "")
    page.select_option('select[name="channel"]', "email")
    page.locator('tr[data-kind="message.clicked"]').get_by_role("link", name="Spring sale").click()
    expect(page).to_have_url(f"{live_server.url}/campaigns/{campaign.pk}/")
    expect(page.get_by_test_id("campaign-state")).to_have_text("Running")
    expect(page.get_by_test_id("audience-count")).to_have_text("3")
    expect(page.get_by_test_id("steps")).to_contain_text("Spring sale, {{ customer.first_name }}")
    expected = {
        "email": {"targeted": 3, "skipped": 0, "sent": 3, "delivered": 2, "opened": 1, "clicked": 1, "failed": 1},
        "sms": {"targeted": 3, "skipped": 1, "sent": 1, "delivered": 1, "opened": 0, "failed": 0, "pending": 1},
    }
    for channel, metrics in expected.items():
        for metric, value in metrics.items():
            cell = page.locator(
                f'[data-testid="channel-results"] tr[data-channel="{channel}"] td[data-metric="{metric}"]'
            )
            expect(cell).to_have_text(str(value))
    expect(page.get_by_test_id("schedule-form")).to_have_count(0)  # only drafts can be scheduled
    page.screenshot(path=tmp_path / "campaign.png", full_page=True)

    sms = shop["queued_sms"]
    Message.objects.filter(pk=sms.pk).update(
        status=Message.Status.DELIVERED,
        rank=Message.RANK[Message.Status.DELIVERED],
        sent_at=timezone.now(),
        delivered_at=timezone.now(),
    )
    sms_row = page.locator('[data-testid="channel-results"] tr[data-channel="sms"]')
    expect(sms_row.locator('td[data-metric="delivered"]')).to_have_text("2", timeout=12_000)
    expect(sms_row.locator('td[data-metric="pending"]')).to_have_text("0")

    # The customer list filters as you type, without reloading the page.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Customers").click()
    results = page.locator("#customer-results tbody tr")
    expect(results).to_have_count(4)
    page.evaluate("window.__sameDocument = true")
    page.get_by_role("searchbox", name="Search customers").press_sequentially("kowal", delay=40)
    expect(results).to_have_count(1)
    expect(results.first).to_contain_text("Anna Kowalska")
    expect(page).to_have_url(f"{live_server.url}/customers/?q=kowal")
    expect(page.get_by_test_id("result-count")).to_contain_text("1 customer matching")
    assert page.evaluate("window.__sameDocument") is True
    page.screenshot(path=tmp_path / "customers-search.png", full_page=True)

    page.get_by_role("searchbox", name="Search customers").fill("nobody-matches-this")
    expect(page.locator("#customer-results")).to_contain_text("No customers match")


def test_segment_and_outbox_pages_show_live_data(page, live_server, log_in, shop, tmp_path):
    log_in()

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Segments").click()
    row = page.locator(f'tr[data-segment="{shop["segment"].pk}"]')
    expect(row.get_by_test_id("segment-count")).to_have_text("3")  # loaded by htmx after the page
    row.get_by_role("link", name="Customers in Poland").click()
    expect(page.get_by_test_id("segment-rules")).to_contain_text('"value": "PL"')
    expect(page.locator('[data-testid="segment-sample"] tbody tr')).to_have_count(3)
    expect(page.get_by_test_id("segment-sample")).not_to_contain_text("Maria Garcia")
    page.screenshot(path=tmp_path / "segment.png", full_page=True)

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Sandbox outbox").click()
    outbox = page.locator('[data-testid="outbox"] tbody tr')
    expect(outbox).to_have_count(2)
    expect(outbox.first).to_contain_text("+48600100200")
    expect(outbox.first).to_contain_text("Pending")
    SandboxMessage.objects.create(
        provider="sendgrid",
        provider_message_id="sg-2.sandbox.0",
        to_address="bounce-1@example.com",
        from_address="hello@northwind.example",
        subject="Spring sale",
        body="Hi there",
        outcome="bounce",
    )
    expect(outbox).to_have_count(3, timeout=8_000)  # the outbox polls every 3 s
    expect(outbox.first).to_contain_text("bounce-1@example.com")
    expect(outbox.first).to_contain_text("Bounce")
    page.screenshot(path=tmp_path / "outbox.png", full_page=True)


def test_marketer_schedules_an_approved_campaign_and_sees_why_a_stepless_one_cannot_be(
    page, live_server, log_in, shop, tmp_path
):
    segment = shop["segment"]
    draft = two_channel_campaign(name="Summer preview", segment=segment, state=Campaign.State.APPROVED)
    stepless = CampaignFactory(name="Empty idea", segment=segment, state=Campaign.State.APPROVED)
    log_in()

    page.goto(f"/campaigns/{stepless.pk}/")
    page.get_by_role("button", name="Schedule").click()
    expect(page.get_by_test_id("schedule-errors")).to_contain_text("Add at least one step.")
    expect(page.get_by_test_id("campaign-state")).to_have_text("Approved")
    page.screenshot(path=tmp_path / "campaign-schedule-errors.png", full_page=True)

    page.goto(f"/campaigns/{draft.pk}/")
    at = timezone.localtime() + timedelta(days=3)
    page.fill("#id_at", at.strftime("%Y-%m-%dT%H:%M"))
    page.get_by_role("button", name="Schedule").click()
    expect(page.get_by_test_id("campaign-state")).to_have_text("Scheduled")
    expect(page.get_by_role("status")).to_contain_text("is scheduled for")
    expect(page.get_by_test_id("unschedule-form")).to_be_visible()
    draft.refresh_from_db()
    assert draft.state == Campaign.State.SCHEDULED
    assert draft.scheduled_at == at.replace(second=0, microsecond=0)
    page.screenshot(path=tmp_path / "campaign-scheduled.png", full_page=True)

    page.get_by_role("button", name="Unschedule").click()
    expect(page.get_by_test_id("campaign-state")).to_have_text("Approved")
    expect(page.get_by_test_id("schedule-form")).to_be_visible()
