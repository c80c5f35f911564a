"""The template pages through Django's test client: list, editor, live checks, block editing,
previews, test sends, and the review actions on the campaign page."""

from __future__ import annotations

import pytest
from django.urls import reverse

from campaigns.models import Campaign, CampaignEvent, FindingOverride, RequiredPhrase, Template, TemplateVariant
from channels.models import Message, SandboxMessage
from channels.test_sends import TestSendError, recipients_parse, test_send
from config.roles import BRAND_MANAGER, MARKETER
from customers.models import Persona
from tests.factories import BrandFactory, CampaignFactory, CustomerFactory, StepFactory, TemplateFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def brand():
    brand = BrandFactory(
        banned_phrases="guaranteed\nact now",
        voice_and_tone="Warm and direct; no hype.",
        seed_list="qa@northwind.example\n+48600100200\nnot an address",
        mastodon_account="@northwind@mastodon.social",
        bluesky_account="northwind.bsky.social",
        whatsapp_sender="+15005550006",
    )
    RequiredPhrase.objects.create(brand=brand, channel="sms", phrase="Reply STOP to opt out")
    return brand


@pytest.fixture
def bargain():
    return Persona.objects.create(
        name="Bargain hunters",
        slug="bargain-hunters",
        priority=10,
        rules={"all": [{"field": "country", "op": "eq", "value": "DE"}]},
    )


@pytest.fixture
def email_template(brand):
    return TemplateFactory(brand=brand, name="Spring sale email")


def _editor_data(template: Template, **overrides) -> dict:
    """What the editor posts for ``template`` as saved (personas' tabs left blank), with ``overrides``."""
    data = {"name": template.name}
    if template.channel == "email":
        data.update(subject=template.subject, preheader=template.preheader)
        for index, block in enumerate(template.blocks):
            for key, value in block.items():
                data[f"b-{index}-{key}"] = value
    else:
        data.update(body=template.body, image_alt=template.image_alt)
    data.update(overrides)
    return data


# --- List and create -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["/templates/", "/templates/new/", "/templates/1/", "/templates/1/preview/", "/campaigns/1/preview/"]
)
def test_template_pages_send_anonymous_visitors_to_login(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_template_list_filters_by_channel_brand_and_name(marketer_client, brand):
    TemplateFactory(brand=brand, name="Spring sale email")
    TemplateFactory(brand=brand, name="Spring sale SMS", channel="sms", body="Sale! Reply STOP to opt out")
    other = BrandFactory(name="Southwind", legal_company_name="Southwind Ltd", postal_address="1 Road")
    TemplateFactory(brand=other, name="Autumn email")

    page = marketer_client.get(reverse("templates:list"))
    assert page.status_code == 200
    assert [t.name for t in page.context["page"].object_list] == [
        "Autumn email",
        "Spring sale email",
        "Spring sale SMS",
    ]

    by_channel = marketer_client.get(reverse("templates:list"), {"channel": "sms"})
    assert [t.name for t in by_channel.context["page"].object_list] == ["Spring sale SMS"]
    by_brand = marketer_client.get(reverse("templates:list"), {"brand": other.pk})
    assert [t.name for t in by_brand.context["page"].object_list] == ["Autumn email"]
    by_name = marketer_client.get(reverse("templates:list"), {"q": "spring"}, HTTP_HX_REQUEST="true")
    assert [t.name for t in by_name.context["page"].object_list] == ["Spring sale email", "Spring sale SMS"]
    assert b"<html" not in by_name.content  # htmx gets the results only


def test_new_template_starts_with_content_and_opens_the_editor(marketer_client, brand):
    response = marketer_client.post(
        reverse("templates:new"), {"name": "Flash SMS", "brand": brand.pk, "channel": "sms"}
    )

    template = Template.objects.get(name="Flash SMS")
    assert response.status_code == 302
    assert response["Location"] == reverse("templates:edit", args=[template.pk])
    assert template.channel == "sms"
    assert "Reply STOP to opt out" in template.body  # the brand's required phrase is there from the start
    assert template.created_by.username == "mia"


def test_new_template_needs_a_name_and_a_brand(marketer_client, brand):
    response = marketer_client.post(reverse("templates:new"), {"name": "", "channel": "email"})

    assert response.status_code == 400
    assert set(response.context["form"].errors) == {"name", "brand"}
    assert not Template.objects.exists()


# --- The editor -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "body", "expected"),
    [
        ("email", "", [b"Body blocks", b'name="subject"', b'name="preheader"', b'name="b-0-type"']),
        ("sms", "Hi! Reply STOP to opt out", [b'name="body"', b"segment", b"GSM-7"]),
        ("whatsapp", "Hi {{ customer.first_name }}", [b'name="body"', b"/ 1024 characters"]),
        ("mastodon", "Spring is here", [b'name="body"', b'name="image"', b'name="image_alt"', b"/ 500 characters"]),
        ("bluesky", "Spring is here", [b'name="body"', b'name="image"', b"/ 300 characters"]),
    ],
)
def test_editor_renders_each_channels_fields(marketer_client, brand, bargain, channel, body, expected):
    template = TemplateFactory(brand=brand, channel=channel, body=body)

    page = marketer_client.get(reverse("templates:edit", args=[template.pk]))

    assert page.status_code == 200
    for snippet in expected:
        assert snippet in page.content, snippet
    assert b"Warm and direct; no hype." in page.content  # the brand's voice and tone beside the editor
    assert f'data-testid="tab-{bargain.slug}"'.encode() in page.content  # a tab per persona
    assert f'name="v{bargain.pk}-'.encode() in page.content
    if channel != "email":
        assert b'name="subject"' not in page.content


def test_checks_fragment_shows_a_banned_phrase_finding_and_saves_nothing(marketer_client, email_template):
    data = _editor_data(email_template, subject="Guaranteed savings, {{ customer.first_name }}")

    response = marketer_client.post(reverse("templates:checks", args=[email_template.pk]), data)

    assert response.status_code == 200
    findings = response.context["findings"]
    banned = [f for f in findings if f.rule == "banned_phrase"]
    assert [f.where for f in banned] == ["subject"]
    assert "Banned phrase “guaranteed”" in banned[0].message
    assert "Banned phrase “guaranteed”" in response.content.decode()
    assert b'id="meter" class="meter" data-testid="meter" aria-live="polite" hx-swap-oob="true"' in response.content
    email_template.refresh_from_db()
    assert email_template.subject == "Spring sale, {{ customer.first_name }}"


def test_checks_name_the_block_a_finding_is_in(marketer_client, email_template):
    data = _editor_data(email_template, **{"b-1-text": "Hi there, act now: 20% off."})

    response = marketer_client.post(reverse("templates:checks", args=[email_template.pk]), data)

    [finding] = [f for f in response.context["findings"] if f.rule == "banned_phrase"]
    assert "block 2 (text)" in finding.where
    assert "act now" in finding.message


def test_checks_of_a_clean_template_pass(marketer_client, email_template):
    response = marketer_client.post(reverse("templates:checks", args=[email_template.pk]), _editor_data(email_template))

    assert response.context["findings"] == []
    assert response.context["problems"] == []
    assert b'data-testid="checks-ok"' in response.content


def test_checks_cover_an_unsaved_persona_variant(marketer_client, email_template, bargain):
    data = _editor_data(email_template, **{f"v{bargain.pk}-subject": "Guaranteed deals for you"})

    response = marketer_client.post(reverse("templates:checks", args=[email_template.pk]), data)

    [finding] = [f for f in response.context["findings"] if f.rule == "banned_phrase"]
    assert finding.persona == "Bargain hunters"
    assert not TemplateVariant.objects.exists()


def test_checks_list_a_syntax_error_with_line_and_column(marketer_client, email_template):
    data = _editor_data(email_template, subject="Hi {{ customer.first_name")

    response = marketer_client.post(reverse("templates:checks", args=[email_template.pk]), data)

    [problem] = response.context["problems"]
    assert problem.field == "subject"
    assert "line 1, column 4" in problem.message


def test_sms_meter_counts_segments_and_cost(marketer_client, brand):
    template = TemplateFactory(brand=brand, channel="sms", body="Hi! Reply STOP to opt out")
    data = _editor_data(template, body="Zażółć gęślą jaźń " * 5 + "Reply STOP to opt out")

    response = marketer_client.post(reverse("templates:checks", args=[template.pk]), data)

    meter = response.context["meter"]
    assert "2 segments" in meter.label
    assert "UCS-2" in meter.details


def test_saving_with_a_liquid_syntax_error_shows_line_and_column_and_stores_nothing(
    marketer_client, email_template, bargain
):
    data = _editor_data(
        email_template,
        name="Renamed",
        preheader="A new preheader",
        subject="Hello\n{{ customer.first_name",
        **{f"v{bargain.pk}-subject": "Deals for {{ customer.first_name }}"},
    )

    response = marketer_client.post(reverse("templates:edit", args=[email_template.pk]), data)

    assert response.status_code == 400
    text = response.content.decode()
    assert "Nothing was saved" in text
    assert "Subject, line 2, column 1" in text
    email_template.refresh_from_db()
    assert email_template.name == "Spring sale email"
    assert email_template.preheader == ""
    assert email_template.subject == "Spring sale, {{ customer.first_name }}"
    assert not TemplateVariant.objects.exists()


def test_saving_content_too_long_for_its_field_is_refused(marketer_client, email_template):
    data = _editor_data(email_template, name="N" * 201, subject="S" * 301)

    response = marketer_client.post(reverse("templates:edit", args=[email_template.pk]), data)

    assert response.status_code == 400
    assert "Name: at most 200 characters; this is 201." in response.content.decode()
    data["name"] = "Fine"
    response = marketer_client.post(reverse("templates:edit", args=[email_template.pk]), data)
    assert response.status_code == 400
    assert "Subject: at most 300 characters; this is 301." in response.content.decode()
    email_template.refresh_from_db()
    assert email_template.name == "Spring sale email"


def test_saving_an_invalid_block_names_the_block(marketer_client, email_template):
    data = _editor_data(email_template, **{"b-2-url": ""})

    response = marketer_client.post(reverse("templates:edit", args=[email_template.pk]), data)

    assert response.status_code == 400
    assert "Block 3 (button), url: A button block needs a url." in response.content.decode()
    email_template.refresh_from_db()
    assert email_template.blocks[2]["url"] == "https://northwind.example/sale"


def test_saving_writes_the_content_and_a_persona_variant(marketer_client, email_template, bargain):
    data = _editor_data(
        email_template,
        name="Spring sale v2",
        subject="Spring is here, {{ customer.first_name }}",
        **{
            "b-3-type": "divider",
            f"v{bargain.pk}-subject": "Prices down, {{ customer.first_name }}",
            f"v{bargain.pk}-preheader": "   ",
        },
    )

    response = marketer_client.post(reverse("templates:edit", args=[email_template.pk]), data)

    assert response.status_code == 302
    email_template.refresh_from_db()
    assert email_template.name == "Spring sale v2"
    assert email_template.subject == "Spring is here, {{ customer.first_name }}"
    assert [b["type"] for b in email_template.blocks] == ["heading", "text", "button", "divider"]
    variant = TemplateVariant.objects.get(template=email_template, persona=bargain)
    assert variant.subject == "Prices down, {{ customer.first_name }}"
    assert variant.preheader is None  # blank inherits
    assert variant.blocks is None

    # Clearing the persona's tab removes the variant.
    marketer_client.post(reverse("templates:edit", args=[email_template.pk]), _editor_data(email_template))
    assert not TemplateVariant.objects.exists()


def test_a_persona_can_get_its_own_blocks(marketer_client, email_template, bargain):
    prefix = f"v{bargain.pk}"
    data = _editor_data(email_template, op="override", persona=bargain.slug)

    response = marketer_client.post(reverse("templates:blocks", args=[email_template.pk]), data)

    assert response.status_code == 200
    assert f'name="{prefix}-blocks-override" value="1"'.encode() in response.content
    assert f'name="{prefix}b-2-url" value="https://northwind.example/sale"'.encode() in response.content
    assert response["HX-Trigger-After-Settle"] == "blocks-changed"

    save = _editor_data(
        email_template,
        **{
            f"{prefix}-blocks-override": "1",
            f"{prefix}b-0-type": "heading",
            f"{prefix}b-0-text": "Everything 20% off",
            f"{prefix}b-1-type": "button",
            f"{prefix}b-1-text": "See the deals",
            f"{prefix}b-1-url": "https://northwind.example/deals",
        },
    )
    marketer_client.post(reverse("templates:edit", args=[email_template.pk]), save)
    variant = TemplateVariant.objects.get(persona=bargain)
    assert variant.blocks == [
        {"type": "heading", "text": "Everything 20% off"},
        {"type": "button", "text": "See the deals", "url": "https://northwind.example/deals"},
    ]
    assert variant.subject is None


@pytest.mark.parametrize(
    ("op", "extra", "types"),
    [
        ("add", {"type": "offer"}, ["heading", "text", "button", "offer"]),
        ("up", {"index": "2"}, ["heading", "button", "text"]),
        ("down", {"index": "0"}, ["text", "heading", "button"]),
        ("remove", {"index": "1"}, ["heading", "button"]),
        ("up", {"index": "0"}, ["heading", "text", "button"]),  # the first block cannot go higher
    ],
)
def test_block_operations_rerender_the_block_list(marketer_client, email_template, op, extra, types):
    data = _editor_data(email_template, op=op, **extra)

    response = marketer_client.post(reverse("templates:blocks", args=[email_template.pk]), data)

    assert response.status_code == 200
    assert [row["type"] for row in response.context["rows"]] == types
    email_template.refresh_from_db()
    assert [b["type"] for b in email_template.blocks] == ["heading", "text", "button"]  # nothing saved


def test_an_unknown_block_type_is_refused(marketer_client, email_template):
    response = marketer_client.post(
        reverse("templates:blocks", args=[email_template.pk]), _editor_data(email_template, op="add", type="video")
    )
    assert response.status_code == 400
    assert b"Unknown block type 'video'" in response.content


def test_social_template_saves_an_uploaded_image(marketer_client, brand, tmp_path, settings):
    from io import BytesIO

    from django.core.files.uploadedfile import SimpleUploadedFile
    from PIL import Image

    settings.MEDIA_ROOT = tmp_path
    template = TemplateFactory(brand=brand, channel="mastodon", body="Spring is here")
    png = BytesIO()
    Image.new("RGB", (4, 4), "green").save(png, "PNG")
    data = _editor_data(template, image_alt="A green square", image=SimpleUploadedFile("sq.png", png.getvalue()))

    response = marketer_client.post(reverse("templates:edit", args=[template.pk]), data)

    assert response.status_code == 302
    template.refresh_from_db()
    assert template.image.name.startswith("templates/sq")
    assert template.image_alt == "A green square"


def test_analyst_reads_the_editor_but_cannot_change_anything(analyst_client, email_template):
    page = analyst_client.get(reverse("templates:edit", args=[email_template.pk]))
    assert page.status_code == 200
    assert b'data-testid="save-template"' not in page.content
    assert b'name="subject" value="Spring sale, {{ customer.first_name }}" readonly' in page.content
    assert b"+ Heading" not in page.content  # no block editing
    assert b'data-testid="new-template"' not in analyst_client.get(reverse("templates:list")).content

    data = _editor_data(email_template, name="Hijacked")
    assert analyst_client.post(reverse("templates:edit", args=[email_template.pk]), data).status_code == 403
    blocks = analyst_client.post(
        reverse("templates:blocks", args=[email_template.pk]), {**data, "op": "add", "type": "text"}
    )
    assert blocks.status_code == 403
    assert analyst_client.get(reverse("templates:new")).status_code == 403
    assert analyst_client.post(reverse("templates:test-send", args=[email_template.pk]), {}).status_code == 403
    email_template.refresh_from_db()
    assert email_template.name == "Spring sale email"


# --- Previews -------------------------------------------------------------------------------


def test_template_preview_switches_to_a_persona_variant(marketer_client, email_template, bargain):
    TemplateVariant.objects.create(template=email_template, persona=bargain, subject="Prices down for you")
    url = reverse("templates:preview", args=[email_template.pk])

    default = marketer_client.get(url)
    for_persona = marketer_client.get(url, {"persona": bargain.slug}, HTTP_HX_REQUEST="true")

    [item] = default.context["items"]
    assert item.rendered.subject == "Spring sale, Alex"
    assert b"srcdoc=" in default.content and b'width="375"' in default.content and b'width="640"' in default.content
    [item] = for_persona.context["items"]
    assert item.rendered.subject == "Prices down for you"
    assert b'id="preview-board"' in for_persona.content and b"<html" not in for_persona.content


def test_template_preview_for_a_real_customer(marketer_client, email_template):
    ana = CustomerFactory(first_name="Anastazja", last_name="Wrona")

    page = marketer_client.get(reverse("templates:preview", args=[email_template.pk]), {"customer": ana.pk})

    [item] = page.context["items"]
    assert item.rendered.subject == "Spring sale, Anastazja"
    assert b'data-testid="preview-customer">Anastazja Wrona' in page.content


def test_preview_of_an_unknown_customer_says_so(marketer_client, email_template):
    page = marketer_client.get(reverse("templates:preview", args=[email_template.pk]), {"customer": "999999"})
    assert page.status_code == 200
    assert "That customer does not exist" in page.content.decode()


def test_customer_search_for_the_preview_leaves_erased_customers_out(marketer_client, email_template):
    CustomerFactory(first_name="Zofia", last_name="Kos", email="zofia@example.com")
    erased = CustomerFactory(first_name="Zoran", last_name="Kos", email="zoran@example.com")
    from django.utils import timezone

    erased.erased_at = timezone.now()
    erased.save(update_fields=["erased_at"])
    here = reverse("templates:preview", args=[email_template.pk])

    response = marketer_client.get(reverse("templates:customers"), {"q": "zo", "here": here})

    assert [c.first_name for c in response.context["results"]] == ["Zofia"]
    assert f'href="{here}?customer='.encode() in response.content


def test_campaign_preview_shows_every_step_side_by_side(marketer_client, brand, settings):
    settings.CHORUS_ADAPTERS = {k: v for k, v in settings.CHORUS_ADAPTERS.items() if k != "mastodon"}
    campaign = CampaignFactory(brand=brand)
    StepFactory(campaign=campaign, position=0, channel="email")
    StepFactory(
        campaign=campaign, position=1, channel="sms", template__body="{{ customer.first_name }}: guaranteed deals"
    )
    StepFactory(campaign=campaign, position=2, channel="mastodon", template__body="Spring is here")

    page = marketer_client.get(reverse("campaigns:preview", args=[campaign.pk]))

    assert page.status_code == 200
    items = page.context["items"]
    assert [item.template.channel for item in items] == ["email", "sms", "mastodon"]
    assert items[1].rendered.sms.segments == 1
    assert {f.rule for f in items[1].findings} == {"banned_phrase", "required_phrase"}
    text = page.content.decode()
    assert 'data-testid="preview-sms"' in text and 'class="bubble"' in text
    assert 'class="post-card post-mastodon"' in text
    # No Mastodon provider is configured: the page says so instead of offering a test send.
    assert 'data-testid="test-send-unavailable"' in text


# --- Test sends -----------------------------------------------------------------------------


def test_recipients_are_validated_per_channel():
    assert recipients_parse("email", "QA@Example.com, qa@example.com") == ["qa@example.com"]
    assert recipients_parse("sms", "+48 600 100 200") == ["+48600100200"]
    with pytest.raises(Exception, match=r"“qa@example\.com”: not a phone number in international form"):
        recipients_parse("sms", "qa@example.com")
    with pytest.raises(Exception, match="“anna”: not a Mastodon handle"):
        recipients_parse("mastodon", "anna")


def test_test_send_on_a_channel_without_an_adapter_is_a_clear_error(brand, settings):
    settings.CHORUS_ADAPTERS = {k: v for k, v in settings.CHORUS_ADAPTERS.items() if k != "bluesky"}
    template = TemplateFactory(brand=brand, channel="bluesky", body="Spring is here")

    with pytest.raises(TestSendError, match="No adapter is configured for the 'bluesky' channel"):
        test_send(template=template, recipients=["anna.bsky.social"], by=None)


def test_test_send_needs_recipients(brand):
    brand.seed_list = "+48600100200"
    brand.save()
    template = TemplateFactory(brand=brand)

    with pytest.raises(TestSendError, match="seed list has no Email recipients"):
        test_send(template=template, recipients=[], by=None)


def test_test_send_refuses_content_that_does_not_render(brand):
    template = TemplateFactory(brand=brand, subject="Hi {{ customer.first_name | nope }}")

    with pytest.raises(TestSendError, match="does not render"):
        test_send(template=template, recipients=["qa@example.com"], by=None)


@pytest.mark.django_db(transaction=True)
def test_test_send_goes_to_the_seed_list_through_the_sandbox_without_messages(sandbox, roles, client):
    brand = BrandFactory(seed_list="qa@northwind.example\n+48600100200")
    template = TemplateFactory(brand=brand)
    persona = Persona.objects.create(name="Bargain hunters", slug="bargain-hunters", rules={"all": []})
    TemplateVariant.objects.create(template=template, persona=persona, subject="Prices down, {{ customer.first_name }}")
    client.force_login(UserFactory(username="mia", role=MARKETER))

    response = client.post(reverse("templates:test-send", args=[template.pk]), {"persona": persona.slug})

    assert response.status_code == 200
    assert response.context["error"] == ""
    [result] = response.context["results"]
    assert result.ok and result.recipient == "qa@northwind.example" and result.provider_message_id
    [sent] = SandboxMessage.objects.all()
    assert sent.provider == "sendgrid"
    assert sent.to_address == "qa@northwind.example"
    assert sent.subject == "[Test] Prices down, Alex"
    assert "Northwind Outfitters" in sent.request["content"][1]["value"]  # the brand's layout and footer
    assert b"See it in the sandbox outbox" in response.content
    assert not Message.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_test_send_reports_a_number_the_provider_refuses(sandbox, roles, client):
    brand = BrandFactory()
    template = TemplateFactory(brand=brand, channel="sms", body="Hi {{ customer.first_name }}")
    client.force_login(UserFactory(username="mia", role=MARKETER))

    response = client.post(
        reverse("templates:test-send", args=[template.pk]), {"recipients": "+48600100200, +15005550001"}
    )

    ok, refused = response.context["results"]
    assert ok.ok and ok.recipient == "+48600100200"
    assert not refused.ok and "21211" in refused.error
    assert "Sent to 1 of 2" in response.content.decode()
    assert SandboxMessage.objects.get().body == "Hi Alex"


@pytest.mark.django_db(transaction=True)
def test_test_send_from_a_campaign_preview_renders_as_that_campaigns_step(sandbox, roles, client):
    campaign = CampaignFactory(name="Spring sale", brand=BrandFactory(seed_list="qa@northwind.example"))
    step = StepFactory(campaign=campaign, channel="email", template__subject="{{ campaign.name }}: 20% off")
    other = CampaignFactory(name="Someone else's")
    client.force_login(UserFactory(username="mia", role=MARKETER))
    url = reverse("templates:test-send", args=[step.template_id])

    client.post(url, {"campaign": campaign.pk})
    client.post(url, {"campaign": other.pk})  # not a step of that campaign: rendered on its own

    assert [m.subject for m in SandboxMessage.objects.order_by("pk")] == [
        "[Test] Spring sale: 20% off",
        "[Test] : 20% off",
    ]


def test_test_send_form_reports_bad_recipients(marketer_client, email_template):
    response = marketer_client.post(
        reverse("templates:test-send", args=[email_template.pk]), {"recipients": "qa@example.com, nobody"}
    )
    assert response.status_code == 200
    assert response.context["error"] == "“nobody”: not an email address."
    assert not SandboxMessage.objects.exists()


# --- Review on the campaign page ----------------------------------------------------------------


@pytest.fixture
def brand_manager_client(client, roles):
    client.force_login(UserFactory(username="bruno", role=BRAND_MANAGER))
    return client


def test_campaign_page_lists_findings_and_lets_a_brand_manager_override_one(brand_manager_client, brand):
    campaign = CampaignFactory(brand=brand)
    StepFactory(campaign=campaign, channel="email", template__subject="Guaranteed savings")
    url = reverse("campaigns:detail", args=[campaign.pk])

    page = brand_manager_client.get(url)
    [row] = page.context["findings"]
    assert row["finding"].rule == "banned_phrase" and row["override"] is None
    assert b'data-testid="override-form"' in page.content
    assert b'data-testid="submit-form"' not in page.content  # brand managers do not submit

    refused = brand_manager_client.post(
        reverse("campaigns:override", args=[campaign.pk]), {"fingerprint": row["finding"].fingerprint, "reason": "ok"}
    )
    assert refused.status_code == 400
    assert "at least 15 characters" in refused.content.decode()

    reason = "Legal approved this wording for the spring campaign."
    done = brand_manager_client.post(
        reverse("campaigns:override", args=[campaign.pk]), {"fingerprint": row["finding"].fingerprint, "reason": reason}
    )
    assert done.status_code == 302
    assert FindingOverride.objects.get().reason == reason
    page = brand_manager_client.get(url)
    assert page.context["findings"][0]["override"] is not None
    assert reason in page.content.decode()
    [event] = page.context["events"]
    assert event.action == CampaignEvent.Action.FINDING_OVERRIDDEN


def test_marketer_submits_and_brand_manager_approves_then_schedule_appears(client, roles, brand):
    campaign = CampaignFactory(brand=brand)
    StepFactory(campaign=campaign, channel="email")
    url = reverse("campaigns:detail", args=[campaign.pk])
    client.force_login(UserFactory(username="mia", role=MARKETER))
    page = client.get(url)
    assert b'data-testid="approve-form"' not in page.content
    assert b'data-testid="schedule-form"' not in page.content

    assert client.post(reverse("campaigns:submit", args=[campaign.pk])).status_code == 302
    assert client.post(reverse("campaigns:approve", args=[campaign.pk])).status_code == 403

    client.force_login(UserFactory(username="bruno", role=BRAND_MANAGER))
    refused = client.post(reverse("campaigns:reject", args=[campaign.pk]), {"note": ""})
    assert refused.status_code == 400
    assert b"a note is required" in refused.content
    assert client.post(reverse("campaigns:approve", args=[campaign.pk]), {"note": "Looks right."}).status_code == 302
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.APPROVED

    client.force_login(UserFactory(username="mia"))
    page = client.get(url)
    assert b'data-testid="schedule-form"' in page.content
    actions = [e.action for e in page.context["events"]]
    assert actions == [CampaignEvent.Action.APPROVED, CampaignEvent.Action.SUBMITTED]
    assert "Looks right." in page.content.decode()


def test_submitting_a_campaign_with_a_blocking_finding_shows_why(marketer_client, brand):
    campaign = CampaignFactory(brand=brand)
    StepFactory(campaign=campaign, channel="email", template__subject="Guaranteed savings")

    response = marketer_client.post(reverse("campaigns:submit", args=[campaign.pk]))

    assert response.status_code == 400
    assert "Banned phrase “guaranteed”" in " ".join(response.context["review_errors"])
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.DRAFT


def test_analyst_sees_no_review_forms_and_cannot_post_them(analyst_client, brand):
    campaign = CampaignFactory(brand=brand)
    StepFactory(campaign=campaign, channel="email", template__subject="Guaranteed savings")

    page = analyst_client.get(reverse("campaigns:detail", args=[campaign.pk]))
    assert page.status_code == 200
    for form in (b"submit-form", b"approve-form", b"reject-form", b"override-form"):
        assert b'data-testid="' + form + b'"' not in page.content
    assert b'data-testid="campaign-finding"' in page.content  # the findings are readable
    assert reverse("campaigns:preview", args=[campaign.pk]).encode() in page.content

    [row] = page.context["findings"]
    for name, data in (
        ("campaigns:submit", {}),
        ("campaigns:approve", {}),
        ("campaigns:reject", {"note": "No."}),
        ("campaigns:override", {"fingerprint": row["finding"].fingerprint, "reason": "Because I say so, really."}),
    ):
        assert analyst_client.post(reverse(name, args=[campaign.pk]), data).status_code == 403
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.DRAFT
    assert not FindingOverride.objects.exists() and not CampaignEvent.objects.exists()
