"""Webhook ingestion in batches: one stored delivery per request, split into events and applied set-based, once."""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import UTC, datetime

import pytest
from django.conf import settings
from django.db import connections
from django.urls import reverse

from campaigns.models import CampaignRun
from channels.models import Message, ProviderEvent, Suppression, WebhookDelivery
from channels.services.events import webhook_delivery_process
from channels.tasks import provider_event_process
from config.keys import ec_sign_b64
from customers.models import Activity, Customer
from customers.services import consent_current
from tests.factories import StepFactory
from tests.test_webhooks import post_sendgrid

BASE_TS = 1763800000
URL = "https://shop.example.com/spring"


def sent_emails(count: int) -> list[Message]:
    """``count`` customers, each with one sent email, made in bulk."""
    step = StepFactory()
    run = CampaignRun.objects.create(campaign=step.campaign, number=1)
    customers = Customer.objects.bulk_create(
        Customer(email=f"bulk{n}@example.com", first_name="Bulk", last_name=str(n)) for n in range(count)
    )
    if customers[0].pk is None:  # a backend that does not return ids from bulk inserts
        customers = list(Customer.objects.filter(email__startswith="bulk").order_by("pk"))
    Message.objects.bulk_create(
        Message(
            run=run,
            step=step,
            customer=customer,
            channel="email",
            to_address=customer.email,
            status="sent",
            rank=Message.RANK["sent"],
            provider="sendgrid",
        )
        for customer in customers
    )
    return list(Message.objects.filter(run=run).order_by("pk"))


def events_for(message: Message, n: int) -> list[dict]:
    """A realistic life for one email: processed, delivered, then opened and clicked for two in three."""
    base = {"email": message.to_address, "chorus_message_id": str(message.pk), "sg_message_id": f"sg{n}.filter0"}
    life = [("processed", 0, {}), ("delivered", 3, {"response": "250 OK"})]
    if n % 3:
        life += [("open", 100, {"useragent": "Mozilla/5.0"}), ("click", 160, {"url": URL})]
    return [
        {**base, "event": name, "timestamp": BASE_TS + n + offset, "sg_event_id": f"ev-{n}-{name}", **extra}
        for name, offset, extra in life
    ]


def store(events: list[dict]) -> WebhookDelivery:
    return WebhookDelivery.objects.create(provider="sendgrid", kind="status", body=json.dumps(events))


def at(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


@pytest.mark.django_db
def test_a_large_batch_is_stored_as_one_delivery_and_fully_applied(client, django_capture_on_commit_callbacks):
    messages = sent_emails(600)
    events = [event for n, message in enumerate(messages) for event in events_for(message, n)]
    random.Random(1).shuffle(events)  # providers batch events in no particular order

    with django_capture_on_commit_callbacks() as callbacks:
        response = post_sendgrid(client, events)
    assert response.status_code == 202
    assert response.json() == {"received": len(events)}
    delivery = WebhookDelivery.objects.get()
    assert (delivery.processed_at, ProviderEvent.objects.count()) == (None, 0), "answered before processing"

    [enqueue] = callbacks
    enqueue()  # the task, eagerly
    delivery.refresh_from_db()
    assert delivery.processed_at is not None and delivery.body == "" and delivery.error == ""
    assert ProviderEvent.objects.count() == len(events)
    assert not ProviderEvent.objects.filter(processed_at=None).exists()
    assert not ProviderEvent.objects.exclude(error="").exists()
    assert ProviderEvent.objects.filter(message=None).count() == 0

    for n, message in enumerate(messages):
        message.refresh_from_db()
        engaged = bool(n % 3)
        assert message.status == ("clicked" if engaged else "delivered")
        assert message.delivered_at == at(BASE_TS + n + 3)
        assert message.clicked_at == (at(BASE_TS + n + 160) if engaged else None)
    engaged_count = sum(1 for n in range(len(messages)) if n % 3)
    timeline = Activity.objects.filter(message__in=messages)
    assert timeline.filter(kind="message.delivered").count() == len(messages)
    assert timeline.filter(kind="message.opened").count() == engaged_count
    click = timeline.filter(kind="message.clicked").select_related("campaign").first()
    assert click.properties["url"] == URL and click.campaign == messages[0].step.campaign
    assert ProviderEvent.objects.filter(pk=click.properties["provider_event"], message=click.message).exists()
    # last_engaged_email_at is the click (the latest engagement) for engaged customers, untouched for the others.
    assert Customer.objects.filter(last_engaged_email_at__isnull=False).count() == engaged_count
    first_engaged = messages[1].customer
    first_engaged.refresh_from_db()
    assert first_engaged.last_engaged_email_at == at(BASE_TS + 1 + 160)


@pytest.mark.django_db
def test_malformed_events_are_stored_with_their_error_and_the_rest_applied(django_capture_on_commit_callbacks):
    [message] = sent_emails(1)
    good = events_for(message, 0)
    unknown = {**good[0], "event": "teleported", "sg_event_id": "ev-unknown"}
    orphan = {"email": "nobody@example.com", "event": "delivered", "timestamp": BASE_TS, "sg_event_id": "ev-orphan"}
    lost = {**good[1], "chorus_message_id": "999999", "sg_event_id": "ev-lost"}
    delivery = store([*good, unknown, orphan, lost])

    webhook_delivery_process(delivery_id=delivery.pk)

    errors = dict(ProviderEvent.objects.values_list("dedupe_key", "error"))
    assert errors["ev-unknown"] == 'Unknown SendGrid event "teleported".'
    assert errors["ev-orphan"] == "The event names no message (no chorus_message_id or sg_message_id)."
    assert errors["ev-lost"] == "No matching message or customer."
    assert all(errors[event["sg_event_id"]] == "" for event in good)
    message.refresh_from_db()
    assert message.status == "delivered"
    assert Activity.objects.filter(message=message, kind="message.delivered").count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ('[{"event": "open", "timestamp": NaN}]', "NaN is not a JSON value"),
        ('[{"event": "open", "useragent": "x\\u0000"}]', "NUL character"),
        ("[{]", "not JSON"),
    ],
)
def test_a_batch_the_database_could_not_store_is_refused_whole(client, body, problem):
    timestamp = str(int(time.time()))
    signature = ec_sign_b64(settings.CHORUS_SANDBOX_SENDGRID_PRIVATE_KEY, (timestamp + body).encode())
    response = client.post(
        reverse("webhooks:sendgrid-events"),
        data=body,
        content_type="application/json",
        headers={
            "X-Twilio-Email-Event-Webhook-Signature": signature,
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        },
    )
    assert response.status_code == 400
    assert problem in response.json()["detail"]
    assert not WebhookDelivery.objects.exists()


@pytest.mark.django_db
def test_a_stored_body_that_is_not_an_event_list_is_kept_with_the_reason():
    delivery = WebhookDelivery.objects.create(provider="sendgrid", kind="status", body='{"event": "open"}')
    assert webhook_delivery_process(delivery_id=delivery.pk) == []
    delivery.refresh_from_db()
    assert delivery.error == "Expected a JSON array of event objects."
    assert delivery.body == '{"event": "open"}' and delivery.processed_at is not None
    assert not ProviderEvent.objects.exists()


@pytest.mark.django_db
def test_duplicate_events_across_deliveries_and_within_one_are_applied_once():
    messages = sent_emails(20)
    events = [event for n, message in enumerate(messages) for event in events_for(message, n)]
    first = store(events[:40] + events[:5])  # the same event twice in one request
    second = store(events[20:] + events[:10])  # and again in a later one

    new_first = webhook_delivery_process(delivery_id=first.pk)
    new_second = webhook_delivery_process(delivery_id=second.pk)
    assert len(new_first) == 40 and len(new_second) == len(events) - 40
    assert webhook_delivery_process(delivery_id=second.pk) == [], "a redelivered task does nothing"

    assert ProviderEvent.objects.count() == len(events)
    applied = Activity.objects.filter(message__in=messages).exclude(kind="consent.changed")
    # "processed" events are not on the timeline.
    assert applied.count() == sum(1 for event in events if event["event"] != "processed")
    assert sorted(new_first + new_second) == sorted(ProviderEvent.objects.values_list("pk", flat=True))
    assert sorted(applied.values_list("properties__provider_event", flat=True)) == sorted(
        ProviderEvent.objects.exclude(payload__event="processed").values_list("pk", flat=True)
    )


@pytest.mark.django_db
def test_a_batch_with_spam_reports_bounces_and_unsubscribes_changes_consent_and_suppression():
    messages = sent_emails(4)
    spam, bounced, unsubscribed, dropped = messages
    events = [
        {"event": "spamreport", "chorus_message_id": str(spam.pk), "email": spam.to_address, "sg_event_id": "s"},
        {
            "event": "bounce",
            "type": "bounce",
            "bounce_classification": "Invalid Address",
            "chorus_message_id": str(bounced.pk),
            "sg_event_id": "b",
        },
        {"event": "unsubscribe", "chorus_message_id": str(unsubscribed.pk), "sg_event_id": "u"},
        {"event": "dropped", "reason": "Bounced Address", "chorus_message_id": str(dropped.pk), "sg_event_id": "d"},
    ]
    webhook_delivery_process(delivery_id=store([{**e, "timestamp": BASE_TS} for e in events]).pk)

    assert set(Suppression.objects.values_list("address_hash", "reason")) == {
        (Suppression.address_hash_for(spam.to_address), "spam_report"),
        (Suppression.address_hash_for(bounced.to_address), "hard_bounce"),
        (Suppression.address_hash_for(dropped.to_address), "hard_bounce"),
    }, "a bounce without an email falls back to the message's address"
    for message, state in ((spam, "opted_out"), (unsubscribed, "opted_out"), (bounced, None)):
        assert consent_current(customer=message.customer, channel="email") == state
    assert Activity.objects.filter(kind="consent.changed").count() == 2


@pytest.mark.django_db
def test_an_event_stored_one_by_one_before_deliveries_is_still_processed_once():
    """Tasks queued by an earlier version name a single stored ProviderEvent."""
    [message] = sent_emails(1)
    [_, delivered, *_] = events_for(message, 1)
    event = ProviderEvent.objects.create(provider="sendgrid", kind="status", dedupe_key="ev-old", payload=delivered)
    provider_event_process.delay(event.pk)
    provider_event_process.delay(event.pk)
    event.refresh_from_db()
    assert event.processed_at is not None and event.message == message and event.error == ""
    message.refresh_from_db()
    assert message.status == "delivered"
    assert Activity.objects.filter(message=message, kind="message.delivered").count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_batch_tasks_applying_the_same_events_at_once_apply_each_once():
    messages = sent_emails(200)
    events = [event for n, message in enumerate(messages) for event in events_for(message, n)]
    rng = random.Random(7)
    deliveries = []
    for _ in range(2):
        rng.shuffle(events)
        deliveries.append(store(events[: len(events) * 3 // 4]))
    deliveries.append(store(events))
    start = threading.Barrier(len(deliveries))
    new: list[int] = []
    failures: list[str] = []

    def process(delivery: WebhookDelivery) -> None:
        try:
            start.wait()
            new.extend(webhook_delivery_process(delivery_id=delivery.pk))
        except Exception as exc:  # reported by the main thread
            failures.append(repr(exc))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=process, args=(delivery,)) for delivery in deliveries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert len(new) == len(set(new)) == len(events) == ProviderEvent.objects.count()
    assert not WebhookDelivery.objects.filter(processed_at=None).exists()
    timeline = Activity.objects.filter(message__in=messages)
    assert timeline.count() == sum(1 for event in events if event["event"] != "processed")
    assert sorted(timeline.values_list("properties__provider_event", flat=True)) == sorted(
        ProviderEvent.objects.exclude(payload__event="processed").values_list("pk", flat=True)
    )
    statuses = dict(Message.objects.values_list("pk", "status"))
    assert statuses == {m.pk: "clicked" if n % 3 else "delivered" for n, m in enumerate(messages)}
