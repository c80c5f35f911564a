"""The brands and templates API: role permissions, validation (Liquid with line and column, blocks,
channel fields), nested persona variants, rendering with brand-check findings, and the schema."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from campaigns.models import Brand, BrandChange, RequiredPhrase, Template, TemplateVariant
from config.roles import ADMIN, ANALYST, BRAND_MANAGER, MARKETER
from customers.models import Persona
from tests.factories import BrandFactory, CampaignFactory, CustomerFactory, StepFactory, TemplateFactory, api_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def brand(roles):
    return BrandFactory(banned_phrases="guaranteed", link_domains="northwind.example")


@pytest.fixture
def bargain():
    return Persona.objects.create(
        name="Bargain hunters", slug="bargain-hunters", rules={"all": [{"field": "country", "op": "eq", "value": "DE"}]}
    )


@pytest.fixture
def marketer(roles):
    return api_client(MARKETER)


def _email(brand, **overrides) -> dict:
    return {
        "name": "Spring sale",
        "brand": brand.pk,
        "channel": "email",
        "subject": "Spring sale, {{ customer.first_name | default: 'friend' }}",
        "preheader": "20% off",
        "blocks": [
            {"type": "heading", "text": "Spring sale"},
            {"type": "button", "text": "Shop now", "url": "https://northwind.example/sale"},
        ],
        **overrides,
    }


# --- Brands ------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [ADMIN, BRAND_MANAGER, MARKETER, ANALYST])
def test_every_role_reads_brands(brand, role):
    RequiredPhrase.objects.create(brand=brand, channel="sms", phrase="Reply STOP to opt out")

    response = api_client(role).get(f"/api/v1/brands/{brand.pk}/")

    assert response.status_code == 200
    body = response.json()
    assert body["legal_footer"] == "Northwind Outfitters Sp. z o.o., ul. Floriańska 1, 31-019 Kraków, Poland"
    assert body["banned_phrases"] == ["guaranteed"]
    assert body["required_phrases"] == [{"channel": "sms", "phrase": "Reply STOP to opt out"}]
    assert body["utm_parameters"] == {"utm_source": "chorus"}


@pytest.mark.parametrize("role", [MARKETER, ANALYST])
def test_only_brand_managers_and_admins_write_brands(brand, role):
    client = api_client(role)

    assert client.patch(f"/api/v1/brands/{brand.pk}/", {"name": "Hijacked"}, format="json").status_code == 403
    assert (
        client.post("/api/v1/brands/", {"name": "New", "legal_company_name": "X", "postal_address": "Y"}).status_code
        == 403
    )
    assert client.delete(f"/api/v1/brands/{brand.pk}/").status_code == 403
    brand.refresh_from_db()
    assert brand.name == "Northwind"


def test_brand_manager_creates_a_brand(roles):
    response = api_client(BRAND_MANAGER).post(
        "/api/v1/brands/",
        {
            "name": "Southwind",
            "legal_company_name": "Southwind Ltd",
            "postal_address": "1 Harbour Road, Gdańsk",
            "primary_colour": "#112233",
            "banned_phrases": ["cheap", "act now"],
            "link_domains": ["southwind.example"],
            "utm_parameters": {"utm_source": "chorus", "utm_content": "launch"},
            "required_phrases": [{"channel": "sms", "phrase": "Reply STOP to opt out"}],
            "seed_list": ["qa@southwind.example"],
        },
        format="json",
    )

    assert response.status_code == 201, response.json()
    brand = Brand.objects.get(name="Southwind")
    assert brand.banned_phrase_list == ["cheap", "act now"]
    assert brand.utm_defaults == {"utm_source": "chorus", "utm_content": "launch"}
    assert brand.required_phrases_for("sms") == ["Reply STOP to opt out"]
    assert brand.seeds == ["qa@southwind.example"]
    assert not BrandChange.objects.exists()  # a new brand has no changes to audit


def test_brand_changes_are_audited(brand, roles):
    client = api_client(BRAND_MANAGER)

    response = client.patch(
        f"/api/v1/brands/{brand.pk}/",
        {"primary_colour": "#FF0000", "required_phrases": [{"channel": "sms", "phrase": "STOP to end"}]},
        format="json",
    )

    assert response.status_code == 200, response.json()
    [change] = BrandChange.objects.all()
    assert change.changed_by.groups.get().name == BRAND_MANAGER
    assert change.changes == {"primary_colour": ["#1F6FEB", "#FF0000"], "required_phrases": [[], ["SMS: STOP to end"]]}


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        ({"primary_colour": "red"}, "primary_colour", "hex colour"),
        ({"link_domains": ["not a domain"]}, "link_domains", "is not a domain name"),
        ({"utm_parameters": "utm_source=x"}, "utm_parameters", "Expected an object"),
        ({"email_from_address": "nope"}, "email_from_address", "valid email"),
        ({"sms_max_segments": -1}, "sms_max_segments", "greater than or equal to 0"),
        ({"required_phrases": [{"channel": "fax", "phrase": "x"}]}, "required_phrases", "not a valid choice"),
        ({"banned_phrases": "one\ntwo"}, "banned_phrases", "Expected a list"),
    ],
)
def test_bad_brand_input_is_a_400_naming_the_field(brand, payload, field, words):
    response = api_client(BRAND_MANAGER).patch(f"/api/v1/brands/{brand.pk}/", payload, format="json")

    assert response.status_code == 400
    assert words in str(response.json()[field])
    assert not BrandChange.objects.exists()


def test_a_brand_in_use_cannot_be_deleted(brand):
    TemplateFactory(brand=brand)
    client = api_client(ADMIN)

    response = client.delete(f"/api/v1/brands/{brand.pk}/")
    assert response.status_code == 409
    assert "used by templates or campaigns" in response.json()["detail"]

    unused = BrandFactory(name="Unused", legal_company_name="U", postal_address="U")
    assert client.delete(f"/api/v1/brands/{unused.pk}/").status_code == 204


# --- Templates CRUD ---------------------------------------------------------------------------


def test_marketer_creates_an_email_template_with_a_persona_variant(marketer, brand, bargain):
    payload = _email(brand, variants=[{"persona": bargain.slug, "subject": "Prices down, {{ customer.first_name }}"}])

    response = marketer.post("/api/v1/templates/", payload, format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    template = Template.objects.get(pk=body["id"])
    assert template.blocks == payload["blocks"]
    assert body["variants"] == [
        {
            "persona": "bargain-hunters",
            "subject": "Prices down, {{ customer.first_name }}",
            "preheader": None,
            "blocks": None,
            "body": None,
            "image_alt": None,
        }
    ]
    assert TemplateVariant.objects.get().persona == bargain


def test_templates_are_listed_and_filtered(marketer, brand):
    TemplateFactory(brand=brand, name="Spring email")
    TemplateFactory(brand=brand, name="Spring SMS", channel="sms", body="Hi")
    other = BrandFactory(name="Southwind", legal_company_name="S", postal_address="S")
    TemplateFactory(brand=other, name="Autumn email")

    def names(**params):
        response = api_client(ANALYST).get("/api/v1/templates/", params)
        assert response.status_code == 200
        return sorted(t["name"] for t in response.json()["results"])

    assert names() == ["Autumn email", "Spring SMS", "Spring email"]
    assert names(channel="sms") == ["Spring SMS"]
    assert names(brand=other.pk) == ["Autumn email"]
    assert names(search="spring") == ["Spring SMS", "Spring email"]


def test_liquid_syntax_error_is_a_400_naming_the_field_line_and_column(marketer, brand):
    response = marketer.post("/api/v1/templates/", _email(brand, subject="Hi\n{{ customer.first_name "), format="json")

    assert response.status_code == 400
    [message] = response.json()["subject"]
    assert message.startswith("Subject, line 2, column 1:")
    assert not Template.objects.exists()


def test_liquid_error_in_a_block_names_the_block(marketer, brand):
    blocks = [{"type": "heading", "text": "Hi"}, {"type": "text", "text": "Dear {{ customer.first_name | nope }}"}]

    response = marketer.post("/api/v1/templates/", _email(brand, blocks=blocks), format="json")

    assert response.status_code == 400
    [message] = response.json()["blocks"]
    assert message.startswith("Block 2 (text), text: line 1, column")
    assert "unknown filter 'nope'" in message


@pytest.mark.parametrize(
    ("blocks", "words"),
    [
        ([{"type": "button", "text": "Shop"}], "Block 1 (button), url: A button block needs a url."),
        ([{"type": "video", "src": "x"}], "Block 1, type: Unknown block type 'video'"),
        ([{"type": "button", "text": "Go", "url": "javascript:alert(1)"}], "is not an http(s), mailto: or tel: link"),
        ({"type": "text"}, "The body must be a list of blocks."),
        ([], "add at least one block"),
    ],
)
def test_bad_blocks_are_a_400_naming_the_block(marketer, brand, blocks, words):
    response = marketer.post("/api/v1/templates/", _email(brand, blocks=blocks), format="json")

    assert response.status_code == 400
    assert words in " ".join(response.json()["blocks"])


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        ({"channel": "sms", "body": "Hi", "subject": "Subject?"}, "subject", "SMS templates have no subject"),
        ({"channel": "sms"}, "body", "Message: required for SMS templates."),
        ({"channel": "fax", "body": "Hi"}, "channel", "not a valid choice"),
        ({"channel": "email", "subject": ""}, "subject", "Subject: required for Email templates."),
        ({"channel": "email", "body": "Hi"}, "body", "Email templates have no body"),
        ({"brand": 999999}, "brand", "does not exist"),
        ({"name": ""}, "name", "may not be blank"),
        ({"variants": [{"persona": "nobody"}]}, "variants", "does not exist"),
    ],
)
def test_bad_template_input_is_a_400_naming_the_field(marketer, brand, payload, field, words):
    data = _email(brand)
    if payload.get("channel", "email") != "email":
        for key in ("subject", "preheader", "blocks"):
            data.pop(key)
    data.update(payload)

    response = marketer.post("/api/v1/templates/", data, format="json")

    assert response.status_code == 400
    assert words in str(response.json()[field])
    assert not Template.objects.exists()


def test_a_variants_liquid_error_names_the_persona(marketer, brand, bargain):
    payload = _email(brand, variants=[{"persona": bargain.slug, "subject": "{% if %}"}])

    response = marketer.post("/api/v1/templates/", payload, format="json")

    assert response.status_code == 400
    [message] = response.json()["variants"]
    assert message.startswith("bargain-hunters: Subject")
    assert not Template.objects.exists() and not TemplateVariant.objects.exists()


def test_a_persona_listed_twice_is_refused(marketer, brand, bargain):
    payload = _email(brand, variants=[{"persona": bargain.slug}, {"persona": bargain.slug, "subject": "x"}])

    response = marketer.post("/api/v1/templates/", payload, format="json")

    assert response.status_code == 400
    assert "listed twice" in str(response.json()["variants"])


def test_patch_changes_some_fields_and_replaces_the_variants(marketer, brand, bargain):
    template = TemplateFactory(brand=brand)
    TemplateVariant.objects.create(template=template, persona=bargain, subject="Old")

    response = marketer.patch(f"/api/v1/templates/{template.pk}/", {"preheader": "New preheader"}, format="json")
    assert response.status_code == 200, response.json()
    template.refresh_from_db()
    assert template.preheader == "New preheader"
    assert template.subject == "Spring sale, {{ customer.first_name }}"
    assert TemplateVariant.objects.get().subject == "Old"  # variants not in the request stay

    response = marketer.patch(f"/api/v1/templates/{template.pk}/", {"variants": []}, format="json")
    assert response.status_code == 200
    assert response.json()["variants"] == []
    assert not TemplateVariant.objects.exists()


def test_the_channel_of_a_template_cannot_change(marketer, brand):
    template = TemplateFactory(brand=brand)

    response = marketer.patch(f"/api/v1/templates/{template.pk}/", {"channel": "sms", "body": "Hi"}, format="json")

    assert response.status_code == 400
    assert "cannot change" in response.json()["channel"][0]


def test_analyst_reads_templates_but_cannot_write(brand):
    template = TemplateFactory(brand=brand)
    client = api_client(ANALYST)

    assert client.get(f"/api/v1/templates/{template.pk}/").status_code == 200
    assert client.post("/api/v1/templates/", _email(brand), format="json").status_code == 403
    assert client.patch(f"/api/v1/templates/{template.pk}/", {"name": "x"}, format="json").status_code == 403
    assert client.delete(f"/api/v1/templates/{template.pk}/").status_code == 403
    assert api_client(BRAND_MANAGER).post("/api/v1/templates/", _email(brand), format="json").status_code == 403


def test_a_template_used_by_a_step_cannot_be_deleted(marketer, brand):
    step = StepFactory(campaign=CampaignFactory(brand=brand))

    response = marketer.delete(f"/api/v1/templates/{step.template_id}/")
    assert response.status_code == 409
    assert "used by campaign steps" in response.json()["detail"]

    unused = TemplateFactory(brand=brand)
    assert marketer.delete(f"/api/v1/templates/{unused.pk}/").status_code == 204
    assert marketer.get(f"/api/v1/templates/{unused.pk}/").status_code == 404


# --- Rendering ------------------------------------------------------------------------------------


def test_render_for_a_customer_returns_content_and_findings(marketer, brand):
    template = TemplateFactory(brand=brand, subject="Guaranteed savings, {{ customer.first_name }}")
    ana = CustomerFactory(first_name="Ana")

    response = marketer.post(f"/api/v1/templates/{template.pk}/render", {"customer": ana.pk}, format="json")

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["channel"] == "email"
    assert body["subject"] == "Guaranteed savings, Ana"
    assert "Hi Ana, 20% off everything this week." in body["text"]
    assert "<html" in body["html"].lower()
    assert "List-Unsubscribe" in body["headers"]
    assert body["links"] and all("utm_medium=email" in link for link in body["links"])
    assert body["sms"] is None and body["problems"] == []
    [finding] = body["findings"]
    assert finding["rule"] == "banned_phrase"
    assert finding["severity"] == "error"
    assert finding["where"] == "subject"
    assert "Banned phrase “guaranteed”" in finding["message"]


def test_render_with_an_ad_hoc_context_and_a_persona(marketer, brand, bargain):
    template = TemplateFactory(brand=brand)
    TemplateVariant.objects.create(template=template, persona=bargain, subject="Deals for {{ customer.first_name }}")

    response = marketer.post(
        f"/api/v1/templates/{template.pk}/render",
        {"context": {"customer": {"first_name": "Zed"}}, "persona": bargain.slug},
        format="json",
    )

    assert response.status_code == 200
    assert response.json()["subject"] == "Deals for Zed"


def test_render_of_an_sms_reports_segments(brand):
    template = TemplateFactory(brand=brand, channel="sms", body="{{ customer.first_name }}: 20% off today")

    response = api_client(ANALYST).post(f"/api/v1/templates/{template.pk}/render", {}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert body["text"] == "Alex: 20% off today"
    assert body["sms"]["encoding"] == "GSM-7"
    assert body["sms"]["segments"] == 1
    assert body["sms"]["characters"] == len("Alex: 20% off today")


def test_render_reports_unknown_variables_as_findings(marketer, brand):
    template = TemplateFactory(brand=brand, subject="Hi {{ settings.SECRET_KEY }}")

    response = marketer.post(f"/api/v1/templates/{template.pk}/render", {}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert body["subject"] == "Hi"
    assert [f["rule"] for f in body["findings"]] == ["unknown_variable"]


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        ({"customer": 999999}, "customer", "No customer with id 999999."),
        ({"customer": "ana"}, "customer", "A valid integer is required."),
        ({"context": ["not", "an", "object"]}, "context", "Expected an object"),
        ({"persona": "nobody"}, "persona", "No persona with slug “nobody”."),
    ],
)
def test_bad_render_input_is_a_400_naming_the_field(marketer, brand, payload, field, words):
    template = TemplateFactory(brand=brand)

    response = marketer.post(f"/api/v1/templates/{template.pk}/render", payload, format="json")

    assert response.status_code == 400
    [message] = response.json()[field]
    assert message.startswith(words)


def test_render_of_a_missing_template_is_404(marketer):
    assert marketer.post("/api/v1/templates/999999/render", {}, format="json").status_code == 404


def test_render_needs_a_login():
    from rest_framework.test import APIClient

    assert APIClient().post("/api/v1/templates/1/render", {}, format="json").status_code == 401


# --- Schema ---------------------------------------------------------------------------------------


def test_every_endpoint_is_in_the_openapi_schema_with_its_errors(client, tmp_path):
    schema = client.get("/api/schema/", {"format": "json"}).json()
    paths = schema["paths"]
    for path in (
        "/api/v1/brands/",
        "/api/v1/brands/{id}/",
        "/api/v1/templates/",
        "/api/v1/templates/{id}/",
        "/api/v1/templates/{id}/render",
    ):
        assert path in paths, path
    render = paths["/api/v1/templates/{id}/render"]["post"]
    assert set(render["responses"]) == {"200", "400", "403", "404"}
    assert set(paths["/api/v1/templates/"]["post"]["responses"]) == {"201", "400", "403"}
    assert "409" in paths["/api/v1/brands/{id}/"]["delete"]["responses"]
    # The schema validates with no warnings (drf-spectacular's own check).
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
