"""The Sandbox outbox: per-channel tabs, search as you type, and each request's rendered content."""

from __future__ import annotations

import pytest
from django.urls import reverse

from campaigns.services import enrollments_dispatch
from channels.adapters import Outbound
from channels.adapters.sendgrid import SendGridAdapter
from channels.models import Message, SandboxMessage
from tests.factories import CustomerFactory, UserFactory, launch, two_channel_campaign

HTML = '<html><body><h1>Spring sale</h1><a href="https://northwind.example/sale">Shop now</a></body></html>'


@pytest.fixture
def outbox(db):
    email = SandboxMessage.objects.create(
        provider="sendgrid",
        provider_message_id="x1.sandbox.0",
        to_address="ana@example.com",
        from_address="hello@northwind.example",
        subject="Spring sale, Ana",
        body="Hi Ana, 20% off everything.",
        request={
            "content": [
                {"type": "text/plain", "value": "Hi Ana, 20% off everything."},
                {"type": "text/html", "value": HTML},
            ],
            "headers": {
                "List-Unsubscribe": "<https://chorus.example/u/tok>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            },
            "categories": ["campaign-7"],
            "custom_args": {"chorus_message_id": "99999"},
            "reply_to": {"email": "care@northwind.example"},
        },
    )
    sms = SandboxMessage.objects.create(
        provider="twilio",
        provider_message_id="SM1",
        to_address="+48600100200",
        from_address="+15005550006",
        body="Bo: 20% off today. " * 10,
        request={"To": "+48600100200", "Body": "Bo: 20% off today. " * 10},
    )
    whatsapp = SandboxMessage.objects.create(
        provider="twilio",
        provider_message_id="SM2",
        to_address="whatsapp:+48600100300",
        from_address="whatsapp:+14155238886",
        body="Cy, your order shipped 📦",
    )
    return email, sms, whatsapp


def rows(response) -> set[int]:
    html = response.content.decode()
    return {m.pk for m in SandboxMessage.objects.all() if f'data-message="{m.pk}"' in html}


def test_tabs_show_one_channel_each_with_counts(outbox, analyst_client):
    email, sms, whatsapp = outbox
    url = reverse("outbox:list")
    everything = analyst_client.get(url)
    assert rows(everything) == {email.pk, sms.pk, whatsapp.pk}
    html = everything.content.decode()
    assert 'WhatsApp<span class="count">1</span>' in html and 'All<span class="count">3</span>' in html
    assert rows(analyst_client.get(url, {"channel": "email"})) == {email.pk}
    assert rows(analyst_client.get(url, {"channel": "sms"})) == {sms.pk}
    assert rows(analyst_client.get(url, {"channel": "whatsapp"})) == {whatsapp.pk}
    assert rows(analyst_client.get(url, {"channel": "fax"})) == {email.pk, sms.pk, whatsapp.pk}


def test_search_matches_recipient_subject_and_text_and_keeps_the_tabs_in_step(outbox, analyst_client):
    email, sms, whatsapp = outbox
    url = reverse("outbox:list")
    assert rows(analyst_client.get(url, {"q": "spring sale"})) == {email.pk}
    assert rows(analyst_client.get(url, {"q": "100300"})) == {whatsapp.pk}
    assert rows(analyst_client.get(url, {"q": "today", "channel": "email"})) == set()
    fragment = analyst_client.get(url, {"q": "today"}, headers={"HX-Request": "true"})
    html = fragment.content.decode()
    assert rows(fragment) == {sms.pk}
    assert html.lstrip().startswith('<div id="outbox"')
    # The tabs come along out of band, carrying the search.
    assert 'id="outbox-tabs"' in html and 'hx-swap-oob="true"' in html
    assert "?channel=sms&amp;q=today" in html
    empty = analyst_client.get(url, {"q": "nothing like this"})
    assert "Nothing in the outbox matches “nothing like this”." in empty.content.decode()


def test_recipients_of_one_call_are_listed_each_with_the_text_they_got(sandbox, analyst_client):
    shared = {"sender": "news@brand.example", "subject": "Winter clearance", "body": "Up to 30% off. Stop: -unsub-"}
    SendGridAdapter().send(
        [
            Outbound(message_id=n, to=f"{name}@example.com", substitutions={"-unsub-": f"https://u/{name}"}, **shared)
            for n, name in enumerate(("ann", "bob", "cy"), start=1)
        ]
    )

    page = analyst_client.get(reverse("outbox:list"), {"q": "clearance"}).content.decode()
    for name in ("ann", "bob", "cy"):
        assert f"{name}@example.com" in page and f"Stop: https://u/{name}" in page


def test_email_detail_shows_the_html_sandboxed_the_text_part_and_the_headers(outbox, analyst_client):
    email, _, _ = outbox
    html = analyst_client.get(reverse("outbox:detail", args=[email.pk])).content.decode()
    assert 'sandbox="" referrerpolicy="no-referrer" srcdoc="&lt;html&gt;&lt;body&gt;&lt;h1&gt;Spring sale' in html
    assert '<pre data-testid="email-text">Hi Ana, 20% off everything.</pre>' in html
    assert "&lt;https://chorus.example/u/tok&gt;" in html and "List-Unsubscribe=One-Click" in html
    assert "campaign-7" in html and "care@northwind.example" in html
    assert "Chorus message #99999 no longer exists." in html


def test_sms_detail_shows_the_body_and_its_segments(outbox, analyst_client):
    _, sms, whatsapp = outbox
    html = analyst_client.get(reverse("outbox:detail", args=[sms.pk])).content.decode()
    assert "<strong>GSM-7</strong>" in html and "<strong>2</strong> segments" in html
    wa = analyst_client.get(reverse("outbox:detail", args=[whatsapp.pk])).content.decode()
    assert "phone-whatsapp" in wa and "<strong>UCS-2</strong>" in wa


def test_outbox_says_when_the_sandbox_is_off(outbox, analyst_client, settings):
    settings.CHORUS_SANDBOX = False
    html = analyst_client.get(reverse("outbox:list")).content.decode()
    assert "Sandbox off" in html and "CHORUS_SANDBOX=false" in html


def test_a_user_without_a_role_cannot_see_the_outbox(outbox, client):
    client.force_login(UserFactory(username="nobody"))
    assert client.get(reverse("outbox:list")).status_code == 403
    assert client.get(reverse("outbox:detail", args=[outbox[0].pk])).status_code == 403


def test_unknown_outbox_message_is_404(analyst_client):
    assert analyst_client.get(reverse("outbox:detail", args=[123456])).status_code == 404


@pytest.mark.django_db(transaction=True)
def test_a_real_send_links_the_outbox_to_the_customer_and_the_webhooks_chorus_received(
    sandbox, settings, roles, client
):
    settings.CHORUS_SANDBOX_PLAYBACK = {"email": {"delivered": 1.0}, "sms": {"delivered": 1.0}}
    ana = CustomerFactory(first_name="Ana", consents={"email": "opted_in", "sms": "opted_in"})
    launch(two_channel_campaign())
    while enrollments_dispatch():
        pass
    client.force_login(UserFactory(username="ada", role="Analyst"))
    email = SandboxMessage.objects.get(provider="sendgrid")
    html = client.get(reverse("outbox:detail", args=[email.pk])).content.decode()
    assert reverse("customers:detail", args=[ana.pk]) in html
    assert 'data-testid="webhook-events"' in html
    assert ">processed<" in html and ">delivered<" in html
    assert Message.objects.get(customer=ana, channel="email").status == "delivered"
    sms = SandboxMessage.objects.get(provider="twilio")
    html = client.get(reverse("outbox:detail", args=[sms.pk])).content.decode()
    assert reverse("customers:detail", args=[ana.pk]) in html and ">delivered<" in html
