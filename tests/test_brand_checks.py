"""Brand checks: every rule has a test that triggers it and one that passes.

The rule tests build ``RenderedContent`` by hand, so each rule is tested alone;
the last tests go through the real renderer (templates, persona variants,
campaign steps).
"""

from __future__ import annotations

import time

import pytest

from campaigns.content.checks import (
    ALT_TEXT,
    BANNED_PHRASE,
    ERROR,
    LEGAL_FOOTER,
    LENGTH,
    LINK_DOMAIN,
    LIQUID_ERROR,
    REQUIRED_PHRASE,
    SENDER,
    SMS_ENCODING,
    UNKNOWN_VARIABLE,
    UNSUBSCRIBE,
    WARNING,
    Finding,
    check_campaign,
    check_content,
    check_template,
    graphemes,
    mastodon_length,
)
from campaigns.content.liquid import ContentError, VariableUse
from campaigns.content.render import RenderedContent, SmsInfo
from campaigns.models import RequiredPhrase, TemplateVariant
from customers.models import Persona
from tests.factories import BrandFactory, CampaignFactory, StepFactory, TemplateFactory, two_channel_campaign

pytestmark = pytest.mark.django_db

UNSUBSCRIBE_URL = "http://127.0.0.1:8000/u/signed-token"
FOOTER = (
    f'<p style="font-size:12px"><a href="{UNSUBSCRIBE_URL}">Unsubscribe</a> · '
    "Northwind Outfitters Sp. z o.o.<br>ul. Floriańska 1, 31-019 Kraków, Poland</p>"
)


def _html(body: str = "<p>Hi Alex, 20% off this week.</p>", footer: str = FOOTER) -> str:
    return (
        "<!doctype html><html><head><title>Spring sale</title><style>p{margin:0}</style></head><body>"
        '<div style="display:none;max-height:0">20% off everything</div>'
        f'<table role="presentation"><tr><td>{body}</td></tr><tr><td>{footer}</td></tr></table></body></html>'
    )


def _email(**overrides) -> RenderedContent:
    fields = {
        "channel": "email",
        "subject": "Spring sale, Alex",
        "preheader": "20% off everything",
        "html": _html(),
        "text": "Hi Alex, 20% off this week.\n\nUnsubscribe: ...\nNorthwind Outfitters Sp. z o.o., ul. Floriańska 1",
        "headers": {"List-Unsubscribe": f"<{UNSUBSCRIBE_URL}>, <mailto:u@example.com>"},
        **overrides,
    }
    return RenderedContent(**fields)


def _sms(text: str = "Alex: 20% off today. Reply STOP to opt out", segments: int = 1, **overrides) -> RenderedContent:
    info = SmsInfo(encoding="GSM-7", characters=len(text), segments=segments, cost="")
    return RenderedContent(channel="sms", text=text, sms=info, **overrides)


def _rules(findings: list[Finding]) -> list[str]:
    return [f.rule for f in findings]


@pytest.fixture
def brand():
    return BrandFactory(mastodon_account="@northwind@mastodon.example", bluesky_account="northwind.bsky.social")


def test_well_formed_content_on_every_channel_has_no_findings(brand):
    assert check_content(_email(), brand=brand) == []
    assert check_content(_sms(), brand=brand) == []
    brand.whatsapp_sender = "+15005550006"
    for channel in ("whatsapp", "mastodon", "bluesky"):
        assert check_content(RenderedContent(channel=channel, text="Spring sale: 20% off."), brand=brand) == []


# --- banned phrases ------------------------------------------------------------------


def test_banned_phrase_in_the_subject_is_named_with_where_it_is(brand):
    brand.banned_phrases = "risk-free\nguaranteed winner"

    findings = check_content(_email(subject="Your RISK-FREE spring, Alex"), brand=brand)

    assert _rules(findings) == [BANNED_PHRASE]
    assert findings[0].severity == ERROR
    assert findings[0].where == "subject"
    assert findings[0].message.startswith("Banned phrase “risk-free” in the subject")


def test_banned_phrase_inside_a_longer_word_passes(brand):
    brand.banned_phrases = "risk-free\nfree"

    findings = check_content(
        _email(subject="Risk-freedom for all", html=_html("<p>Our freebies and carefree prices.</p>")), brand=brand
    )

    assert findings == []


def test_banned_phrase_is_found_in_the_visible_body_across_tags_and_line_breaks(brand):
    brand.banned_phrases = "guaranteed winner"
    html = _html("<p>You are a <strong>Guaranteed\n   winner</strong> &amp; more.</p>")

    findings = check_content(_email(html=html), brand=brand)

    assert [(f.rule, f.where) for f in findings] == [(BANNED_PHRASE, "body")]


def test_banned_phrase_in_the_hidden_preheader_is_reported_once_as_the_preheader(brand):
    brand.banned_phrases = "act now"
    html = _html().replace("20% off everything", "Act now")

    findings = check_content(_email(preheader="Act now", html=html), brand=brand)

    assert [f.where for f in findings] == ["preheader"]


def test_banned_phrase_in_image_alt_text_and_in_a_post(brand):
    brand.banned_phrases = "cheap"
    email = _email(html=_html('<img src="https://cdn.example/a.png" alt="Cheap jackets">'))
    post = RenderedContent(channel="mastodon", text="New jackets", image_url="https://x/a.png", image_alt="cheap!")

    assert [f.where for f in check_content(email, brand=brand)] == ["image alt text"]
    assert [f.where for f in check_content(post, brand=brand)] == ["image alt text"]
    assert [f.where for f in check_content(RenderedContent(channel="mastodon", text="So cheap"), brand=brand)] == [
        "post"
    ]


def test_banned_phrase_names_the_email_block_it_sits_in(brand):
    brand.banned_phrases = "risk-free"
    template = TemplateFactory.build(
        brand=brand, blocks=[{"type": "heading", "text": "Sale"}, {"type": "text", "text": "Totally risk-free!"}]
    )

    findings = check_content(_email(html=_html("<p>Totally risk-free!</p>")), brand=brand, template=template)

    assert findings[0].where == "body, block 2 (text)"


# --- required phrases -----------------------------------------------------------------


def test_missing_required_phrase_for_the_channel_is_an_error(brand):
    RequiredPhrase.objects.create(brand=brand, channel="sms", phrase="Reply STOP to opt out")

    findings = check_content(_sms("Alex: 20% off today."), brand=brand)

    assert _rules(findings) == [REQUIRED_PHRASE]
    assert "“Reply STOP to opt out” is missing" in findings[0].message
    assert findings[0].where == "SMS text"


def test_required_phrase_passes_whatever_its_case_and_spacing_and_only_applies_to_its_channel(brand):
    RequiredPhrase.objects.create(brand=brand, channel="sms", phrase="Reply STOP to opt out")

    assert check_content(_sms("20% off. reply stop\nto  opt out"), brand=brand) == []
    assert check_content(_email(), brand=brand) == []


# --- length limits ----------------------------------------------------------------------


def test_email_subject_over_the_brand_limit(brand):
    brand.email_subject_max_chars = 20

    too_long = check_content(_email(subject="x" * 21), brand=brand)
    at_limit = check_content(_email(subject="x" * 20), brand=brand)

    assert _rules(too_long) == [LENGTH]
    assert "21 characters, over Northwind's limit of 20: cut 1" in too_long[0].message
    assert at_limit == []


def test_sms_over_the_segment_limit(brand):
    brand.sms_max_segments = 2

    findings = check_content(_sms(segments=3), brand=brand)

    assert _rules(findings) == [LENGTH]
    assert "3 segments" in findings[0].message
    assert check_content(_sms(segments=2), brand=brand) == []


def test_whatsapp_over_the_character_limit(brand):
    brand.whatsapp_sender = "+15005550006"
    brand.whatsapp_max_chars = 1024

    assert _rules(check_content(RenderedContent(channel="whatsapp", text="a" * 1025), brand=brand)) == [LENGTH]
    assert check_content(RenderedContent(channel="whatsapp", text="a" * 1024), brand=brand) == []


def test_mastodon_counts_links_as_23_characters(brand):
    link = "https://northwind.example/" + "very-long-path/" * 10
    fits = "a" * 476 + " " + link  # 476 + 1 + 23 = 500
    over = "a" * 477 + " " + link

    assert mastodon_length(fits) == 500
    assert check_content(RenderedContent(channel="mastodon", text=fits), brand=brand) == []
    findings = check_content(RenderedContent(channel="mastodon", text=over), brand=brand)
    assert _rules(findings) == [LENGTH]
    assert "501 characters as Mastodon counts them" in findings[0].message


def test_bluesky_counts_graphemes_so_family_emoji_and_flags_count_one_each(brand):
    family, flag = "👨‍👩‍👧‍👦", "🇵🇱"
    assert (graphemes(family), graphemes(flag), graphemes("e\u0301"), graphemes("👍🏽")) == (1, 1, 1, 1)
    fits = family * 150 + flag * 150  # 300 graphemes, 1,350 code points
    assert len(fits) > 1000

    assert check_content(RenderedContent(channel="bluesky", text=fits), brand=brand) == []
    findings = check_content(RenderedContent(channel="bluesky", text=fits + "!"), brand=brand)
    assert _rules(findings) == [LENGTH]
    assert "301 characters (graphemes" in findings[0].message


# --- link domains ------------------------------------------------------------------------


def test_links_to_the_allowed_domain_and_its_subdomains_pass(brand):
    brand.link_domains = "northwind.example"
    html = _html('<a href="https://shop.northwind.example/sale">Shop</a> <a href="mailto:care@x.example">Mail</a>')
    sms = _sms("Shop http://127.0.0.1:8000/l/abc", links=("https://northwind.example/sale?utm_medium=sms",))

    assert check_content(_email(html=html), brand=brand) == []
    assert check_content(sms, brand=brand) == []


def test_lookalike_and_foreign_link_domains_are_refused(brand):
    brand.link_domains = "northwind.example"
    html = _html(
        '<a href="https://northwind.example.evil.test/sale">A</a> <a href="https://evilnorthwind.example/">B</a>'
    )

    findings = check_content(_email(html=html), brand=brand)
    sms = check_content(_sms(links=("https://northwind.example@phish.test/x",)), brand=brand)

    assert _rules(findings) == [LINK_DOMAIN, LINK_DOMAIN]
    assert "goes to northwind.example.evil.test, which is not one of Northwind's link domains" in findings[0].message
    assert "evilnorthwind.example" in findings[1].message
    assert [f.key for f in sms] == ["phish.test"]


def test_link_domain_check_is_off_without_an_allowlist(brand):
    brand.link_domains = ""
    assert check_content(_email(html=_html('<a href="https://anywhere.test/">x</a>')), brand=brand) == []


# --- image alt text -----------------------------------------------------------------------


@pytest.mark.parametrize("img", ['<img src="https://cdn.example/hero.png">', '<img src="/m/hero.png?v=2" alt=" ">'])
def test_email_image_without_alt_text(brand, img):
    findings = check_content(_email(html=_html(img)), brand=brand)

    assert _rules(findings) == [ALT_TEXT]
    assert findings[0].message.startswith("The image hero.png has no alt text")


def test_email_image_with_alt_text_passes(brand):
    assert check_content(_email(html=_html('<img src="hero.png" alt="Two jackets">')), brand=brand) == []


def test_social_image_without_alt_text(brand):
    without = RenderedContent(channel="bluesky", text="New", image_url="https://cdn.example/a.png")
    with_alt = RenderedContent(channel="bluesky", text="New", image_url="https://cdn.example/a.png", image_alt="A")

    assert _rules(check_content(without, brand=brand)) == [ALT_TEXT]
    assert check_content(with_alt, brand=brand) == []


# --- unsubscribe link and legal footer ---------------------------------------------------------


def test_email_without_unsubscribe_link(brand):
    footer = "<p>Northwind Outfitters Sp. z o.o.<br>ul. Floriańska 1, 31-019 Kraków, Poland</p>"

    findings = check_content(_email(html=_html(footer=footer), headers={}), brand=brand)

    assert _rules(findings) == [UNSUBSCRIBE]
    assert "{{ links.unsubscribe }}" in findings[0].message


def test_unsubscribe_link_found_by_the_list_unsubscribe_url_whatever_its_text(brand):
    footer = FOOTER.replace(">Unsubscribe<", ">Stop these emails<").replace("/u/", "/x/")
    headers = {"List-Unsubscribe": f"<{UNSUBSCRIBE_URL.replace('/u/', '/x/')}>"}

    assert check_content(_email(html=_html(footer=footer), headers=headers), brand=brand) == []


def test_email_without_the_legal_footer_names_what_is_missing(brand):
    footer = f'<a href="{UNSUBSCRIBE_URL}">Unsubscribe</a> Northwind Outfitters Sp. z o.o.'

    findings = check_content(_email(html=_html(footer=footer)), brand=brand)

    assert _rules(findings) == [LEGAL_FOOTER]
    assert "missing “ul. Floriańska 1, 31-019 Kraków, Poland”" in findings[0].message


def test_legal_footer_over_several_lines_passes(brand):
    brand.postal_address = "ul. Floriańska 1\n31-019 Kraków\nPoland"
    footer = f'<a href="{UNSUBSCRIBE_URL}">Unsubscribe</a><p>Northwind Outfitters Sp. z o.o.<br>ul. Floriańska 1<br>'
    footer += "31-019&nbsp;Kraków, Poland</p>"

    assert check_content(_email(html=_html(footer=footer)), brand=brand) == []


# --- Liquid: unknown variables and errors -------------------------------------------------------


def test_unknown_variable_names_the_path_the_part_and_the_position(brand):
    use = VariableUse(path="customer.frist_name", part="subject", line=1, column=14)

    findings = check_content(_email(unknown_variables=(use,)), brand=brand)

    assert _rules(findings) == [UNKNOWN_VARIABLE]
    assert findings[0].where == "subject, line 1:14"
    assert findings[0].message.startswith("Unknown variable “customer.frist_name” in the subject, line 1:14")


def test_liquid_error_names_the_part_and_line_and_column_and_cannot_be_overridden(brand):
    problem = ContentError("body, line 2, column 5: expected '}}', found end of file", part="body", line=2, column=5)

    findings = check_content(_sms(problems=(problem,)), brand=brand)

    assert _rules(findings) == [LIQUID_ERROR]
    assert findings[0].message == (
        "Liquid error in the body, line 2:5: expected '}}', found end of file. Fix the tag or expression there."
    )
    assert not findings[0].overridable


def test_content_without_unknown_variables_or_liquid_errors_passes(brand):
    assert [f for f in check_content(_email(), brand=brand) if f.rule in (UNKNOWN_VARIABLE, LIQUID_ERROR)] == []


# --- sender identity -----------------------------------------------------------------------------


def test_missing_sender_identity_for_the_channel(brand):
    brand.sms_sender = ""

    findings = check_content(_sms(), brand=brand)
    whatsapp = check_content(RenderedContent(channel="whatsapp", text="Hi"), brand=brand)

    assert _rules(findings) == [SENDER]
    assert findings[0].message.startswith("Northwind has no SMS sender number or messaging service")
    assert not findings[0].overridable  # nothing could be sent
    assert _rules(whatsapp) == [SENDER]


def test_a_messaging_service_is_an_sms_sender_identity(brand):
    brand.sms_sender = ""
    brand.sms_messaging_service = "MG0123456789abcdef0123456789abcdef"
    assert check_content(_sms(), brand=brand) == []


# --- warnings and fingerprints -------------------------------------------------------------------------


def test_ucs2_sms_is_a_warning_that_names_the_characters(brand):
    info = SmsInfo(encoding="UCS-2", characters=20, segments=1, cost="", non_gsm=("ł", "ś"))

    findings = check_content(RenderedContent(channel="sms", text="Łódź: ś", sms=info), brand=brand)

    assert [(f.rule, f.severity) for f in findings] == [(SMS_ENCODING, WARNING)]
    assert "“ł”, “ś”" in findings[0].message
    assert not findings[0].blocking


def test_fingerprint_is_stable_across_unrelated_edits_and_differs_by_step_and_persona(brand):
    brand.email_subject_max_chars = 20
    first = check_content(_email(subject="x" * 25), brand=brand)[0]
    longer = check_content(_email(subject="y" * 30), brand=brand)[0]

    assert len(first.fingerprint) == 64
    assert int(first.fingerprint, 16) >= 0
    assert first.message != longer.message
    assert first.fingerprint == longer.fingerprint
    assert Finding(**{**first.__dict__, "step_position": 1}).fingerprint != first.fingerprint
    assert Finding(**{**first.__dict__, "persona": "Bargain hunter"}).fingerprint != first.fingerprint


# --- through the real renderer ----------------------------------------------------------------------------


def test_factory_campaign_renders_without_error_findings():
    campaign = two_channel_campaign()
    assert [f for f in check_campaign(campaign) if f.severity == ERROR] == []


def test_check_campaign_names_the_step_of_each_finding():
    brand = BrandFactory(banned_phrases="today")
    campaign = two_channel_campaign(brand=brand)

    findings = check_campaign(campaign)

    assert [(f.rule, f.step_position, f.where) for f in findings if f.severity == ERROR] == [
        (BANNED_PHRASE, 1, "SMS text")
    ]


def test_template_subject_typo_is_an_unknown_variable_with_its_position():
    template = TemplateFactory(subject="Hi {{ customer.frist_name }}")

    findings = [f for f in check_template(template) if f.rule == UNKNOWN_VARIABLE]

    assert len(findings) == 1
    assert "“customer.frist_name”" in findings[0].message
    assert findings[0].where.startswith("subject, line 1:")


def test_template_syntax_error_is_located():
    template = TemplateFactory(channel="sms", body="Hi there\n{{ customer.first_name  Reply STOP to opt out")

    findings = [f for f in check_template(template) if f.rule == LIQUID_ERROR]

    assert len(findings) == 1
    assert "line 2:" in findings[0].where


def test_a_persona_variant_is_checked_on_its_own_and_its_findings_carry_the_persona():
    brand = BrandFactory(banned_phrases="last chance")
    template = TemplateFactory(brand=brand, subject="Spring sale")
    hunter = Persona.objects.create(name="Bargain hunter", slug="bargain-hunter", rules={}, priority=5)
    Persona.objects.create(name="Loyal", slug="loyal", rules={}, priority=1)  # no variant, no members: not rendered
    TemplateVariant.objects.create(template=template, persona=hunter, subject="Last chance, {{ customer.first_name }}")

    findings = check_template(template)

    assert [(f.rule, f.where, f.persona) for f in findings if f.severity == ERROR] == [
        (BANNED_PHRASE, "subject", "Bargain hunter")
    ]


def test_a_finding_of_the_default_content_is_reported_once_not_per_persona():
    brand = BrandFactory(banned_phrases="last chance")
    template = TemplateFactory(brand=brand, subject="Last chance")
    for n in range(3):
        persona = Persona.objects.create(name=f"P{n}", slug=f"p{n}", rules={}, priority=n)
        TemplateVariant.objects.create(template=template, persona=persona, preheader=f"For P{n}")

    findings = [f for f in check_template(template) if f.rule == BANNED_PHRASE]

    assert [(f.where, f.persona) for f in findings] == [("subject", None)]


def test_checking_a_template_is_fast_enough_for_every_keystroke():
    campaign = CampaignFactory(brand=BrandFactory(banned_phrases="risk-free\ncheap\nlast chance"))
    step = StepFactory(campaign=campaign)
    check_template(step.template, campaign=campaign)  # compile once

    started = time.perf_counter()
    for _ in range(20):
        check_template(step.template, campaign=campaign)
    per_check = (time.perf_counter() - started) / 20

    assert per_check < 0.05, f"one check took {per_check * 1000:.1f} ms"
