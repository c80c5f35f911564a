"""On PostgreSQL a SendGrid delivery is applied by one SQL statement; it must leave what the Python path leaves.

The same events, ordinary and awkward, go once through ``provider_events_record``
(the Python path, used for every other provider and on SQLite) and once through
``webhook_delivery_process`` (the statement), each into a fresh copy of the same
world; the two end states are compared field by field.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from campaigns.models import Brand, CampaignRun
from channels.models import Message, ProviderEvent, Suppression, WebhookDelivery
from channels.providers import delivery_events
from channels.services.events import provider_events_record, webhook_delivery_process
from customers.models import Activity, Consent, Customer
from customers.services.privacy import customer_erase
from segments.models import Segment
from tests.factories import CampaignFactory, CustomerFactory, StepFactory

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the statement is PostgreSQL's"),
]

TS = 1763800000
# label -> (channel, status, provider message id, existing error)
MESSAGES = {
    "plain": ("email", "sent", None, ""),
    "bouncer": ("email", "sent", None, ""),
    "blocked": ("email", "sent", None, ""),
    "dropper": ("email", "sent", None, ""),
    "spammer": ("email", "sent", None, ""),
    "quitter": ("email", "sent", None, ""),
    "by-sg-id": ("email", "sent", "14c5d75ce93", ""),
    "skipped": ("email", "skipped", None, ""),
    "failed-before": ("email", "failed", None, "SendGrid 400: bad request"),
    "erased": ("email", "sent", None, ""),
    "texted": ("sms", "sent", None, ""),
}


def world() -> dict[str, Message]:
    """One customer and one message per label; the same world every time it is built."""
    campaign = CampaignFactory()
    email_step = StepFactory(campaign=campaign, position=0, channel="email")
    sms_step = StepFactory(campaign=campaign, position=1, channel="sms", template__body="Hi")
    run = CampaignRun.objects.create(campaign=campaign, number=1)
    messages = {}
    for n, (label, (channel, status, provider_id, error)) in enumerate(MESSAGES.items()):
        customer = CustomerFactory(
            email=f"{label}@example.com", phone=f"+4860020{n:04d}", consents={"email": "opted_in"}
        )
        messages[label] = Message.objects.create(
            run=run,
            step=email_step if channel == "email" else sms_step,
            customer=customer,
            channel=channel,
            to_address=customer.email if channel == "email" else customer.phone,
            status=status,
            rank=Message.RANK[status],
            provider="sendgrid" if channel == "email" else "twilio",
            provider_message_id=provider_id,
            error=error,
        )
    Customer.objects.filter(pk=messages["plain"].customer_id).update(
        last_engaged_email_at=timezone.now() + timedelta(days=1)  # later than any event: stays
    )
    Suppression.objects.create(address_hash=Suppression.address_hash_for("blocked@example.com"), reason="manual")
    customer_erase(customer=messages["erased"].customer, by=None, reason="asked")
    return messages


def events(m: dict[str, Message]) -> list[dict]:
    def on(label: str, event: str, n: int, **extra) -> dict:
        base = {"email": f"{label}@example.com", "chorus_message_id": str(m[label].pk), "timestamp": TS + n}
        return {**base, "event": event, "sg_event_id": f"{label}-{event}-{n}", **extra}

    agent = {"useragent": "Mozilla/5.0", "ip": "203.0.113.7"}
    return [
        on("plain", "processed", 0),
        on("plain", "delivered", 1, response="250 OK", tls=1),
        on("plain", "open", 2, **agent),
        on("plain", "open", 3, **agent),
        on("plain", "click", 4, url="https://shop.example.com/spring?utm_source=chorus", **agent),
        on("plain", "click", 5, url=None),  # a detail present as null is kept
        on("plain", "deferred", 6, attempt="1", response="400 try again later"),
        on("plain", "delivered", 1, response="the same id again: the first one counts"),
        # Hard, blocked and sender-side bounces; the first two for one message, the earliest wins.
        on("bouncer", "bounce", 7, type="bounce", bounce_classification="Invalid Address", reason="550 5.1.1"),
        on("bouncer", "dropped", 8, reason="Bounced Address"),
        on("blocked", "bounce", 9, type="blocked", reason="IP listed"),
        on("blocked", "bounce", 10, bounce_classification="Technical"),
        on("blocked", "bounce", 11, bounce_classification=5, type=None),
        on("dropper", "dropped", 12, reason=5),
        on("dropper", "dropped", 13),
        # Consent: spam report (with an address in odd case and space), unsubscribes, twice for one customer.
        on("spammer", "spamreport", 14, email="  Spammer@Example.COM "),
        on("quitter", "unsubscribe", 15),
        on("quitter", "group_unsubscribe", 16, asm_group_id=42),
        {"event": "spamreport", "chorus_message_id": str(m["quitter"].pk), "timestamp": TS, "sg_event_id": "no-email"},
        # Found by SendGrid's message id, not by a Chorus id.
        {"event": "delivered", "sg_message_id": "14c5d75ce93.filter0001.1", "timestamp": TS, "sg_event_id": "by-sg"},
        {
            "event": "open",
            "chorus_message_id": "not-a-number",
            "sg_message_id": "14c5d75ce93.x",
            "sg_event_id": "by-sg-2",
        },
        # Not applied to a message, each with the reason stored.
        on("plain", "teleported", 17),
        {"timestamp": TS, "sg_event_id": "no-name", "chorus_message_id": str(m["plain"].pk)},
        {"event": 5, "timestamp": TS, "sg_event_id": "number-name"},
        {"event": "delivered", "timestamp": TS, "sg_event_id": "orphan", "email": "nobody@example.com"},
        {"event": "delivered", "chorus_message_id": "999999999", "timestamp": TS, "sg_event_id": "lost"},
        {"event": "delivered", "chorus_message_id": "9" * 30, "sg_message_id": "x.y", "sg_event_id": "huge-id"},
        {"event": "delivered", "chorus_message_id": str(m["texted"].pk), "sg_event_id": "wrong-channel"},
        {"event": "delivered", "chorus_message_id": m["plain"].pk, "timestamp": TS, "sg_event_id": 77},
        # A skipped message stays skipped; a failure keeps the reason it had.
        on("skipped", "bounce", 18, reason="550 unknown"),
        on("failed-before", "dropped", 19, reason="Invalid"),
        # An erased customer: status moves, nothing personal stays.
        on("erased", "delivered", 20),
        on("erased", "open", 21, **agent),
        on("erased", "spamreport", 22),
        # Times: digits in a string, spaces, a float, a bool, far out of range, missing, not an integer.
        on("plain", "open", 0, timestamp=f" {TS + 30} ", sg_event_id="t-string"),
        on("plain", "open", 0, timestamp=TS + 31.9, sg_event_id="t-float"),
        on("plain", "open", 0, timestamp=True, sg_event_id="t-bool"),
        on("plain", "open", 0, timestamp=10**15, sg_event_id="t-far"),
        on("plain", "open", 0, timestamp="1.5", sg_event_id="t-decimal"),
        {"event": "open", "chorus_message_id": str(m["plain"].pk), "sg_event_id": "t-missing"},
        # No sg_event_id: keyed by message, event, time and URL; twice in the request, once stored.
        {"event": "click", "chorus_message_id": str(m["plain"].pk), "timestamp": TS + 40, "url": "https://ä.example/ß"},
        {"event": "click", "chorus_message_id": str(m["plain"].pk), "timestamp": TS + 40, "url": "https://ä.example/ß"},
        {"event": "click", "chorus_message_id": m["plain"].pk, "timestamp": TS + 41, "sg_event_id": ""},
    ]


def snapshot(messages: dict[str, Message]) -> dict:
    """The end state, with ids replaced by labels and dedupe keys, and times of 'now' as NOW."""
    labels = {message.pk: label for label, message in messages.items()}
    customers = {message.customer_id: label for label, message in messages.items()}
    keys = dict(ProviderEvent.objects.values_list("pk", "dedupe_key"))
    recent = timezone.now() - timedelta(minutes=10)

    def when(value):
        return "NOW" if value is not None and value > recent else value

    def event_key(properties: dict) -> dict:
        return {**properties, "provider_event": keys.get(properties.get("provider_event"))}

    def payload(value: dict) -> str:
        reference = value.get("chorus_message_id")
        if str(reference).isdigit() and int(reference) in labels:
            value = {**value, "chorus_message_id": labels[int(reference)]}
        return json.dumps(value, sort_keys=True)

    times = ("delivered_at", "opened_at", "clicked_at", "failed_at", "sent_at")
    return {
        "events": sorted(
            (e.dedupe_key, payload(e.payload), labels.get(e.message_id), e.error) for e in ProviderEvent.objects.all()
        ),
        "messages": {
            labels[m.pk]: (m.status, m.rank, m.error, *(when(getattr(m, column)) for column in times))
            for m in Message.objects.all()
        },
        "timeline": sorted(
            (
                customers.get(a.customer_id),
                a.kind,
                a.channel,
                a.campaign_id is not None,
                labels.get(a.message_id),
                str(when(a.occurred_at)),
                json.dumps(event_key(a.properties), sort_keys=True),
            )
            for a in Activity.objects.exclude(kind="consent.changed")
        ),
        "consent changes": sorted(
            (customers[a.customer_id], a.channel, json.dumps(a.properties, sort_keys=True))
            for a in Activity.objects.filter(kind="consent.changed", properties__source="provider_event")
        ),
        "ledger": sorted(
            (customers[c.customer_id], c.channel, c.status, c.source, json.dumps(event_key(c.evidence), sort_keys=True))
            for c in Consent.objects.filter(source="provider_event")
        ),
        "suppressions": sorted(Suppression.objects.values_list("address_hash", "reason")),
        "engaged": {customers[pk]: when(at) for pk, at in Customer.objects.values_list("pk", "last_engaged_email_at")},
    }


def clear() -> None:
    """Empty the world and restart its ids: the next one gets the same ids (fallback keys hash them)."""
    tables = ", ".join(
        model._meta.db_table for model in (Brand, Segment, Customer, ProviderEvent, WebhookDelivery, Suppression)
    )
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # checks pending in the test's transaction, first
        cursor.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


def test_one_statement_leaves_what_the_python_path_leaves():
    clear()
    messages = world()
    body = json.dumps(events(messages))
    with transaction.atomic():
        python_new = provider_events_record(
            provider="sendgrid", kind="status", events=delivery_events("sendgrid", "status", body)
        )
    expected = snapshot(messages)
    ids = {label: message.pk for label, message in messages.items()}
    clear()

    messages = world()
    assert {label: message.pk for label, message in messages.items()} == ids
    delivery = WebhookDelivery.objects.create(provider="sendgrid", kind="status", body=json.dumps(events(messages)))
    sql_new = webhook_delivery_process(delivery_id=delivery.pk)
    actual = snapshot(messages)

    assert len(sql_new) == len(python_new) == ProviderEvent.objects.count()
    for part in expected:
        assert actual[part] == expected[part], part
    # The comparison is not between two empty worlds.
    assert {"opened", "clicked", "bounced", "failed", "skipped"} <= {s for s, *_ in actual["messages"].values()}
    assert actual["messages"]["skipped"][0] == "skipped" and actual["messages"]["skipped"][2] == ""
    assert actual["messages"]["failed-before"][2] == "SendGrid 400: bad request"
    assert len(actual["ledger"]) == 4 and len(actual["consent changes"]) == 2
    assert {reason for _, reason in actual["suppressions"]} == {"hard_bounce", "spam_report", "manual", "erasure"}
    errors = {key: error for key, _, _, error in actual["events"]}
    assert errors["plain-teleported-17"] == 'Unknown SendGrid event "teleported".'
    assert errors["number-name"] == "Unknown SendGrid event 5."
    assert errors["huge-id"] == errors["lost"] == errors["wrong-channel"] == "No matching message or customer."
    assert errors["orphan"].startswith("The event names no message")


def test_a_stored_body_that_is_not_a_list_of_events_is_kept_with_the_reason_and_nothing_applied():
    [message] = [m for label, m in world().items() if label == "plain"]
    for body, reason in (
        ('[{"event": "delivered", "sg_event_id": "a"}, 5]', "Expected a JSON array of event objects."),
        ("[{]", "The body is not JSON"),
    ):
        delivery = WebhookDelivery.objects.create(provider="sendgrid", kind="status", body=body)
        assert webhook_delivery_process(delivery_id=delivery.pk) == []
        delivery.refresh_from_db()
        assert delivery.error.startswith(reason) and delivery.body == body
    assert not ProviderEvent.objects.exists()
    message.refresh_from_db()
    assert message.status == "sent"
