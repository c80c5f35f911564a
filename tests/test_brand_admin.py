"""The brand pages in the Django admin: brand managers edit (audited), marketers only look."""

from __future__ import annotations

import io
from html.parser import HTMLParser

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from campaigns.models import Brand, BrandChange, RequiredPhrase, SmsPrice
from campaigns.services import campaign_submit, finding_override
from config.roles import ADMIN, BRAND_MANAGER, MARKETER
from tests.factories import BrandFactory, TemplateFactory, UserFactory, two_channel_campaign

pytestmark = pytest.mark.django_db


class _FormReader(HTMLParser):
    """What a browser would post for the page's main form: inputs, textareas, selected options."""

    def __init__(self, form_id: str):
        super().__init__()
        self.form_id = form_id
        self.inside = False
        self.data: dict[str, str] = {}
        self._textarea: str | None = None
        self._select: str | None = None

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        if tag == "form":
            self.inside = values.get("id") == self.form_id
        if not self.inside or ("name" not in values and tag != "option"):
            return
        if tag == "input" and values.get("type") not in ("file", "submit", "checkbox", "color"):
            self.data[values["name"]] = values.get("value") or ""
        elif tag == "input" and values.get("type") == "checkbox" and "checked" in values:
            self.data[values["name"]] = values.get("value") or "on"
        elif tag == "textarea":
            self._textarea = values["name"]
            self.data[self._textarea] = ""
        elif tag == "select":
            self._select = values["name"]
            self.data.setdefault(self._select, "")
        elif tag == "option" and self._select and "selected" in values:
            self.data[self._select] = values.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "form":
            self.inside = False
        elif tag == "textarea":
            self._textarea = None
        elif tag == "select":
            self._select = None

    def handle_data(self, data):
        if self._textarea:
            self.data[self._textarea] += data


def _form_data(response) -> dict[str, str]:
    reader = _FormReader("brand_form")
    reader.feed(response.content.decode())
    data = reader.data
    for name, value in data.items():
        if value.startswith("\n"):
            data[name] = value[1:]  # the newline Django puts after <textarea>
    return data


def _staff(username: str, role: str):
    """A user with ``role`` and nothing else: the role alone lets Admins and Brand managers into the admin."""
    return UserFactory(username=username, role=role)


@pytest.fixture
def brand_manager(roles):
    return _staff("bea", BRAND_MANAGER)


@pytest.fixture
def manager_client(client, brand_manager):
    client.force_login(brand_manager)
    return client


@pytest.fixture
def staff_marketer_client(client, roles):
    """A Marketer someone also flagged as staff: still only read access to brands."""
    client.force_login(UserFactory(username="mia", role=MARKETER, is_staff=True))
    return client


def test_a_marketer_without_the_staff_flag_is_not_let_into_the_admin(client, roles, brand):
    client.force_login(UserFactory(username="max", role=MARKETER))
    response = client.get(_change_url(brand))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


@pytest.fixture
def brand():
    return BrandFactory()


def _change_url(brand: Brand) -> str:
    return reverse("admin:campaigns_brand_change", args=[brand.pk])


def test_brand_manager_sees_the_brand_page_with_pickers_preview_templates_and_phrases(manager_client, brand):
    template = TemplateFactory(brand=brand, name="Spring newsletter")
    RequiredPhrase.objects.create(brand=brand, channel="sms", phrase="Reply STOP to opt out")

    response = manager_client.get(_change_url(brand))

    assert response.status_code == 200
    body = response.content.decode()
    for heading in ("Identity", "Colours", "Typography", "Voice and tone", "Legal footer", "Sender identities"):
        assert f">{heading}<" in body
    for heading in ("Guardrails", "Tracking", "Test recipients", "Email preview"):
        assert f">{heading}<" in body
    assert 'type="color" class="chorus-swatch" value="#1f6feb" data-for="id_primary_colour"' in body
    assert 'srcdoc="&lt;!doctype html&gt;' in body.lower()
    assert "Northwind Outfitters Sp. z o.o." in body  # the footer inside the preview
    assert reverse("admin:campaigns_template_change", args=[template.pk]) in body
    assert "Spring newsletter" in body
    assert 'value="Reply STOP to opt out"' in body


def test_brand_manager_saves_an_edit_and_the_change_is_audited_old_to_new(manager_client, brand, brand_manager):
    data = _form_data(manager_client.get(_change_url(brand)))
    data["primary_colour"] = "#FF5A1F"
    data["banned_phrases"] = "risk-free\nguaranteed"
    data["required_phrases-TOTAL_FORMS"] = "1"
    data["required_phrases-0-channel"] = "sms"
    data["required_phrases-0-phrase"] = "Reply STOP to opt out"

    response = manager_client.post(_change_url(brand), data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    brand.refresh_from_db()
    assert (brand.primary_colour, brand.banned_phrase_list) == ("#FF5A1F", ["risk-free", "guaranteed"])
    change = BrandChange.objects.get(brand=brand)
    assert change.changed_by == brand_manager
    assert change.changes == {
        "primary_colour": ["#1F6FEB", "#FF5A1F"],
        "banned_phrases": ["", "risk-free\nguaranteed"],
        "required_phrases": [[], ["SMS: Reply STOP to opt out"]],
    }

    # Saving again without changes records nothing; the history shows on the page.
    page = manager_client.get(_change_url(brand))
    manager_client.post(_change_url(brand), _form_data(page))
    assert BrandChange.objects.filter(brand=brand).count() == 1
    assert "<strong>Primary colour</strong>: #1F6FEB → #FF5A1F" in page.content.decode()


def test_a_new_logo_is_audited_by_file_name(manager_client, brand, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    png = io.BytesIO()
    Image.new("RGB", (8, 8), "#FF5A1F").save(png, format="PNG")
    data = _form_data(manager_client.get(_change_url(brand)))
    data["logo"] = SimpleUploadedFile("northwind.png", png.getvalue(), content_type="image/png")

    assert manager_client.post(_change_url(brand), data).status_code == 302

    brand.refresh_from_db()
    assert brand.logo.name.startswith("brands/northwind")
    assert BrandChange.objects.get(brand=brand).changes == {"logo": ["", brand.logo.name]}
    assert f'src="{brand.logo.url}" alt="Northwind logo"' in manager_client.get(_change_url(brand)).content.decode()


@pytest.mark.parametrize(
    ("colour", "message"),
    [
        ("red", "Use a hex colour such as #1F6FEB."),
        ("#12345G", "Use a hex colour such as #1F6FEB."),
        ("1F6FEB", "Use a hex colour such as #1F6FEB."),
        ("#1234567", "Ensure this value has at most 7 characters (it has 8)."),
    ],
)
def test_an_invalid_hex_colour_is_refused_with_a_message(manager_client, brand, colour, message):
    data = _form_data(manager_client.get(_change_url(brand)))
    data["secondary_colour"] = colour

    response = manager_client.post(_change_url(brand), data)

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["secondary_colour"] == [message]
    assert message in response.content.decode()
    brand.refresh_from_db()
    assert brand.secondary_colour == "#0B1F33"
    assert not BrandChange.objects.exists()


def test_a_bad_test_recipient_is_named(manager_client, brand):
    data = _form_data(manager_client.get(_change_url(brand)))
    data["seed_list"] = "qa@northwind.example\n+48600100200\n@qa@mastodon.example\nqa.bsky.social\nnot an address"

    response = manager_client.post(_change_url(brand), data)

    assert response.context["adminform"].form.errors["seed_list"] == [
        "“not an address” is not an email address, an E.164 phone number (+48600100200) "
        "or a social handle (@user@instance, name.bsky.social)."
    ]


def test_marketer_sees_the_brand_read_only_and_cannot_change_or_add(staff_marketer_client, brand):
    page = staff_marketer_client.get(_change_url(brand))
    assert page.status_code == 200
    body = page.content.decode()
    assert 'name="name"' not in body
    assert 'name="_save"' not in body
    assert "#1F6FEB" in body  # the palette, as swatches with their codes

    data = {"name": "Hijacked", "legal_company_name": "X", "postal_address": "Y"}
    assert staff_marketer_client.post(_change_url(brand), data).status_code == 403
    assert staff_marketer_client.get(reverse("admin:campaigns_brand_add")).status_code == 403
    assert staff_marketer_client.post(reverse("admin:campaigns_brand_add"), data).status_code == 403
    assert staff_marketer_client.post(reverse("admin:campaigns_smsprice_add"), {"country": "PL"}).status_code == 403
    brand.refresh_from_db()
    assert brand.name == "Northwind"
    assert Brand.objects.count() == 1
    assert not BrandChange.objects.exists()


def test_brand_manager_adds_an_sms_price(manager_client):
    response = manager_client.post(
        reverse("admin:campaigns_smsprice_add"), {"country": "PL", "price_per_segment": "0.0450", "currency": "USD"}
    )
    assert response.status_code == 302
    assert str(SmsPrice.objects.get(country="PL").price_per_segment) == "0.0450"


def test_live_preview_renders_the_form_as_edited_without_saving(manager_client, brand):
    data = _form_data(manager_client.get(_change_url(brand)))
    data["primary_colour"] = "#FF5A1F"
    data["legal_company_name"] = "Northwind Retail S.A."

    response = manager_client.post(reverse("admin:campaigns_brand_preview", args=[brand.pk]), data)

    assert response.status_code == 200
    html = response.json()["html"]
    assert "#FF5A1F" in html
    assert "Northwind Retail S.A." in html
    brand.refresh_from_db()
    assert (brand.primary_colour, brand.legal_company_name) == ("#1F6FEB", "Northwind Outfitters Sp. z o.o.")
    assert manager_client.get(reverse("admin:campaigns_brand_preview", args=[brand.pk])).status_code == 405


def test_campaign_admin_shows_the_audit_trail_and_overrides(client, roles):
    admin_user = _staff("root", ADMIN)
    campaign = two_channel_campaign(brand=BrandFactory(banned_phrases="today"))
    from campaigns.content.checks import check_campaign

    finding = check_campaign(campaign)[0]
    finding_override(
        campaign=campaign, fingerprint=finding.fingerprint, reason="Approved by legal for spring.", by=admin_user
    )
    campaign_submit(campaign=campaign, by=admin_user)
    client.force_login(admin_user)

    body = client.get(reverse("admin:campaigns_campaign_change", args=[campaign.pk])).content.decode()

    assert "Approved by legal for spring." in body
    assert "Submitted for review" in body
    assert "Brand-check finding overridden" in body
