"""Webhooks: signatures checked, events stored once, status only moves forward."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.urls import reverse
from twilio.request_validator import RequestValidator

from campaigns.models import CampaignRun
from campaigns.services import enrollments_dispatch
from channels.models import Message, ProviderEvent, SandboxMessage, Suppression, WebhookDelivery
from channels.providers import sendgrid_dedupe_key
from channels.services import messages_send
from channels.suppression import is_suppressed
from config.keys import ec_private_key_pem, ec_sign_b64
from customers.models import Activity
from customers.services import consent_current
from tests.factories import BrandFactory, CampaignFactory, CustomerFactory, StepFactory, UserFactory, launch

pytestmark = pytest.mark.django_db


@pytest.fixture
def email_message():
    step = StepFactory()
    run = CampaignRun.objects.create(campaign=step.campaign, number=1)
    customer = CustomerFactory(consents={"email": "opted_in"})
    return Message.objects.create(
        run=run, step=step, customer=customer, channel="email", status="sent", rank=20, provider="sendgrid"
    )


@pytest.fixture
def sms_message():
    step = StepFactory(channel="sms", template__body="Hi")
    run = CampaignRun.objects.create(campaign=step.campaign, number=1)
    customer = CustomerFactory(phone="+48600100200", consents={"sms": "opted_in"})
    return Message.objects.create(
        run=run,
        step=step,
        customer=customer,
        channel="sms",
        status="sent",
        rank=20,
        provider="twilio",
        provider_message_id="SM0f1e2d3c4b5a69788796a5b4c3d2e1f0",
    )


def post_sendgrid(client, events, *, key=None, signature=None, timestamp=None):
    body = json.dumps(events)
    timestamp = str(int(time.time() if timestamp is None else timestamp))
    if signature is None:
        signature = ec_sign_b64(key or settings.CHORUS_SANDBOX_SENDGRID_PRIVATE_KEY, (timestamp + body).encode())
    return client.post(
        reverse("webhooks:sendgrid-events"),
        data=body,
        content_type="application/json",
        headers={
            "X-Twilio-Email-Event-Webhook-Signature": signature,
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        },
    )


def post_twilio(client, path, params, *, token=None, signature=None, headers=None):
    url = settings.CHORUS_PUBLIC_URL + path
    if signature is None:
        signature = RequestValidator(token or settings.TWILIO_AUTH_TOKEN).compute_signature(url, params)
    return client.post(
        path,
        data=urlencode(params),
        content_type="application/x-www-form-urlencoded",
        headers={"X-Twilio-Signature": signature, **(headers or {})},
    )


def sendgrid_event(message, event, event_id, ts=1763800003, **extra):
    return {
        "email": message.customer.email,
        "timestamp": ts,
        "event": event,
        "sg_event_id": event_id,
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        "chorus_message_id": str(message.pk),
        **extra,
    }


def test_forged_sendgrid_signature_is_rejected_and_nothing_is_stored(client, email_message):
    events = [sendgrid_event(email_message, "delivered", "ev-1")]
    response = post_sendgrid(client, events, key=ec_private_key_pem())
    assert response.status_code == 403
    assert ProviderEvent.objects.count() == WebhookDelivery.objects.count() == 0
    email_message.refresh_from_db()
    assert email_message.status == "sent"


def test_missing_sendgrid_signature_is_rejected(client, email_message):
    response = client.post(
        reverse("webhooks:sendgrid-events"),
        data=json.dumps([sendgrid_event(email_message, "delivered", "ev-1")]),
        content_type="application/json",
    )
    assert response.status_code == 403
    assert ProviderEvent.objects.count() == 0


def test_tampered_sendgrid_body_is_rejected(client, email_message):
    body = json.dumps([sendgrid_event(email_message, "delivered", "ev-1")])
    timestamp = str(int(time.time()))
    signature = ec_sign_b64(settings.CHORUS_SANDBOX_SENDGRID_PRIVATE_KEY, (timestamp + body).encode())
    response = client.post(
        reverse("webhooks:sendgrid-events"),
        data=body.replace("delivered", "click"),
        content_type="application/json",
        headers={
            "X-Twilio-Email-Event-Webhook-Signature": signature,
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        },
    )
    assert response.status_code == 403
    assert ProviderEvent.objects.count() == 0


def test_signed_sendgrid_delivery_updates_message_and_timeline(
    client, email_message, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = post_sendgrid(client, [sendgrid_event(email_message, "delivered", "ev-1")])
    assert response.status_code == 202
    email_message.refresh_from_db()
    assert email_message.status == "delivered"
    assert email_message.delivered_at is not None
    activity = Activity.objects.get(customer=email_message.customer, kind="message.delivered")
    assert activity.message == email_message
    assert activity.campaign == email_message.step.campaign


def test_same_sendgrid_event_twice_changes_nothing_the_second_time(
    client, email_message, django_capture_on_commit_callbacks
):
    events = [sendgrid_event(email_message, "open", "ev-open")]
    with django_capture_on_commit_callbacks(execute=True):
        assert post_sendgrid(client, events).json() == {"received": 1}
    email_message.refresh_from_db()
    first = (email_message.status, email_message.opened_at, Activity.objects.count(), ProviderEvent.objects.count())
    assert Activity.objects.filter(kind="message.opened").count() == ProviderEvent.objects.count() == 1
    with django_capture_on_commit_callbacks(execute=True):
        assert post_sendgrid(client, events).json() == {"received": 1}
    email_message.refresh_from_db()
    assert (
        email_message.status,
        email_message.opened_at,
        Activity.objects.count(),
        ProviderEvent.objects.count(),
    ) == first


def test_out_of_order_sendgrid_events_reach_the_same_end_state(
    client, email_message, django_capture_on_commit_callbacks
):
    click = sendgrid_event(email_message, "click", "ev-click", ts=1763800160, url="https://shop.example.com/spring")
    delivered = sendgrid_event(email_message, "delivered", "ev-delivered", ts=1763800003)
    with django_capture_on_commit_callbacks(execute=True):
        post_sendgrid(client, [click])
        post_sendgrid(client, [delivered])
    email_message.refresh_from_db()
    assert email_message.status == "clicked"
    assert email_message.delivered_at.timestamp() == 1763800003
    assert email_message.clicked_at.timestamp() == 1763800160


def test_sendgrid_bounce_after_open_does_not_regress_status(client, email_message, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        post_sendgrid(client, [sendgrid_event(email_message, "open", "ev-open")])
        post_sendgrid(client, [sendgrid_event(email_message, "delivered", "ev-delivered")])
    email_message.refresh_from_db()
    assert email_message.status == "opened"


def test_sendgrid_unsubscribe_opts_customer_out_of_email(client, email_message, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        post_sendgrid(client, [sendgrid_event(email_message, "unsubscribe", "ev-unsub")])
    assert consent_current(customer=email_message.customer, channel="email") == "opted_out"
    assert Activity.objects.filter(customer=email_message.customer, kind="message.unsubscribed").exists()


@pytest.mark.parametrize("body", [{"event": "delivered"}, [{"event": "delivered"}, "open"], [[]]])
def test_sendgrid_webhook_rejects_a_body_that_is_not_an_event_list(client, body):
    response = post_sendgrid(client, body)
    assert response.status_code == 400
    assert "array of event objects" in response.json()["detail"]
    assert WebhookDelivery.objects.count() == 0


def test_forged_twilio_signature_is_rejected_and_nothing_is_stored(client, sms_message):
    params = {"MessageSid": sms_message.provider_message_id, "MessageStatus": "delivered"}
    response = post_twilio(client, reverse("webhooks:twilio-status"), params, token="not-the-auth-token")
    assert response.status_code == 403
    assert ProviderEvent.objects.count() == 0


def test_missing_twilio_signature_is_rejected(client, sms_message):
    response = client.post(reverse("webhooks:twilio-status"), {"MessageSid": "SMx", "MessageStatus": "delivered"})
    assert response.status_code == 403
    assert ProviderEvent.objects.count() == 0


def test_signed_twilio_status_delivered_updates_message(client, sms_message, django_capture_on_commit_callbacks):
    params = {"MessageSid": sms_message.provider_message_id, "MessageStatus": "delivered", "To": "+48600100200"}
    path = reverse("webhooks:twilio-status") + f"?m={sms_message.pk}"
    with django_capture_on_commit_callbacks(execute=True):
        response = post_twilio(client, path, params)
    assert response.status_code == 204
    sms_message.refresh_from_db()
    assert sms_message.status == "delivered"
    assert Activity.objects.filter(message=sms_message, kind="message.delivered").count() == 1


def test_twilio_status_posted_twice_is_processed_once(client, sms_message, django_capture_on_commit_callbacks):
    params = {"MessageSid": sms_message.provider_message_id, "MessageStatus": "delivered"}
    path = reverse("webhooks:twilio-status")
    with django_capture_on_commit_callbacks(execute=True):
        post_twilio(client, path, params, headers={"I-Twilio-Idempotency-Token": "tok-1"})
        post_twilio(client, path, params, headers={"I-Twilio-Idempotency-Token": "tok-1"})
    assert ProviderEvent.objects.count() == 1
    assert Activity.objects.filter(message=sms_message, kind="message.delivered").count() == 1


def test_late_twilio_sent_does_not_undo_delivered(client, sms_message, django_capture_on_commit_callbacks):
    path = reverse("webhooks:twilio-status")
    with django_capture_on_commit_callbacks(execute=True):
        post_twilio(client, path, {"MessageSid": sms_message.provider_message_id, "MessageStatus": "delivered"})
        post_twilio(client, path, {"MessageSid": sms_message.provider_message_id, "MessageStatus": "sent"})
    sms_message.refresh_from_db()
    assert sms_message.status == "delivered"


def test_stop_reply_opts_customer_out_of_sms(client, sms_message, django_capture_on_commit_callbacks):
    params = {"MessageSid": "SMdd11", "From": "+48600100200", "To": "+15005550006", "Body": "  stop "}
    with django_capture_on_commit_callbacks(execute=True):
        response = post_twilio(client, reverse("webhooks:twilio-inbound"), params)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/xml"
    customer = sms_message.customer
    assert consent_current(customer=customer, channel="sms") == "opted_out"
    assert Activity.objects.filter(customer=customer, kind="message.replied").exists()
    assert Activity.objects.filter(customer=customer, kind="consent.changed", properties__to="opted_out").exists()


def test_a_sentence_containing_stop_is_a_reply_not_an_opt_out(client, sms_message, django_capture_on_commit_callbacks):
    params = {
        "MessageSid": "SMee11",
        "From": "+48600100200",
        "To": "+15005550006",
        "Body": "Please don't stop the sale",
    }
    with django_capture_on_commit_callbacks(execute=True):
        post_twilio(client, reverse("webhooks:twilio-inbound"), params)
    assert consent_current(customer=sms_message.customer, channel="sms") == "opted_in"
    assert Activity.objects.filter(customer=sms_message.customer, kind="message.replied").exists()


def test_shared_fixture_events_are_accepted(client, django_capture_on_commit_callbacks):
    """The reference payloads in shared/fixtures verify and store without errors."""
    from pathlib import Path

    fixture = Path(settings.BASE_DIR).parent / "shared" / "fixtures" / "sendgrid_event_webhook.json"
    if not fixture.exists():
        pytest.skip("shared/fixtures is not beside this checkout")
    events = json.loads(fixture.read_text())["events"]
    with django_capture_on_commit_callbacks(execute=True):
        response = post_sendgrid(client, events)
    assert response.status_code == 202
    assert ProviderEvent.objects.count() == len({e["sg_event_id"] for e in events})
    # No Chorus message 1001 exists here: each event is stored and marked with why.
    assert not ProviderEvent.objects.filter(processed_at=None).exists()


def test_a_webhook_arriving_after_erasure_leaves_no_personal_data(
    client, email_message, roles, django_capture_on_commit_callbacks
):
    from customers.services.privacy import customer_erase

    customer = email_message.customer
    address = customer.email
    customer_erase(customer=customer, by=UserFactory(role="Admin"))
    activities_before = Activity.objects.filter(customer=customer).count()
    with django_capture_on_commit_callbacks(execute=True):
        response = post_sendgrid(client, [sendgrid_event(email_message, "open", "ev-late", email=address)])
    assert response.status_code == 202
    event = ProviderEvent.objects.get(dedupe_key__contains="ev-late")
    assert event.processed_at is not None
    assert address not in json.dumps(event.payload)
    assert Activity.objects.filter(customer=customer).count() == activities_before
    email_message.refresh_from_db()
    assert email_message.status == "opened", "reports keep counting the engagement"


# --- security: every rejection is a 403, stores nothing and is logged -------------


def security_warnings(caplog):
    return [r for r in caplog.records if r.name == "chorus.security" and r.levelname == "WARNING"]


@pytest.mark.parametrize(
    ("age", "reason"),
    [(0, "invalid signature"), (601, "stale timestamp"), (-601, "stale timestamp"), (3600, "stale timestamp")],
)
def test_sendgrid_rejections_are_logged_on_the_security_logger(client, email_message, caplog, age, reason):
    events = [sendgrid_event(email_message, "delivered", "ev-1")]
    # Age 0 is signed with the wrong key; the others are genuine but too old or from the future.
    key = ec_private_key_pem() if age == 0 else None
    response = post_sendgrid(client, events, key=key, timestamp=time.time() - age)
    assert response.status_code == 403
    assert ProviderEvent.objects.count() == WebhookDelivery.objects.count() == 0
    [record] = security_warnings(caplog)
    line = record.getMessage()
    assert "sendgrid/events" in line and reason in line and "127.0.0.1" in line
    assert email_message.customer.email not in line, "the payload is never logged"


def test_a_fresh_sendgrid_signature_within_ten_minutes_is_accepted(client, email_message, caplog):
    response = post_sendgrid(client, [sendgrid_event(email_message, "delivered", "ev-1")], timestamp=time.time() - 540)
    assert response.status_code == 202
    assert WebhookDelivery.objects.count() == 1
    assert security_warnings(caplog) == []


def test_missing_sendgrid_signature_is_logged(client, caplog):
    response = client.post(reverse("webhooks:sendgrid-events"), data="[]", content_type="application/json")
    assert response.status_code == 403
    [record] = security_warnings(caplog)
    assert "sendgrid/events: missing signature" in record.getMessage()


@pytest.mark.parametrize("endpoint", ["twilio-status", "twilio-inbound"])
@pytest.mark.parametrize(("token", "signature", "reason"), [("not-the-token", None, "invalid"), (None, "", "missing")])
def test_twilio_rejections_are_logged_and_store_nothing(
    client, sms_message, caplog, endpoint, token, signature, reason
):
    params = {"MessageSid": "SMx", "MessageStatus": "delivered", "From": "+48600100200", "Body": "STOP"}
    response = post_twilio(client, reverse(f"webhooks:{endpoint}"), params, token=token, signature=signature)
    assert response.status_code == 403
    assert ProviderEvent.objects.count() == WebhookDelivery.objects.count() == 0
    assert consent_current(customer=sms_message.customer, channel="sms") == "opted_in"
    [record] = security_warnings(caplog)
    line = record.getMessage()
    assert endpoint.replace("-", "/") in line and f"{reason} signature" in line and "127.0.0.1" in line
    assert "+48600100200" not in line


# --- dedupe keys --------------------------------------------------------------------


def test_sendgrid_dedupe_falls_back_to_message_event_timestamp_and_url():
    click = {"chorus_message_id": "7", "event": "click", "timestamp": 1, "url": "https://a.example/x", "ip": "1"}
    assert sendgrid_dedupe_key({**click, "sg_event_id": "abc"}) == "abc"
    assert sendgrid_dedupe_key(click) == sendgrid_dedupe_key({**click, "ip": "2", "useragent": "other"})
    assert sendgrid_dedupe_key(click) != sendgrid_dedupe_key({**click, "url": "https://a.example/y"})
    assert sendgrid_dedupe_key(click) != sendgrid_dedupe_key({**click, "timestamp": 2})
    assert sendgrid_dedupe_key(click) != sendgrid_dedupe_key({**click, "chorus_message_id": "8"})


def test_twilio_status_dedupes_on_sid_and_status_whatever_the_idempotency_token(
    client, sms_message, django_capture_on_commit_callbacks
):
    params = {"MessageSid": sms_message.provider_message_id, "MessageStatus": "delivered"}
    path = reverse("webhooks:twilio-status")
    with django_capture_on_commit_callbacks(execute=True):
        post_twilio(client, path, params, headers={"I-Twilio-Idempotency-Token": "tok-1"})
        post_twilio(client, path, params, headers={"I-Twilio-Idempotency-Token": "tok-2"})
        post_twilio(client, path, {**params, "MessageStatus": "sent"})
    assert sorted(ProviderEvent.objects.values_list("dedupe_key", flat=True)) == [
        f"{sms_message.provider_message_id}:delivered",
        f"{sms_message.provider_message_id}:sent",
    ]
    assert Activity.objects.filter(message=sms_message, kind="message.delivered").count() == 1


def test_inbound_replies_dedupe_on_message_sid(client, sms_message, django_capture_on_commit_callbacks):
    params = {"MessageSid": "SM1111", "From": "+48600100200", "Body": "Do you ship to Krakow?"}
    with django_capture_on_commit_callbacks(execute=True):
        post_twilio(client, reverse("webhooks:twilio-inbound"), params)
        post_twilio(client, reverse("webhooks:twilio-inbound"), params)
    assert Activity.objects.filter(kind="message.replied").count() == 1


# --- SendGrid processing ------------------------------------------------------------


def process_sendgrid(client, capture, *events):
    with capture(execute=True):
        response = post_sendgrid(client, list(events))
    assert response.status_code == 202
    assert not ProviderEvent.objects.exclude(error="").exists(), list(ProviderEvent.objects.values("error"))


def test_click_lands_on_the_timeline_with_its_url(client, email_message, django_capture_on_commit_callbacks):
    url = "https://shop.example.com/spring?utm_source=chorus"
    process_sendgrid(
        client, django_capture_on_commit_callbacks, sendgrid_event(email_message, "click", "ev-c", url=url)
    )
    activity = Activity.objects.get(message=email_message, kind="message.clicked")
    assert activity.properties["url"] == url
    email_message.refresh_from_db()
    assert email_message.status == "clicked"


def test_hard_bounce_suppresses_the_address(client, email_message, django_capture_on_commit_callbacks):
    bounce = sendgrid_event(
        email_message,
        "bounce",
        "ev-b",
        type="bounce",
        bounce_classification="Invalid Address",
        reason="550 5.1.1 The email account that you tried to reach does not exist",
    )
    process_sendgrid(client, django_capture_on_commit_callbacks, bounce)
    email_message.refresh_from_db()
    assert email_message.status == "bounced"
    activity = Activity.objects.get(message=email_message, kind="message.bounced")
    assert activity.properties["reason"].startswith("550 5.1.1")
    assert activity.properties["hard"] is True
    assert email_message.error == "SendGrid bounce: 550 5.1.1 The email account that you tried to reach does not exist"
    assert is_suppressed(email_message.customer.email)
    assert Suppression.objects.get().reason == "hard_bounce"


@pytest.mark.parametrize(
    ("bounce_type", "classification"),
    [("blocked", "Reputation"), ("bounce", "Technical"), ("bounce", "Content"), ("blocked", "Invalid Address")],
)
def test_blocks_and_sender_side_bounces_do_not_suppress(
    client, email_message, django_capture_on_commit_callbacks, bounce_type, classification
):
    bounce = sendgrid_event(
        email_message, "bounce", "ev-b", type=bounce_type, bounce_classification=classification, reason="policy"
    )
    process_sendgrid(client, django_capture_on_commit_callbacks, bounce)
    email_message.refresh_from_db()
    assert email_message.status == "bounced"
    assert Activity.objects.get(message=email_message, kind="message.bounced").properties["hard"] is False
    assert not Suppression.objects.exists()


@pytest.mark.parametrize(("reason", "suppressed"), [("Bounced Address", True), ("Invalid SMTPAPI header", False)])
def test_dropped_fails_the_message_and_a_bounced_address_is_suppressed(
    client, email_message, django_capture_on_commit_callbacks, reason, suppressed
):
    process_sendgrid(
        client, django_capture_on_commit_callbacks, sendgrid_event(email_message, "dropped", "ev-d", reason=reason)
    )
    email_message.refresh_from_db()
    assert email_message.status == "failed"
    assert Activity.objects.get(message=email_message, kind="message.dropped").properties["reason"] == reason
    assert is_suppressed(email_message.customer.email) is suppressed


def test_deferred_is_on_the_timeline_but_does_not_change_the_status(
    client, email_message, django_capture_on_commit_callbacks
):
    deferred = sendgrid_event(email_message, "deferred", "ev-def", attempt="1", response="400 try again later")
    process_sendgrid(client, django_capture_on_commit_callbacks, deferred)
    email_message.refresh_from_db()
    assert email_message.status == "sent"
    activity = Activity.objects.get(message=email_message, kind="message.deferred")
    assert activity.properties["response"] == "400 try again later"


def test_spam_report_opts_out_of_email_and_suppresses(client, email_message, django_capture_on_commit_callbacks):
    process_sendgrid(client, django_capture_on_commit_callbacks, sendgrid_event(email_message, "spamreport", "ev-s"))
    customer = email_message.customer
    assert consent_current(customer=customer, channel="email") == "opted_out"
    assert Activity.objects.filter(customer=customer, kind="message.complained").count() == 1
    assert Suppression.objects.get().reason == "spam_report"
    assert is_suppressed(customer.email)


def test_group_unsubscribe_opts_out_of_email(client, email_message, django_capture_on_commit_callbacks):
    event = sendgrid_event(email_message, "group_unsubscribe", "ev-g", asm_group_id=42)
    process_sendgrid(client, django_capture_on_commit_callbacks, event)
    assert consent_current(customer=email_message.customer, channel="email") == "opted_out"
    assert Activity.objects.get(kind="message.unsubscribed").properties["asm_group_id"] == 42
    assert not Suppression.objects.exists(), "an unsubscribe is a consent, not a suppression"


# --- Twilio processing --------------------------------------------------------------


@pytest.mark.parametrize(("status", "code"), [("undelivered", "30003"), ("failed", "30006")])
def test_twilio_failures_carry_the_error_code(client, sms_message, django_capture_on_commit_callbacks, status, code):
    params = {"MessageSid": sms_message.provider_message_id, "MessageStatus": status, "ErrorCode": code}
    with django_capture_on_commit_callbacks(execute=True):
        post_twilio(client, reverse("webhooks:twilio-status"), params)
    sms_message.refresh_from_db()
    assert sms_message.status == status
    activity = Activity.objects.get(message=sms_message, kind="message.failed")
    assert activity.properties["error_code"] == code
    assert activity.channel == "sms"
    # The Failed deliveries page shows why.
    assert sms_message.error.startswith(f"Twilio {status}: error {code}, ")


def test_whatsapp_read_marks_the_message_opened(client, sms_message, django_capture_on_commit_callbacks):
    Message.objects.filter(pk=sms_message.pk).update(channel="whatsapp")
    params = {
        "MessageSid": sms_message.provider_message_id,
        "From": "whatsapp:+14155238886",
        "To": "whatsapp:+48600100200",
        "MessageStatus": "read",
    }
    with django_capture_on_commit_callbacks(execute=True):
        post_twilio(client, reverse("webhooks:twilio-status"), params)
    sms_message.refresh_from_db()
    assert sms_message.status == "opened"
    assert Activity.objects.get(message=sms_message, kind="message.opened").channel == "whatsapp"


def post_inbound(client, capture, body, sid, sender="+48600100200"):
    with capture(execute=True):
        return post_twilio(
            client, reverse("webhooks:twilio-inbound"), {"MessageSid": sid, "From": sender, "Body": body}
        )


@pytest.mark.parametrize(
    "body",
    ["STOP", "stopall", " Unsubscribe ", "cancel", "END", "quit", "Revoke", "optout", "\tSTOP\n"],
)
def test_every_opt_out_keyword_opts_out_of_sms(client, sms_message, django_capture_on_commit_callbacks, body):
    post_inbound(client, django_capture_on_commit_callbacks, body, "SMk1")
    assert consent_current(customer=sms_message.customer, channel="sms") == "opted_out"


@pytest.mark.parametrize("body", ["START", "yes", " unstop "])
def test_opt_in_keywords_opt_back_in(client, sms_message, django_capture_on_commit_callbacks, body):
    post_inbound(client, django_capture_on_commit_callbacks, "STOP", "SMk1")
    post_inbound(client, django_capture_on_commit_callbacks, body, "SMk2")
    assert consent_current(customer=sms_message.customer, channel="sms") == "opted_in"


def test_whatsapp_stop_changes_whatsapp_consent_only(client, sms_message, django_capture_on_commit_callbacks):
    customer = sms_message.customer
    post_inbound(client, django_capture_on_commit_callbacks, "stop", "SMw1", sender="whatsapp:+48600100200")
    assert consent_current(customer=customer, channel="whatsapp") == "opted_out"
    assert consent_current(customer=customer, channel="sms") == "opted_in"


@pytest.mark.parametrize("body", ["help", " INFO "])
def test_help_is_answered_with_the_brand_and_its_support_contact(
    client, sms_message, django_capture_on_commit_callbacks, body
):
    BrandFactory(name="Another brand", email_reply_to="", email_from_address="other@example.com")
    response = post_inbound(client, django_capture_on_commit_callbacks, body, "SMh1")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/xml"
    brand = sms_message.step.campaign.brand
    assert response.content.decode().endswith(
        f"<Response><Message>{brand.name}: for help contact {brand.email_reply_to}. "
        "Reply STOP to opt out.</Message></Response>"
    )
    assert consent_current(customer=sms_message.customer, channel="sms") == "opted_in"
    assert Activity.objects.get(kind="message.replied").properties["keyword"] == body.strip().upper()


def test_help_from_an_unknown_number_names_the_first_brand(client, django_capture_on_commit_callbacks):
    BrandFactory(name="First", email_reply_to="", email_from_address="first@example.com")
    BrandFactory(name="Second")
    response = post_inbound(client, django_capture_on_commit_callbacks, "HELP", "SMh2", sender="+15550000000")
    assert "<Message>First: for help contact first@example.com." in response.content.decode()


def test_an_ordinary_reply_is_on_the_timeline_with_its_body(client, sms_message, django_capture_on_commit_callbacks):
    response = post_inbound(client, django_capture_on_commit_callbacks, "Do you ship to Krakow?", "SMr1")
    assert response.content.decode().endswith("<Response/>")
    activity = Activity.objects.get(kind="message.replied")
    assert activity.customer == sms_message.customer
    assert activity.properties["body"] == "Do you ship to Krakow?"
    assert activity.campaign == sms_message.step.campaign


# --- STOP mid-campaign --------------------------------------------------------------


def sms_campaign():
    campaign = CampaignFactory()
    StepFactory(campaign=campaign, position=0, channel="sms", template__body="Hi {{ customer.first_name }}")
    return campaign


@pytest.mark.django_db(transaction=True)
def test_after_stop_no_further_sms_goes_out_not_even_one_already_queued(client, sandbox, hold_sends):
    ana = CustomerFactory(first_name="Ana", consents={"sms": "opted_in"})
    bo = CustomerFactory(first_name="Bo", consents={"sms": "opted_in"})
    run = launch(sms_campaign())
    enrollments_dispatch()
    queued = {m.customer_id: m for m in Message.objects.filter(run=run, status="queued")}
    assert set(queued) == {ana.pk, bo.pk}

    response = post_twilio(
        client, reverse("webhooks:twilio-inbound"), {"MessageSid": "SMstop1", "From": ana.phone, "Body": "Stop"}
    )
    assert response.status_code == 200
    assert consent_current(customer=ana, channel="sms") == "opted_out"

    messages_send(message_ids=[m.pk for m in queued.values()])
    for message in queued.values():
        message.refresh_from_db()
    assert (queued[ana.pk].status, queued[ana.pk].skip_reason) == ("skipped", "no_consent")
    assert queued[bo.pk].status in {"sent", "delivered"}
    assert list(SandboxMessage.objects.values_list("to_address", flat=True)) == [bo.phone]

    # A campaign launched later does not queue anything for her either.
    later = launch(sms_campaign())
    enrollments_dispatch()
    mine = Message.objects.get(run=later, customer=ana)
    assert (mine.status, mine.skip_reason) == ("skipped", "no_consent")
    assert SandboxMessage.objects.filter(to_address=ana.phone).count() == 0
