"""The segment builder in headless Chromium: nested groups, an activity condition, a live count
that follows every change without reloading the page, saving, and "why is this customer in or out?"."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from config.roles import MARKETER
from customers.models import Activity
from segments.models import Segment
from tests.factories import CustomerFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def audience(roles):
    UserFactory(username="marta", first_name="Marta", role=MARKETER)
    now = timezone.now()
    people = {
        # Poland, clicked an email last week: in.
        "anna": CustomerFactory(first_name="Anna", last_name="Kowalska", email="anna@example.com", country="PL"),
        # Poland, gold tier, never clicked: in through the attribute.
        "jan": CustomerFactory(
            first_name="Jan", last_name="Nowak", email="jan@example.com", country="PL", attributes={"tier": "gold"}
        ),
        # Poland, clicked long ago, silver: out.
        "ewa": CustomerFactory(
            first_name="Ewa", last_name="Lis", email="ewa@example.com", country="PL", attributes={"tier": "silver"}
        ),
        # Germany, clicked: out (country).
        "hans": CustomerFactory(first_name="Hans", last_name="Weber", email="hans@example.com", country="DE"),
    }
    for name, days_ago in (("anna", 5), ("ewa", 90), ("hans", 3)):
        Activity.objects.create(
            customer=people[name], kind="message.clicked", channel="email", occurred_at=now - timedelta(days=days_ago)
        )
    return people


def _settled(page) -> None:
    """Wait until htmx has finished swapping and wired up the new controls.

    A control swapped in a moment ago has no htmx listener until the swap settles;
    a person never acts that fast, a test driver does.
    """
    page.wait_for_function("!document.querySelector('.htmx-request, .htmx-settling, .htmx-swapping, .htmx-added')")


def test_marketer_builds_a_nested_segment_with_an_activity_condition_and_asks_why(
    page, live_server, log_in, audience, tmp_path
):
    log_in()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Segments").click()
    page.get_by_test_id("new-segment").click()
    expect(page.get_by_role("heading", name="New segment")).to_be_visible()
    page.evaluate("window.__sameDocument = true")

    count = page.get_by_test_id("preview-count")
    groups = page.get_by_test_id("rule-group")
    conditions = page.get_by_test_id("rule-condition")

    page.get_by_label("Name", exact=True).fill("Engaged Poles")
    # The first condition is "Country is …": typing the value counts the audience.
    # A fresh form is not an error: the preview explains what to do.
    expect(page.get_by_test_id("preview")).to_contain_text("Pick a field and enter a value")
    expect(page.get_by_test_id("preview-error")).to_have_count(0)
    conditions.first.get_by_label("Value").fill("PL")
    expect(count).to_have_text("3")

    # A nested "any" group: clicked an email in the last 30 days, or gold tier.
    groups.first.get_by_role("button", name="+ Group").last.click()
    expect(groups).to_have_count(2)
    nested = groups.nth(1)
    expect(nested.get_by_label("Match all or any")).to_have_value("any")
    _settled(page)
    nested.get_by_label("Condition kind").select_option("activity")
    activity = nested.get_by_test_id("rule-condition").first
    expect(activity.get_by_label("Activity kind")).to_be_visible()
    activity.get_by_label("Activity kind").fill("message.clicked")
    _settled(page)
    activity.get_by_label("Activity channel").select_option("email")
    activity.get_by_label("Within the last days").fill("30")
    expect(count).to_have_text("1")  # only Anna clicked recently and lives in Poland

    nested.get_by_role("button", name="+ Condition").click()
    expect(nested.get_by_test_id("rule-condition")).to_have_count(2)
    tier = nested.get_by_test_id("rule-condition").nth(1)
    _settled(page)
    tier.get_by_label("Condition kind").select_option("attribute")
    tier.get_by_label("Attribute name").fill("tier")
    tier.get_by_label("Value").fill("gold")
    expect(count).to_have_text("2")  # Anna, and Jan through his tier
    expect(page.get_by_test_id("preview-sample")).to_contain_text("Jan Nowak")
    expect(page.get_by_test_id("preview-sample")).not_to_contain_text("Ewa Lis")

    # A bad value is flagged next to its condition, and the count waits for a fix.
    activity.get_by_label("Within the last days").fill("0")
    expect(activity.locator(".sb-error")).to_contain_text("must be at least 1")
    expect(page.get_by_test_id("preview-error")).to_be_visible()
    page.screenshot(path=tmp_path / "segment-builder-error.png", full_page=True)
    activity.get_by_label("Within the last days").fill("30")
    expect(count).to_have_text("2")
    page.locator("details.json-details summary").click()
    expect(page.get_by_test_id("tree-json")).to_contain_text('"activity": "message.clicked"')
    assert page.evaluate("window.__sameDocument") is True  # every change above was htmx, no reload
    page.screenshot(path=tmp_path / "segment-builder.png", full_page=True)

    page.get_by_test_id("save-segment").click()
    segment = Segment.objects.get(name="Engaged Poles")
    expect(page).to_have_url(f"{live_server.url}/segments/{segment.pk}/")
    assert segment.rules == {
        "all": [
            {"field": "country", "op": "eq", "value": "PL"},
            {
                "any": [
                    {"activity": "message.clicked", "channel": "email", "within_days": 30, "performed": True},
                    {"attribute": "tier", "op": "eq", "value": "gold"},
                ]
            },
        ]
    }
    expect(page.get_by_test_id("segment-count")).to_have_text("2")
    expect(page.get_by_test_id("segment-definition")).to_contain_text(
        "Performed message.clicked on Email in the last 30 days"
    )

    # Why is Ewa out? She lives in Poland but clicked too long ago and is silver.
    page.get_by_label("Find a customer to explain").press_sequentially("ewa", delay=30)
    page.get_by_test_id("explain-candidates").get_by_role("button", name="Ewa Lis").click()
    explain = page.get_by_test_id("explain")
    expect(explain).to_have_attribute("data-matched", "false")
    expect(page.get_by_test_id("explain-verdict")).to_contain_text("is not in")
    nodes = explain.get_by_test_id("rule-node")
    expect(nodes.filter(has_text="Country is “PL”").last).to_have_attribute("data-matched", "true")
    expect(nodes.filter(has_text="Performed message.clicked").last).to_have_attribute("data-matched", "false")
    expect(nodes.filter(has_text="Attribute tier is “gold”").last).to_have_attribute("data-matched", "false")
    page.screenshot(path=tmp_path / "segment-why-out.png", full_page=True)

    # And Anna, from the members table: in, through the activity.
    page.get_by_test_id("segment-sample").locator("tr", has_text="Anna Kowalska").get_by_role(
        "button", name="Why?"
    ).click()
    expect(explain).to_have_attribute("data-matched", "true")
    expect(nodes.filter(has_text="Performed message.clicked").last).to_have_attribute("data-matched", "true")
    assert page.evaluate("window.__sameDocument") is not True  # the save did navigate
    page.screenshot(path=tmp_path / "segment-detail.png", full_page=True)


def test_marketer_creates_a_static_list_and_uploads_members(page, live_server, log_in, audience, tmp_path):
    log_in()
    page.goto("/segments/new/")
    page.get_by_label("Name", exact=True).fill("Event guests")
    page.get_by_text("Uploaded list", exact=True).click()
    expect(page.get_by_test_id("builder")).to_be_hidden()
    page.get_by_test_id("save-segment").click()
    segment = Segment.objects.get(name="Event guests")
    assert segment.kind == Segment.Kind.STATIC
    expect(page.get_by_test_id("segment-count")).to_have_text("0")

    csv_file = tmp_path / "guests.csv"
    csv_file.write_text("email\nanna@example.com\nJAN@example.com\nnobody@example.com\nanna@example.com\n")
    page.set_input_files("#id_file", str(csv_file))
    page.get_by_role("button", name="Upload").click()

    report = page.get_by_test_id("upload-report")
    expect(report).to_contain_text("4 rows read")
    expect(report).to_contain_text("2 added")
    expect(report).to_contain_text("1 duplicate ignored")
    expect(page.get_by_test_id("unknown-rows")).to_contain_text("no customer with email nobody@example.com")
    expect(page.get_by_test_id("unknown-rows").locator("tbody tr").first.locator("td").first).to_have_text("4")
    expect(page.get_by_test_id("segment-count")).to_have_text("2")
    expect(page.locator('[data-testid="segment-sample"] tbody tr')).to_have_count(2)
    page.screenshot(path=tmp_path / "segment-static-upload.png", full_page=True)
