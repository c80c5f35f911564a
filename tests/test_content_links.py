"""Links: UTM, short links with signed click tracking, unsubscribe (incl. one-click), preferences, view in browser."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from django.utils import timezone

from campaigns.content.links import (
    BadToken,
    add_utm,
    click_token,
    preferences_token,
    read_click_token,
    split_urls,
    unsubscribe_token,
    view_token,
)
from campaigns.content.render import render_template
from campaigns.models import ShortLink
from campaigns.services import enrollments_dispatch
from channels.models import Message, SandboxMessage
from channels.selectors import sandbox_request
from customers.models import Activity, Consent
from customers.services.consent import consent_current
from tests.factories import (
    BrandFactory,
    CampaignFactory,
    CustomerFactory,
    StepFactory,
    launch,
    two_channel_campaign,
)

UTM = {"utm_source": "chorus", "utm_medium": "sms", "utm_campaign": "spring"}


# --- UTM and URLs in text ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://shop.example/", "https://shop.example/?utm_source=chorus&utm_medium=sms&utm_campaign=spring"),
        ("https://shop.example/a?x=1#frag", "https://shop.example/a?x=1&utm_source=chorus&utm_medium=sms&utm_campaign=spring#frag"),
        ("https://shop.example/?utm_source=news&utm_campaign=", "https://shop.example/?utm_source=news&utm_campaign=&utm_medium=sms"),
        ("HTTP://Shop.example/p", "http://Shop.example/p?utm_source=chorus&utm_medium=sms&utm_campaign=spring"),
        ("mailto:care@shop.example", "mailto:care@shop.example"),
        ("tel:+48600100200", "tel:+48600100200"),
        ("https://", "https://"),
    ],
)  # fmt: skip
def test_utm_is_added_without_overwriting_what_the_url_has(url, expected):
    assert add_utm(url, UTM) == expected


def test_chorus_own_links_get_no_utm(settings):
    settings.CHORUS_PUBLIC_URL = "https://chorus.example"
    assert add_utm("https://chorus.example/u/abc", UTM) == "https://chorus.example/u/abc"


@pytest.mark.parametrize(
    ("text", "urls"),
    [
        ("Go to https://a.example/x.", ["https://a.example/x"]),
        ("(see https://a.example/wiki/Foo_(bar)) now", ["https://a.example/wiki/Foo_(bar)"]),
        ("Two: http://a.example, https://b.example/?q=1!", ["http://a.example", "https://b.example/?q=1"]),
        ("No links here, just a.example", []),
    ],
)
def test_urls_in_text_leave_sentence_punctuation_behind(text, urls):
    pieces = split_urls(text)
    assert "".join(piece for piece, _ in pieces) == text
    assert [piece for piece, is_url in pieces if is_url] == urls


# --- click tokens ------------------------------------------------------------------------


@pytest.mark.parametrize("salt", ["chorus.links.unsubscribe", "chorus.links.view"])
def test_recipient_tokens_are_django_signer_tokens(settings, salt):
    """The cached signer writes exactly what ``signing.Signer`` writes, so either reads the other's tokens."""
    from django.core import signing

    from campaigns.content.links import _sign

    for secret in ("first-secret-" * 3, "second-secret-" * 3):
        settings.SECRET_KEY = secret
        assert _sign(salt, "1z.email.a9") == signing.Signer(salt=salt).sign("1z.email.a9")
        assert signing.Signer(salt=salt).unsign(_sign(salt, "abc")) == "abc"


def test_a_click_token_names_its_message_only_for_its_code():
    token = click_token(code="AbCdEfGh", message_id=123456)
    assert read_click_token("AbCdEfGh", token) == 123456
    with pytest.raises(BadToken):
        read_click_token("ZZZZZZZZ", token)
    message, signature = token.split(".")
    with pytest.raises(BadToken):
        read_click_token("AbCdEfGh", f"{message}0.{signature}")  # another message id, same signature
    with pytest.raises(BadToken):
        read_click_token("AbCdEfGh", "not-a-token")


# --- short links and clicks -------------------------------------------------------------


@pytest.fixture
def sms_message(db):
    """A sent SMS message of a campaign whose template carries a link."""
    customer = CustomerFactory(first_name="Ana", consents={"sms": "opted_in"})
    campaign = CampaignFactory(name="Spring")
    step = StepFactory(
        campaign=campaign,
        position=0,
        channel="sms",
        template__body="Hi {{ customer.first_name }} https://shop.example/s",
    )
    from campaigns.models import CampaignRun

    run = CampaignRun.objects.create(campaign=campaign, number=1)
    return Message.objects.create(
        run=run, step=step, customer=customer, channel="sms", status="delivered", rank=40, to_address=customer.phone
    )


def _short_path(text: str) -> str:
    url = re.search(r"https?://\S+/l/\S+", text).group(0)
    return urlsplit(url).path


@pytest.mark.django_db
def test_a_real_sms_carries_a_signed_short_link_stored_once_per_step_and_url(sms_message):
    cache: dict = {}
    first = render_template(sms_message.step.template, message=sms_message, cache=cache)
    again = render_template(sms_message.step.template, message=sms_message)
    assert first.text == again.text
    link = ShortLink.objects.get()
    assert link.step_id == sms_message.step_id
    assert link.url == "https://shop.example/s?utm_source=chorus&utm_medium=sms&utm_campaign=spring"
    assert re.fullmatch(r"[A-Za-z0-9]{8}", link.code)
    assert _short_path(first.text).startswith(f"/l/{link.code}/")


@pytest.mark.django_db
def test_a_preview_writes_no_short_link_and_a_test_send_stores_one_without_a_message(sms_message):
    template = sms_message.step.template
    preview = render_template(template)
    assert "/l/" in preview.text
    assert not ShortLink.objects.exists()
    test_send = render_template(template, store_links=True)
    link = ShortLink.objects.get(step=None)
    assert test_send.text.endswith(f"/l/{link.code}")


@pytest.mark.django_db
def test_clicking_a_short_link_records_the_click_and_redirects(client, sms_message):
    path = _short_path(render_template(sms_message.step.template, message=sms_message).text)

    response = client.get(path)

    assert response.status_code == 302
    assert response["Location"] == "https://shop.example/s?utm_source=chorus&utm_medium=sms&utm_campaign=spring"
    sms_message.refresh_from_db()
    assert sms_message.status == "clicked" and sms_message.clicked_at is not None
    click = Activity.objects.get(kind="message.clicked")
    assert (click.customer_id, click.campaign_id, click.message_id, click.channel) == (
        sms_message.customer_id,
        sms_message.step.campaign_id,
        sms_message.pk,
        "sms",
    )
    assert click.properties["url"].startswith("https://shop.example/s?")
    sms_message.customer.refresh_from_db()
    assert sms_message.customer.last_engaged_sms_at == click.occurred_at


@pytest.mark.django_db
def test_a_forged_click_redirects_but_records_nothing(client, sms_message):
    path = _short_path(render_template(sms_message.step.template, message=sms_message).text)
    code, token = path.split("/")[2:4]
    other = Message.objects.create(
        run=sms_message.run,
        step=sms_message.step,
        customer=CustomerFactory(),
        channel="sms",
        status="delivered",
        rank=40,
    )
    message_part, signature = token.split(".")
    from campaigns.content.links import to_base36

    for forged in (
        f"/l/{code}/{to_base36(other.pk)}.{signature}",
        f"/l/{code}/{message_part}.AAAAAAAA",
        f"/l/{code}/zz",
    ):
        response = client.get(forged)
        assert response.status_code == 302
    assert not Activity.objects.filter(kind="message.clicked").exists()
    assert set(Message.objects.values_list("status", flat=True)) == {"delivered"}


@pytest.mark.django_db
def test_a_link_of_another_step_does_not_count_for_this_message(client, sms_message):
    other_link = ShortLink.objects.create(code="OtherStp", url="https://shop.example/x", step=StepFactory())
    response = client.get(f"/l/{other_link.code}/{click_token(code=other_link.code, message_id=sms_message.pk)}")
    assert response.status_code == 302
    assert not Activity.objects.filter(kind="message.clicked").exists()


@pytest.mark.django_db
def test_link_previews_and_plain_short_links_redirect_without_counting(client, sms_message):
    path = _short_path(render_template(sms_message.step.template, message=sms_message).text)
    assert client.head(path).status_code == 302
    code = path.split("/")[2]
    assert client.get(f"/l/{code}")["Location"].startswith("https://shop.example/s?")
    assert not Activity.objects.filter(kind="message.clicked").exists()


@pytest.mark.django_db
def test_an_unknown_short_link_is_a_404_page(client):
    response = client.get("/l/NoSuchCd")
    assert response.status_code == 404
    assert b"This link is not valid" in response.content


# --- unsubscribe -----------------------------------------------------------------------


@pytest.fixture
def email_message(db):
    customer = CustomerFactory(first_name="Ana", consents={"email": "opted_in"})
    campaign = CampaignFactory(name="Spring", brand=BrandFactory(primary_colour="#0F766E"))
    step = StepFactory(campaign=campaign, position=0, channel="email")
    from campaigns.models import CampaignRun

    run = CampaignRun.objects.create(campaign=campaign, number=1)
    return Message.objects.create(
        run=run, step=step, customer=customer, channel="email", status="delivered", rank=40, to_address=customer.email
    )


def _unsubscribe_path(message) -> str:
    header = render_template(message.step.template, message=message).headers["List-Unsubscribe"]
    return urlsplit(re.match(r"<([^>]+)>", header).group(1)).path


@pytest.mark.django_db
def test_unsubscribe_link_asks_first_then_opts_out(client, email_message):
    path = _unsubscribe_path(email_message)
    page = client.get(path)
    assert page.status_code == 200
    assert b"Unsubscribe from email?" in page.content and b"#0F766E" in page.content  # the brand's colour
    assert consent_current(customer=email_message.customer, channel="email") == "opted_in"

    done = client.post(path)

    assert done.status_code == 200 and b"You are unsubscribed" in done.content
    latest = email_message.customer.consents.order_by("-occurred_at", "-id").first()
    assert (latest.status, latest.source, latest.evidence["message"]) == ("opted_out", "one_click", email_message.pk)
    unsubscribed = Activity.objects.get(kind="message.unsubscribed")
    assert (unsubscribed.campaign_id, unsubscribed.message_id) == (email_message.step.campaign_id, email_message.pk)
    assert b"You are unsubscribed" in client.get(path).content


@pytest.mark.django_db
def test_one_click_post_without_a_session_or_csrf_token_unsubscribes_once(email_message):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    path = _unsubscribe_path(email_message)
    for _ in range(2):
        response = client.post(
            path, data="List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded"
        )
        assert response.status_code == 200
    outs = email_message.customer.consents.filter(status="opted_out")
    assert outs.count() == 1 and outs.get().evidence["method"] == "one_click"
    assert Activity.objects.filter(kind="message.unsubscribed").count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("view", ["u", "p", "m"])
def test_a_tampered_token_gets_the_invalid_link_page_not_an_error(client, email_message, view):
    good = {
        "u": unsubscribe_token(customer_id=email_message.customer_id, channel="email", message_id=email_message.pk),
        "p": preferences_token(customer_id=email_message.customer_id),
        "m": view_token(message_id=email_message.pk),
    }[view]
    value, signature = good.split(":")
    for token in (f"{value}x:{signature}", f"{value}:{signature[:-1]}", "garbage", "a:b:c"):
        response = client.get(f"/{view}/{token}")
        assert response.status_code == 400, token
        assert b"This link is not valid" in response.content
        post = client.post(f"/{view}/{token}") if view != "m" else response
        assert post.status_code == 400
    assert email_message.customer.consents.count() == 1


@pytest.mark.django_db
def test_links_of_an_erased_customer_are_no_longer_valid(client, email_message):
    token = unsubscribe_token(customer_id=email_message.customer_id, channel="email", message_id=email_message.pk)
    type(email_message.customer).objects.filter(pk=email_message.customer_id).update(erased_at=timezone.now())
    assert client.get(f"/u/{token}").status_code == 404
    assert client.get(f"/m/{view_token(message_id=email_message.pk)}").status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize("view", ["u", "p", "m"])
def test_preview_links_explain_themselves_and_change_nothing(client, view):
    response = client.get(f"/{view}/preview")
    assert response.status_code == 200 and b"This link comes from a preview" in response.content
    if view != "m":
        assert client.post(f"/{view}/preview").status_code == 200
    assert not Consent.objects.exists()


# --- preferences and view in browser ---------------------------------------------------------


@pytest.mark.django_db
def test_preferences_page_opts_in_and_out_per_channel(client, email_message):
    customer = email_message.customer
    path = f"/p/{preferences_token(customer_id=customer.pk)}"
    page = client.get(path)
    assert page.status_code == 200
    html = page.content.decode()
    assert 'value="email" checked' in html and 'value="sms"' in html and 'value="sms" checked' not in html
    assert 'value="social"' not in html  # no social handle: nothing to choose

    saved = client.post(path, {"channels": ["sms"]})

    assert b"Your preferences are saved." in saved.content
    assert consent_current(customer=customer, channel="email") == "opted_out"
    assert consent_current(customer=customer, channel="sms") == "opted_in"
    assert set(customer.consents.filter(source="form").values_list("channel", flat=True)) == {"email", "sms"}
    assert consent_current(customer=customer, channel="whatsapp") is None  # unticked and never asked: untouched


@pytest.mark.django_db
def test_view_in_browser_shows_the_email_as_the_customer_got_it(client, email_message):
    response = client.get(f"/m/{view_token(message_id=email_message.pk)}")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Spring sale" in html and "Hi Ana," in html
    assert response["X-Robots-Tag"] == "noindex, nofollow"


# --- through the real SDKs and the sandbox -------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_sent_email_offers_one_click_unsubscribe_that_works(sandbox, client):
    ana = CustomerFactory(first_name="Ana", consents={"email": "opted_in"})
    campaign = two_channel_campaign()
    campaign.steps.filter(channel="sms").delete()
    run = launch(campaign)
    while enrollments_dispatch():
        pass
    mail = SandboxMessage.objects.get(provider="sendgrid")
    headers = sandbox_request(mail)["headers"]
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe = re.fullmatch(r"<([^>]+)>", headers["List-Unsubscribe"]).group(1)
    assert unsubscribe.startswith(f"{sandbox.url}/u/")
    html = next(c["value"] for c in mail.request["content"] if c["type"] == "text/html")
    assert unsubscribe in html.replace("&amp;", "&")
    assert f"Unsubscribe: {unsubscribe}" in mail.body  # the plain-text part

    response = client.post(urlsplit(unsubscribe).path, data="List-Unsubscribe=One-Click", content_type="text/plain")

    assert response.status_code == 200
    assert consent_current(customer=ana, channel="email") == "opted_out"
    message = Message.objects.get(run=run)
    assert Activity.objects.filter(kind="message.unsubscribed", message=message, campaign=campaign).exists()


@pytest.mark.django_db(transaction=True)
def test_a_sent_sms_link_counts_the_click_on_its_message(sandbox, client):
    ana = CustomerFactory(first_name="Ana", consents={"sms": "opted_in"})
    campaign = CampaignFactory(name="Flash sale")
    StepFactory(
        campaign=campaign,
        position=0,
        channel="sms",
        template__body="{{ customer.first_name }}: 20% off https://northwind.example/flash Reply STOP to opt out",
    )
    run = launch(campaign)
    while enrollments_dispatch():
        pass
    body = SandboxMessage.objects.get(provider="twilio").body
    assert re.fullmatch(rf"Ana: 20% off {sandbox.url}/l/\w{{8}}/\w+\.[\w-]{{8}} Reply STOP to opt out", body), body

    response = client.get(_short_path(body))

    assert response["Location"] == (
        "https://northwind.example/flash?utm_source=chorus&utm_medium=sms&utm_campaign=flash-sale"
    )
    message = Message.objects.get(run=run)
    message.refresh_from_db()
    assert message.status == "clicked"
    assert Activity.objects.filter(kind="message.clicked", customer=ana, message=message, campaign=campaign).exists()
