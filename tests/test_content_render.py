"""render_template for every channel: brand layout, blocks, plain text, headers, variants, problems."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from campaigns.content.blocks import BlockError, validate_blocks
from campaigns.content.context import sample_customer
from campaigns.content.render import render_template, shares_content
from campaigns.models import TemplateVariant
from customers.models import Persona
from tests.factories import BrandFactory, CampaignFactory, CustomerFactory, TemplateFactory

PUBLIC = "http://chorus.test"


@pytest.fixture(autouse=True)
def _public_url(settings, tmp_path):
    settings.CHORUS_PUBLIC_URL = PUBLIC
    settings.MEDIA_ROOT = tmp_path


@pytest.fixture
def brand(db):
    return BrandFactory(
        primary_colour="#0F766E",
        secondary_colour="#112233",
        text_colour="#222222",
        background_colour="#F0F0F0",
        font_stack="'Segoe UI', Helvetica, sans-serif",
        utm_parameters="utm_source=chorus\nutm_content=spring",
    )


@pytest.fixture
def persona(db):
    return Persona.objects.create(name="Bargain hunter", slug="bargain-hunter", rules={"all": []}, priority=10)


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def tags(html: str, name: str) -> list[dict]:
    parser = _Tags()
    parser.feed(html)
    return [attrs for tag, attrs in parser.tags if tag == name]


# fmt: off
BLOCKS = [
    {"type": "heading", "text": "Spring is here, {{ customer.first_name | default: 'friend' }}"},
    {"type": "text", "text": "Hi {{ customer.first_name }},\n\nSee https://northwind.example/spring?ref=mail#top today."},  # noqa: E501
    {"type": "image", "src": "https://cdn.northwind.example/spring.jpg", "alt": "Spring jackets", "href": "https://northwind.example/jackets"},
    {"type": "offer", "title": "20% off", "text": "Everything in {{ customer.city }}", "code": "SPRING20", "url": "https://northwind.example/sale?utm_source=partner"},
    {"type": "divider"},
    {"type": "button", "text": "Shop now", "url": "https://northwind.example/sale"},
    {"type": "html", "html": '<p class="x">Made by <a href="https://northwind.example/about">us</a> for {{ customer.attributes.note }}</p>'},  # noqa: E501
]
# fmt: on


@pytest.mark.django_db
def test_email_renders_the_blocks_inside_the_brand_layout(brand):
    template = TemplateFactory(brand=brand, subject="Hi {{ customer.first_name }}", preheader="20% off", blocks=BLOCKS)
    campaign = CampaignFactory(brand=brand, name="Spring Sale 2026")
    customer = CustomerFactory(first_name="Ana", city="Kraków", attributes={"note": "<script>alert(1)</script>"})

    rendered = render_template(template, campaign=campaign, customer=customer)

    assert rendered.problems == ()
    assert (rendered.subject, rendered.preheader) == ("Hi Ana", "20% off")
    html = rendered.html
    assert "Spring is here, Ana" in html
    assert "max-width:600px" in html and "@media only screen and (max-width:620px)" in html
    assert "background:#0F766E" in html and "color:#112233" in html and "background:#F0F0F0" in html
    assert "font-family:&#x27;Segoe UI&#x27;, Helvetica, sans-serif" in html  # quotes escaped inside style=""
    assert brand.legal_footer in html
    # Customer data in the raw-HTML block is escaped; the marketer's markup is kept.
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert '<p class="x">Made by ' in html
    # Every outside link carries UTM; the URL's own parameters and fragments win.
    hrefs = [a["href"] for a in tags(html, "a")]
    assert (
        "https://northwind.example/spring?ref=mail&utm_source=chorus&utm_content=spring&utm_medium=email&utm_campaign=spring-sale-2026#top"
        in hrefs
    )
    assert (
        "https://northwind.example/sale?utm_source=partner&utm_content=spring&utm_medium=email&utm_campaign=spring-sale-2026"
        in hrefs
    )
    assert (
        "https://northwind.example/about?utm_source=chorus&utm_content=spring&utm_medium=email&utm_campaign=spring-sale-2026"
        in hrefs
    )
    assert all("utm_" in href for href in hrefs if "northwind.example" in href)
    assert set(rendered.links) == {href for href in hrefs if "northwind.example" in href}
    # Preview: the recipient links point at the preview page, never at a real customer's.
    assert f"{PUBLIC}/u/preview" in hrefs and f"{PUBLIC}/p/preview" in hrefs and f"{PUBLIC}/m/preview" in hrefs
    images = tags(html, "img")
    assert {"src": "https://cdn.northwind.example/spring.jpg", "alt": "Spring jackets"}.items() <= images[0].items()


@pytest.mark.django_db
def test_plain_text_part_follows_the_blocks_with_links_and_ends_with_footer_and_unsubscribe(brand):
    template = TemplateFactory(brand=brand, subject="Hi", blocks=BLOCKS)
    rendered = render_template(
        template,
        campaign=CampaignFactory(brand=brand, name="Spring"),
        customer=CustomerFactory(first_name="Ana", city="Kraków", attributes={"note": "you"}),
    )
    text = rendered.text
    assert text.startswith(
        "Spring is here, Ana\n\nHi Ana,\n\nSee https://northwind.example/spring?ref=mail&utm_source=chorus"
    )
    assert "Spring jackets (https://northwind.example/jackets?utm_source=chorus" in text
    assert (
        "20% off\nEverything in Kraków\nCode: SPRING20\nGet the offer (https://northwind.example/sale?utm_source=partner"
        in text
    )
    assert "\n----\n" in text
    assert "Shop now (https://northwind.example/sale?utm_source=chorus" in text
    assert "Made by us (https://northwind.example/about?utm_source=chorus" in text
    assert "<" not in text
    assert text.rstrip().splitlines()[-4:] == [
        brand.legal_footer,
        f"Unsubscribe: {PUBLIC}/u/preview",
        f"Email preferences: {PUBLIC}/p/preview",
        f"View in your browser: {PUBLIC}/m/preview",
    ]


@pytest.mark.django_db
def test_email_headers_offer_one_click_unsubscribe(brand, settings):
    template = TemplateFactory(brand=brand)
    assert render_template(template).headers == {
        "List-Unsubscribe": f"<{PUBLIC}/u/preview>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    settings.CHORUS_UNSUBSCRIBE_MAILTO = "unsubscribe@northwind.example"
    assert render_template(template).headers["List-Unsubscribe"] == (
        f"<{PUBLIC}/u/preview>, <mailto:unsubscribe@northwind.example?subject=unsubscribe>"
    )


@pytest.mark.django_db
def test_logo_is_an_absolute_url_on_the_public_address(brand):
    brand.logo = SimpleUploadedFile("logo.png", b"\x89PNG\r\n\x1a\n", content_type="image/png")
    brand.save()
    html = render_template(TemplateFactory(brand=brand)).html
    logo = tags(html, "img")[0]
    assert logo["src"].startswith(f"{PUBLIC}/media/brands/logo") and logo["alt"] == brand.name


@pytest.mark.django_db
def test_without_a_logo_the_brand_name_heads_the_email(brand):
    assert f">{brand.name}</span>" in render_template(TemplateFactory(brand=brand)).html


@pytest.mark.django_db
def test_each_broken_part_is_reported_and_the_others_still_render(brand):
    template = TemplateFactory(
        brand=brand,
        subject="Hi {{ customer.first_name ",
        blocks=[
            {"type": "heading", "text": "Fine heading"},
            {"type": "text", "text": "Line one\n{% if customer.city %}unclosed"},
            {"type": "button", "text": "Go", "url": "{{ customer.attributes.link }}"},
        ],
    )
    rendered = render_template(template, customer=CustomerFactory(attributes={"link": "javascript:alert(1)"}))
    assert [(p.part, p.line) for p in rendered.problems] == [
        ("subject", 1),
        ("block 2 text", 2),
        ("block 3 url", None),
    ]
    assert "javascript" not in rendered.html
    assert "Fine heading" in rendered.html
    with pytest.raises(Exception, match="subject, line 1, column 4"):
        rendered.raise_for_problems()


@pytest.mark.django_db
def test_unknown_variables_come_back_with_their_part_and_place(brand):
    template = TemplateFactory(
        brand=brand,
        subject="{{ customer.frist_name }}",
        blocks=[{"type": "text", "text": "ok {{ customer.first_name }}\n{{ settings.SECRET_KEY }}"}],
    )
    rendered = render_template(template)
    assert [(u.path, u.part, u.line, u.column) for u in rendered.unknown_variables] == [
        ("customer.frist_name", "subject", 1, 4),
        ("settings.SECRET_KEY", "block 1 text", 2, 4),
    ]
    assert rendered.subject == ""


@pytest.mark.django_db
def test_persona_variant_overrides_only_the_fields_it_sets(brand, persona):
    template = TemplateFactory(brand=brand, subject="Default subject", preheader="Default preheader")
    TemplateVariant.objects.create(template=template, persona=persona, subject="Deal for {{ customer.persona.name }}")
    member = CustomerFactory(persona=persona, first_name="Bea")
    other = CustomerFactory(first_name="Cy")

    assert render_template(template, customer=member).subject == "Deal for Bargain hunter"
    assert render_template(template, customer=member).preheader == "Default preheader"  # NULL: inherited
    assert render_template(template, customer=other).subject == "Default subject"
    assert render_template(template, persona=persona).subject == "Deal for Bargain hunter"


@pytest.mark.django_db
def test_an_email_shares_its_content_unless_a_part_or_a_persona_variant_reads_the_recipient(brand, persona):
    shared = {"subject": "Spring at {{ brand.name }}", "blocks": [{"type": "text", "text": "Hello"}]}
    template = TemplateFactory(brand=brand, preheader="{{ campaign.name }}", **shared)
    assert shares_content(template)
    variant = TemplateVariant.objects.create(template=template, persona=persona, subject="Deals for you")
    assert shares_content(template), "a variant that reads nobody's profile still shares"
    variant.preheader = "Hi {{ customer.first_name }}"
    variant.save()
    assert not shares_content(template)
    assert not shares_content(TemplateFactory(brand=brand, preheader="{{ links.unsubscribe }}", **shared))
    assert not shares_content(TemplateFactory(brand=brand)), "the factory's text greets the customer by name"
    assert not shares_content(TemplateFactory(brand=brand, channel="sms", body="Spring at {{ brand.name }}"))


@pytest.mark.django_db
def test_previews_use_a_real_member_of_the_persona_or_a_made_up_sample(brand, persona):
    template = TemplateFactory(brand=brand, subject="Hi {{ customer.first_name }} from {{ customer.city }}")
    assert render_template(template, persona=persona).subject == "Hi Alex from Kraków"
    assert sample_customer(persona).pk is None
    CustomerFactory(persona=persona, first_name="Bea", city="Gdańsk")
    assert render_template(template, persona=persona).subject == "Hi Bea from Gdańsk"


@pytest.mark.django_db
def test_ad_hoc_context_overrides_parts_of_the_context(brand):
    template = TemplateFactory(
        brand=brand, subject="{{ customer.first_name }} / {{ campaign.name }} / {{ brand.name }}"
    )
    rendered = render_template(template, context={"customer": {"first_name": "Zed"}, "campaign": {"name": "Ad hoc"}})
    assert rendered.subject == f"Zed / Ad hoc / {brand.name}"


@pytest.mark.django_db
def test_subject_is_one_line_whatever_the_data(brand):
    template = TemplateFactory(brand=brand, subject="Hi {{ customer.first_name }}")
    customer = CustomerFactory(first_name="Ana\r\nBcc: victim@example.com")
    assert render_template(template, customer=customer).subject == "Hi Ana Bcc: victim@example.com"


@pytest.mark.django_db
def test_sms_renders_text_with_short_links_and_billing(brand):
    template = TemplateFactory(
        brand=brand,
        channel="sms",
        body="{{ customer.first_name }}: 20% off at https://northwind.example/s. Reply STOP to opt out",
    )
    rendered = render_template(
        template,
        campaign=CampaignFactory(brand=brand, name="Spring"),
        customer=CustomerFactory(first_name="Ana", country="PL"),
    )
    match = re.fullmatch(
        rf"Ana: 20% off at {PUBLIC}/l/(\w{{8}})/(\w+)\.([\w-]{{8}})\. Reply STOP to opt out", rendered.text
    )
    assert match, rendered.text
    assert rendered.links == (
        "https://northwind.example/s?utm_source=chorus&utm_content=spring&utm_medium=sms&utm_campaign=spring",
    )
    assert rendered.sms.encoding == "GSM-7" and rendered.sms.segments == 1
    assert rendered.sms.characters == len(rendered.text)
    assert rendered.sms.cost == "0.0079 USD"  # CHORUS_SMS_DEFAULT_PRICE: no SmsPrice row for PL
    assert (rendered.html, rendered.subject, rendered.headers) == ("", "", {})


@pytest.mark.django_db
def test_whatsapp_renders_text_without_sms_billing(brand):
    template = TemplateFactory(
        brand=brand, channel="whatsapp", body="Hi {{ customer.first_name }} 👋 https://northwind.example"
    )
    rendered = render_template(template, customer=CustomerFactory(first_name="Ana"))
    assert rendered.text.startswith(f"Hi Ana 👋 {PUBLIC}/l/")
    assert rendered.sms is None


@pytest.mark.django_db
@pytest.mark.parametrize("channel", ["mastodon", "bluesky"])
def test_social_posts_render_text_image_and_alt(brand, channel):
    template = TemplateFactory(
        brand=brand,
        channel=channel,
        body="New in {{ brand.name }}: https://northwind.example/new",
        image=SimpleUploadedFile("post.png", b"\x89PNG\r\n\x1a\n", content_type="image/png"),
        image_alt="Three {{ brand.name }} jackets on a hook",
    )
    rendered = render_template(template)
    assert rendered.text.startswith(f"New in {brand.name}: {PUBLIC}/l/")
    assert rendered.image_url.startswith(f"{PUBLIC}/media/templates/post")
    assert rendered.image_alt == f"Three {brand.name} jackets on a hook"
    assert rendered.links == (
        f"https://northwind.example/new?utm_source=chorus&utm_content=spring&utm_medium={channel}",
    )


@pytest.mark.django_db
def test_rendering_for_many_customers_compiles_and_queries_once(brand, django_assert_max_num_queries):
    template = TemplateFactory(
        brand=brand, channel="sms", body="Hi {{ customer.first_name }} https://northwind.example"
    )
    campaign = CampaignFactory(brand=brand)
    customers = [CustomerFactory(country="PL") for _ in range(20)]
    cache: dict = {}
    render_template(template, campaign=campaign, customer=customers[0], cache=cache)
    with django_assert_max_num_queries(0):
        for customer in customers[1:]:
            render_template(template, campaign=campaign, customer=customer, cache=cache)


# --- blocks --------------------------------------------------------------------------------


def test_valid_blocks_have_no_errors():
    assert validate_blocks(BLOCKS) == []


@pytest.mark.parametrize(
    ("blocks", "expected"),
    [
        ("not a list", [BlockError(0, "", "The body must be a list of blocks.")]),
        ([{"type": "video", "src": "x"}], ["Block 1 type: Unknown block type 'video'"]),
        ([{"type": "button", "text": "Go"}], ["Block 1 url: A button block needs a url."]),
        (
            [{"type": "heading", "text": "ok"}, {"type": "image", "src": "ftp://x/y.png"}],
            ["Block 2 src: 'ftp://x/y.png' is not an http(s) address."],
        ),
        (
            [{"type": "button", "text": "Go", "url": "javascript:alert(1)"}],
            ["Block 1 url: 'javascript:alert(1)' is not an http(s), mailto: or tel: link."],
        ),
        ([{"type": "button", "text": "Go", "url": "https://"}], ["Block 1 url: 'https://' has no host."]),
        ([{"type": "text", "text": "Hi {{ customer.first_name"}], ["Block 1 text: line 1, column 4: expected '}}'"]),
        ([{"type": "text", "text": "x", "colour": "red"}], ["Block 1 colour: A text block has no field 'colour'."]),
        ([{"type": "text", "text": 5}], ["Block 1 text: Must be text."]),
        (["heading"], ["Block 1: A block must be an object with a type."]),
    ],
)
def test_block_errors_name_the_block_and_field(blocks, expected):
    errors = validate_blocks(blocks)
    assert len(errors) == len(expected)
    for error, wanted in zip(errors, expected, strict=True):
        if isinstance(wanted, BlockError):
            assert error == wanted
        else:
            assert str(error).startswith(wanted), str(error)


def test_links_may_be_liquid_and_mailto():
    assert (
        validate_blocks(
            [
                {"type": "button", "text": "Prefs", "url": "{{ links.preferences }}"},
                {"type": "button", "text": "Mail", "url": "mailto:care@northwind.example"},
                {"type": "image", "src": "https://cdn.example/x.png", "alt": ""},
            ]
        )
        == []
    )


def test_render_benchmark_reports_chorus_and_django_side_by_side(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "render.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "render", "--renders", "300", "--repeat", "1", "--json", str(out)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"chorus\s+[\d,]+ renders/s", result.stdout)
    assert re.search(r"django\s+[\d,]+ renders/s", result.stdout)
    report = json.loads(out.read_text())
    assert report["variables"] == 5 and 900 <= report["body_bytes"] <= 1200
    assert set(report["medians"]) == {"chorus", "django", "python-liquid"}


@pytest.mark.django_db
def test_a_send_whose_content_fails_to_render_fails_the_message_naming_the_part():
    from campaigns.models import CampaignRun
    from channels.models import Message, SandboxMessage
    from channels.services import messages_send
    from tests.factories import StepFactory

    step = StepFactory(
        channel="sms", template__body="Hi {{ customer.first_name }}\n{{ 10 | divided_by: customer.attributes.n }}"
    )
    customer = CustomerFactory(attributes={"n": 0}, consents={"sms": "opted_in"})
    run = CampaignRun.objects.create(campaign=step.campaign, number=1)
    message = Message.objects.create(run=run, step=step, customer=customer, channel="sms", to_address=customer.phone)

    messages_send(message_ids=[message.pk])

    message.refresh_from_db()
    assert message.status == "failed"
    assert message.error == "Content error in body, line 2, column 9: divided_by: can't divide by 0"
    assert not SandboxMessage.objects.exists()
