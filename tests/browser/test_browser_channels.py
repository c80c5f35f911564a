"""The channels in headless Chromium, after a real send through the sandbox: the outbox shows the email
and the SMS (tabs, search, rendered content), the customer's timeline shows delivered, opened and
clicked, and a failed SMS is retried by hand from the Failed deliveries page."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from campaigns.services import enrollments_dispatch
from channels.models import Message
from channels.services import messages_send
from config.roles import MARKETER
from tests.factories import CustomerFactory, UserFactory, launch, two_channel_campaign

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def sent(sandbox, settings, roles, hold_sends):
    """Ana gets the Spring sale by email (delivered, opened, clicked) and SMS (delivered);
    Bo's SMS goes to a number Twilio refuses, so it fails for good."""
    settings.CHORUS_SANDBOX_PLAYBACK = {
        "email": {"delivered": 1.0, "open": 1.0, "click": 1.0},
        "sms": {"delivered": 1.0},
    }
    UserFactory(username="marta", first_name="Marta", role=MARKETER)
    ana = CustomerFactory(
        first_name="Ana",
        email="ana@example.com",
        phone="+48600100200",
        consents={"email": "opted_in", "sms": "opted_in"},
    )
    bo = CustomerFactory(first_name="Bo", phone="+15005550001", consents={"sms": "opted_in"})
    run = launch(two_channel_campaign(name="Spring sale"))
    while enrollments_dispatch():
        pass
    for queued in hold_sends:  # what the workers would do
        for ids in queued.values():
            messages_send(message_ids=ids)
    hold_sends.clear()
    failed = Message.objects.get(run=run, customer=bo, channel="sms")
    assert failed.status == "failed"
    return ana, failed


def test_outbox_shows_the_email_and_the_sms_and_the_timeline_their_results(page, log_in, sent, tmp_path):
    ana, _ = sent
    log_in()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Sandbox outbox").click()
    rows = page.locator('[data-testid="outbox"] tbody tr')
    expect(rows).to_have_count(2)
    expect(page.locator('tr[data-channel="email"]')).to_contain_text("ana@example.com")
    expect(page.locator('tr[data-channel="email"]')).to_contain_text("Spring sale, Ana")
    expect(page.locator('tr[data-channel="sms"]')).to_contain_text("+48600100200")
    expect(page.locator('tr[data-channel="sms"]')).to_contain_text("Delivered")

    tabs = page.get_by_test_id("outbox-tabs")
    tabs.get_by_role("link", name="SMS").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Ana: 20% off today")
    tabs.get_by_role("link", name="Email").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("ana@example.com")
    tabs.get_by_role("link", name="All").click()
    expect(rows).to_have_count(2)

    page.get_by_role("searchbox", name="Search the outbox").fill("20% off today")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("+48600100200")
    page.get_by_role("searchbox", name="Search the outbox").fill("spring sale")
    expect(rows.first).to_contain_text("ana@example.com")
    expect(rows).to_have_count(1)
    expect(page.get_by_test_id("outbox-tabs").get_by_role("link", name="SMS")).to_have_attribute(
        "href", "?channel=sms&q=spring%20sale"
    )
    page.screenshot(path=tmp_path / "outbox.png", full_page=True)

    rows.first.get_by_role("link", name="ana@example.com").click()
    expect(page.get_by_role("heading", name="Email to ana@example.com")).to_be_visible()
    frame = page.frame_locator('[data-testid="email-html"]')
    expect(frame.get_by_text("Shop now")).to_be_visible()
    expect(page.get_by_test_id("header-list-unsubscribe")).to_contain_text("/u/")
    expect(page.get_by_test_id("playback")).to_contain_text("open, click")
    expect(page.get_by_test_id("webhook-events")).to_contain_text("click")
    page.screenshot(path=tmp_path / "outbox-email.png", full_page=True)

    page.get_by_test_id("customer-link").click()
    expect(page.get_by_role("heading", name=ana.full_name)).to_be_visible()
    timeline = page.get_by_test_id("timeline")
    for kind in ("message.delivered", "message.opened", "message.clicked"):
        expect(timeline.locator(f'tr[data-kind="{kind}"]').first).to_be_visible()
    expect(timeline.locator('tr[data-kind="message.clicked"]')).to_contain_text("url:")
    expect(timeline.locator('tr[data-kind="message.delivered"]')).to_have_count(2)  # email and SMS
    page.screenshot(path=tmp_path / "timeline.png", full_page=True)


def test_a_failed_sms_is_retried_from_the_failed_deliveries_page(page, log_in, sent, hold_sends, tmp_path):
    _, failed = sent
    log_in()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Failed deliveries").click()
    row = page.locator(f'tr[data-message="{failed.pk}"]')
    expect(row).to_contain_text("+15005550001")
    expect(row).to_contain_text("21211")
    expect(row).to_contain_text("Spring sale")
    page.get_by_label("Filter by channel").select_option("email")
    expect(page.locator("#failed-results")).to_contain_text("No failed deliveries match these filters.")
    page.get_by_label("Filter by channel").select_option("sms")
    expect(row).to_be_visible()
    page.screenshot(path=tmp_path / "failed.png", full_page=True)

    row.get_by_role("checkbox").check()
    page.get_by_role("button", name="Retry selected").click()
    expect(page.get_by_role("status")).to_have_text("1 message queued again.")
    expect(row).to_have_count(0)
    failed.refresh_from_db()
    assert (failed.status, failed.rank) == ("queued", 0)
    assert hold_sends == [{"sms": [failed.pk]}]
    page.screenshot(path=tmp_path / "failed-retried.png", full_page=True)
