"""Sandbox playback: configured shares of delivered, bounced, failed, opened, clicked, read and STOP,
drawn per message from its id, posted signed to Chorus's own webhooks through the real send path."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from campaigns.services import enrollments_dispatch
from channels.adapters import Outbound, adapter_for
from channels.models import Message, ProviderEvent, SandboxMessage, Suppression, WebhookDelivery
from channels.sandbox import sandbox_events_emit
from channels.sandbox.playback import clickable_links, playback_plan
from channels.selectors import failed_messages
from customers.models import Activity, Customer
from tests.factories import CampaignFactory, CustomerFactory, StepFactory, email_only_campaign, launch

from config.settings import _sandbox_playback  # isort: skip

CERTAIN = {"email": {"delivered": 1.0}, "sms": {"delivered": 1.0}, "whatsapp": {"delivered": 1.0}}


def play(settings, **profiles) -> None:
    settings.CHORUS_SANDBOX_PLAYBACK = {**CERTAIN, **profiles}


def send_all(campaign):
    run = launch(campaign)
    while enrollments_dispatch():
        pass
    return run


def sms_campaign(channel: str = "sms"):
    campaign = CampaignFactory(brand__whatsapp_sender="+14155238886")
    StepFactory(campaign=campaign, position=0, channel=channel, template__body="{{ customer.first_name }}: 20% off")
    return campaign


def kinds(customer, channel: str) -> list[str]:
    activities = Activity.objects.filter(customer=customer, channel=channel, kind__startswith="message.")
    return sorted(activities.values_list("kind", flat=True))


# --- configuration --------------------------------------------------------------


def test_playback_setting_parses_shares_and_delays_per_channel():
    parsed = _sandbox_playback("email=delivered:0.95,bounce:0.03,open:0.45,click:0.12,delay:20; sms=stop:0.02")
    assert parsed == {
        "email": {"delivered": 0.95, "bounce": 0.03, "open": 0.45, "click": 0.12, "delay": 20},
        "sms": {"stop": 0.02},
    }


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ("fax=delivered:1", "unknown channel 'fax'"),
        ("email=stop:0.1", "'stop' is not a email event"),
        ("sms=delivered:1.5", "share of sms delivered must be a number from 0 to 1, got '1.5'"),
        ("sms=delivered:lots", "got 'lots'"),
        ("email=delivered:0.9,bounce:0.2", "outcomes (delivered, bounce) add up to 1.1"),
        ("email=open:0.1,click:0.2", "click cannot exceed open"),
        ("email=delay:soon", "delay must be whole seconds from 0 to 900, got 'soon'"),
        ("email=delay:3600", "got '3600'"),
        ("email=delivered:1;email=delivered:0.5", "'email' is given twice"),
    ],
)
def test_malformed_playback_setting_names_the_problem(raw, needle):
    with pytest.raises(ImproperlyConfigured, match="CHORUS_SANDBOX_PLAYBACK") as raised:
        _sandbox_playback(raw)
    assert needle in str(raised.value)


def test_outcomes_are_drawn_per_message_in_the_configured_shares_and_the_same_every_time(settings):
    play(settings, email={"delivered": 0.9, "bounce": 0.05, "open": 0.4, "click": 0.1})
    request = {"content": [{"type": "text/html", "value": '<a href="https://northwind.example/sale">Shop</a>'}]}
    messages = [
        SandboxMessage(provider="sendgrid", provider_message_id=f"x{i}.sandbox.0", to_address="a@example.com")
        for i in range(4000)
    ]
    for message in messages:
        message.request = request
    plans = [playback_plan(message) for message in messages]
    assert plans == [playback_plan(message) for message in messages]
    outcomes = [plan.outcome for plan in plans]
    # 4,000 fixed ids: the shares land within a few standard deviations of the configured rates.
    assert 3500 < outcomes.count("delivered") < 3700
    assert 140 < outcomes.count("bounce") < 260
    assert 140 < outcomes.count("deferred") < 260
    opened = sum("open" in plan.later for plan in plans)
    clicked = [plan for plan in plans if "click" in plan.later]
    assert 1300 < opened < 1580
    assert 280 < len(clicked) < 440
    assert all("open" in plan.later and plan.click_url == "https://northwind.example/sale" for plan in clicked)


def test_a_bounce_address_bounces_whatever_the_shares(settings):
    play(settings)
    message = SandboxMessage(provider="sendgrid", provider_message_id="b.sandbox.0", outcome="bounce")
    assert playback_plan(message).outcome == "bounce"


def test_clicks_never_pick_unsubscribe_preferences_or_view_in_browser_links(settings):
    settings.CHORUS_PUBLIC_URL = "https://chorus.example"
    html = (
        '<a href="https://chorus.example/m/tok">View in browser</a>'
        '<a href="https://chorus.example/l/abc123">Shop</a>'
        '<a href="https://chorus.example/p/tok">Preferences</a>'
        '<a href="https://chorus.example/u/tok">Unsubscribe</a>'
        '<a href="mailto:care@northwind.example">Write to us</a>'
        '<a href="https://elsewhere.example/unsubscribe?x=1">Their unsubscribe</a>'
    )
    request = {
        "content": [{"type": "text/html", "value": html}],
        "headers": {"List-Unsubscribe": "<https://chorus.example/u/tok>"},
    }
    assert clickable_links(request) == ["https://chorus.example/l/abc123"]


# --- through the real send path ---------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_delivered_opened_and_clicked_email_reaches_the_timeline_with_the_clicked_link(sandbox, settings):
    play(settings, email={"delivered": 1.0, "open": 1.0, "click": 1.0})
    ana = CustomerFactory(consents={"email": "opted_in"})
    run = send_all(email_only_campaign())
    message = Message.objects.get(run=run, customer=ana)
    assert message.status == "clicked"
    assert message.delivered_at and message.opened_at and message.clicked_at
    assert kinds(ana, "email") == ["message.clicked", "message.delivered", "message.opened", "message.sent"]
    click = Activity.objects.get(customer=ana, kind="message.clicked")
    recorded = SandboxMessage.objects.get()
    assert click.properties["url"] in clickable_links(recorded.request)
    assert "/u/" not in click.properties["url"]
    assert (recorded.outcome, recorded.events_sent_at is not None) == ("delivered", True)


@pytest.mark.django_db(transaction=True)
def test_one_signed_post_per_pass_carries_the_events_of_every_recipient_of_a_request(sandbox, settings):
    play(settings, email={"delivered": 1.0, "open": 1.0})
    html = '<p>The sale is on.</p><a href="https://northwind.example/sale">Shop</a>'
    batch = [
        Outbound(
            message_id=i, to=f"c{i}@example.com", sender="hello@northwind.example", subject="Sale", body="On", html=html
        )
        for i in (1, 2, 3)
    ]
    assert all(result.ok for result in adapter_for("email").send(batch))
    assert SandboxMessage.objects.count() == 3  # one SendGrid request, three personalizations
    # Delivery (processed + delivered for all three), then the opens: two posts, not six.
    assert WebhookDelivery.objects.filter(provider="sendgrid").count() == 2
    events = ProviderEvent.objects.filter(provider="sendgrid")
    assert (
        sorted(events.values_list("payload__event", flat=True)) == ["delivered"] * 3 + ["open"] * 3 + ["processed"] * 3
    )


@pytest.mark.django_db(transaction=True)
def test_playing_a_message_back_again_changes_nothing(sandbox, settings):
    play(settings, email={"delivered": 1.0, "open": 1.0, "click": 1.0})
    ana = CustomerFactory(consents={"email": "opted_in"})
    send_all(email_only_campaign())
    before = kinds(ana, "email")
    recorded = SandboxMessage.objects.get()
    SandboxMessage.objects.filter(pk=recorded.pk).update(events_sent_at=None)  # as if the first pass ran again
    sandbox_events_emit(sandbox_message_ids=[recorded.pk])
    assert kinds(ana, "email") == before


@pytest.mark.django_db(transaction=True)
def test_opens_and_clicks_come_in_a_second_pass_after_the_channel_delay(sandbox, settings, monkeypatch):
    play(settings, email={"delivered": 1.0, "open": 1.0, "click": 1.0, "delay": 45})
    from channels.tasks import sandbox_emit_events

    later: list[tuple] = []
    original = sandbox_emit_events.apply_async

    def hold_later(args, countdown=None, **options):
        if countdown == 45:
            later.append((args, countdown))
            return None
        return original(args, countdown=countdown, **options)

    monkeypatch.setattr(sandbox_emit_events, "apply_async", hold_later)
    ana = CustomerFactory(consents={"email": "opted_in"})
    run = send_all(email_only_campaign())
    message = Message.objects.get(run=run, customer=ana)
    assert message.status == "delivered"
    assert later == [(([SandboxMessage.objects.get().pk],), 45)]

    sandbox_events_emit(sandbox_message_ids=later[0][0][0])
    message.refresh_from_db()
    assert message.status == "clicked"


@pytest.mark.django_db(transaction=True)
def test_a_configured_bounce_bounces_and_suppresses_the_address(sandbox, settings):
    play(settings, email={"bounce": 1.0, "open": 1.0})
    bo = CustomerFactory(consents={"email": "opted_in"})
    run = send_all(email_only_campaign())
    message = Message.objects.get(run=run, customer=bo)
    assert message.status == "bounced"
    assert Suppression.objects.filter(address_hash=Suppression.address_hash_for(bo.email)).exists()
    assert "message.opened" not in kinds(bo, "email")


@pytest.mark.django_db(transaction=True)
def test_email_neither_delivered_nor_bounced_is_deferred_and_stays_sent(sandbox, settings):
    play(settings, email={"delivered": 0.0})
    cy = CustomerFactory(consents={"email": "opted_in"})
    run = send_all(email_only_campaign())
    assert Message.objects.get(run=run, customer=cy).status == "sent"
    assert kinds(cy, "email") == ["message.deferred", "message.sent"]


@pytest.mark.django_db(transaction=True)
def test_undelivered_sms_carries_a_carrier_error_and_shows_among_failed_deliveries(sandbox, settings):
    play(settings, sms={"undelivered": 1.0, "stop": 1.0})
    di = CustomerFactory(consents={"sms": "opted_in"})
    run = send_all(sms_campaign())
    message = Message.objects.get(run=run, customer=di)
    assert message.status == "undelivered"
    failure = Activity.objects.get(customer=di, kind="message.failed")
    assert failure.properties["error_code"] in {"30003", "30005"}
    assert list(failed_messages()) == [message]
    assert "message.replied" not in kinds(di, "sms")  # only a delivered message is answered


@pytest.mark.django_db(transaction=True)
def test_a_stop_reply_is_played_back_and_opts_the_customer_out_of_sms(sandbox, settings):
    play(settings, sms={"delivered": 1.0, "stop": 1.0})
    ed = CustomerFactory(consents={"sms": "opted_in"})
    run = send_all(sms_campaign())
    assert Message.objects.get(run=run, customer=ed).status == "delivered"
    reply = Activity.objects.get(customer=ed, kind="message.replied")
    assert (reply.properties["body"], reply.properties["keyword"]) == ("STOP", "STOP")
    assert not Customer.objects.filter(pk=ed.pk).consented("sms").exists()


@pytest.mark.django_db(transaction=True)
def test_a_whatsapp_message_is_read(sandbox, settings):
    play(settings, whatsapp={"delivered": 1.0, "read": 1.0})
    fe = CustomerFactory(consents={"whatsapp": "opted_in"})
    run = send_all(sms_campaign("whatsapp"))
    message = Message.objects.get(run=run, customer=fe)
    assert message.status == "opened"
    assert kinds(fe, "whatsapp") == ["message.delivered", "message.opened", "message.sent"]
