"""The template editor and the side-by-side preview in headless Chromium: a banned phrase typed
into an email block shows up as a brand-check finding without saving, goes away when fixed, a
persona variant is saved, and the preview switches between the default content and the persona's."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from campaigns.models import TemplateVariant
from config.roles import MARKETER
from customers.models import Persona
from tests.factories import BrandFactory, TemplateFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def content(roles):
    UserFactory(username="marta", first_name="Marta", role=MARKETER)
    brand = BrandFactory(banned_phrases="guaranteed\nact now", voice_and_tone="Warm and direct; no hype.")
    persona = Persona.objects.create(
        name="Bargain hunters",
        slug="bargain-hunters",
        tone_of_voice="Lead with the price.",
        rules={"all": [{"field": "country", "op": "eq", "value": "DE"}]},
    )
    template = TemplateFactory(brand=brand, name="Spring sale email")
    return template, persona


def _settled(page) -> None:
    """Wait until htmx has finished swapping (a freshly swapped control has no listener until then)."""
    page.wait_for_function("!document.querySelector('.htmx-request, .htmx-settling, .htmx-swapping, .htmx-added')")


def test_marketer_fixes_a_banned_phrase_and_previews_two_personas(page, live_server, log_in, content, tmp_path):
    template, persona = content
    log_in()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Templates").click()
    page.get_by_role("link", name="Spring sale email").click()
    expect(page.get_by_role("heading", name="Spring sale email")).to_be_visible()
    expect(page.get_by_test_id("voice-and-tone")).to_contain_text("Warm and direct; no hype.")
    page.evaluate("window.__sameDocument = true")

    checks = page.get_by_test_id("checks")
    findings = checks.get_by_test_id("finding")
    expect(checks.get_by_test_id("checks-ok")).to_be_visible()

    # A banned phrase typed into the second block is flagged, naming the block, without saving.
    text = page.get_by_label("Block 2 (text): Text")
    text.fill("Hi {{ customer.first_name }}, guaranteed savings on everything this week.")
    expect(findings).to_have_count(1)
    expect(findings.first).to_contain_text("Banned phrase “guaranteed”")
    expect(findings.first).to_contain_text("block 2 (text)")
    expect(checks.get_by_test_id("checks-errors")).to_have_text("1 error")
    template.refresh_from_db()
    assert "guaranteed" not in template.blocks[1]["text"]
    page.screenshot(path=tmp_path / "editor-finding.png", full_page=True)

    # Fixing it makes the finding go away.
    text.fill("Hi {{ customer.first_name }}, 20% off everything this week.")
    expect(findings).to_have_count(0)
    expect(checks.get_by_test_id("checks-ok")).to_be_visible()

    # Adding a block re-renders the block list and re-runs the checks: an empty button cannot be saved.
    default = page.get_by_test_id("panel-default")
    default.get_by_role("button", name="+ Button").click()
    expect(default.get_by_test_id("block")).to_have_count(4)
    expect(checks.get_by_test_id("problem").first).to_contain_text("Block 4 (button), text")
    _settled(page)
    default.get_by_role("button", name="Remove Block 4 (button)").click()
    expect(default.get_by_test_id("block")).to_have_count(3)
    expect(checks.get_by_test_id("problem")).to_have_count(0)
    expect(checks.get_by_test_id("checks-ok")).to_be_visible()
    _settled(page)

    # A subject just for bargain hunters, in the persona's tab.
    page.get_by_role("tab", name="Bargain hunters").click()
    panel = page.get_by_test_id(f"panel-{persona.slug}")
    expect(panel).to_be_visible()
    expect(panel).to_contain_text("Lead with the price.")
    panel.get_by_label("Subject", exact=True).fill("Prices down 20%, {{ customer.first_name }}")
    _settled(page)
    expect(checks.get_by_test_id("checks-ok")).to_be_visible()
    assert page.evaluate("window.__sameDocument") is True  # every check above was htmx, no reload

    page.get_by_test_id("save-template").click()
    expect(page.get_by_role("status")).to_contain_text("Saved “Spring sale email”")
    template.refresh_from_db()
    assert template.blocks[1]["text"] == "Hi {{ customer.first_name }}, 20% off everything this week."
    assert TemplateVariant.objects.get(template=template, persona=persona).subject == (
        "Prices down 20%, {{ customer.first_name }}"
    )

    # The side-by-side preview: the default content, then the persona's.
    page.get_by_test_id("open-preview").click()
    board = page.get_by_test_id("preview-board")
    subject = board.get_by_test_id("preview-subject")
    expect(subject).to_have_text("Spring sale, Alex")
    expect(board.get_by_test_id("email-mobile")).to_have_attribute("width", "375")
    expect(board.get_by_test_id("email-desktop")).to_have_attribute("width", "640")
    mobile = page.frame_locator("[data-testid=email-mobile]")
    expect(mobile.get_by_text("Hi Alex, 20% off everything this week.")).to_be_visible()
    expect(board.get_by_test_id("finding-count")).to_have_text("Checks pass")

    page.get_by_test_id("preview-persona").select_option(persona.slug)
    expect(subject).to_have_text("Prices down 20%, Alex")
    expect(page.get_by_test_id("preview-effective-persona")).to_contain_text("Bargain hunters")
    expect(page).to_have_url(f"{live_server.url}/templates/{template.pk}/preview/?persona={persona.slug}")
    _settled(page)
    mobile = page.frame_locator("[data-testid=email-mobile]")
    expect(mobile.get_by_text("Hi Alex, 20% off everything this week.")).to_be_visible()

    shot = tmp_path / "preview-bargain-hunters.png"
    page.screenshot(path=shot, full_page=True)
    data = shot.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000

    page.get_by_test_id("preview-persona").select_option("")
    expect(subject).to_have_text("Spring sale, Alex")
