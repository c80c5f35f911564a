"""Replay: every webhook three times, shuffled, from several threads, ends where one in-order delivery ends.

The events are the shared fixtures (their message ids and senders mapped onto
this database) plus 1,000 generated SendGrid and Twilio events. Both deliveries
go through the real path: signed HTTP request -> WebhookDelivery -> the
``webhook_delivery_process`` task (eager) -> ProviderEvent rows -> message, timeline,
consent, suppression.

Twilio inbound messages carry no timestamp, so a STOP and a later START from
the same number are order-dependent by nature; the fixture's three keyword
replies are therefore sent from three different customers' numbers.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections
from django.test import Client
from django.urls import reverse

from campaigns.models import CampaignRun
from channels.models import Message, ProviderEvent, Suppression
from customers.models import Activity, Consent, Customer
from tests.factories import CampaignFactory, CustomerFactory, StepFactory
from tests.test_webhooks import post_sendgrid, post_twilio

FIXTURES = Path(settings.BASE_DIR).parent / "shared" / "fixtures"
GENERATED = 1000
THREADS = 4
BASE_TS = 1763800000
URLS = ["https://shop.example.com/spring", "https://shop.example.com/boots", "https://shop.example.com/?a=1&b=2"]

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not FIXTURES.exists(), reason="shared/fixtures is not beside this checkout"),
]


# --- the events, by message label (pks differ between the two deliveries) ----------


def fixture_units() -> tuple[list[tuple], list[tuple]]:
    """The shared fixture events as units, and the messages they need: (label, channel, customer, sid)."""
    sendgrid = json.loads((FIXTURES / "sendgrid_event_webhook.json").read_text())["events"]
    twilio = json.loads((FIXTURES / "twilio_callbacks.json").read_text())
    units, messages = [], []
    for event in sendgrid:
        label = f"fx-{event['chorus_message_id']}"
        if label not in {m[0] for m in messages}:
            messages.append((label, "email", event["email"], None))
        units.append(("sendgrid", label, {k: v for k, v in event.items() if k != "chorus_message_id"}))
    for params in twilio["status_callback_examples"]:
        channel = "whatsapp" if params["To"].startswith("whatsapp:") else "sms"
        phone = params["To"].removeprefix("whatsapp:")
        label = f"fx-{params['MessageSid']}"
        if label not in {m[0] for m in messages}:
            messages.append((label, channel, phone, params["MessageSid"]))
        units.append(("twilio-status", None, params))  # found by MessageSid, as without ?m=
    senders = {"  unsubscribe ": "+48600100301", "Start": "+48600100302"}
    for params in twilio["inbound_message_examples"]:
        units.append(("twilio-inbound", None, {**params, "From": senders.get(params["Body"], params["From"])}))
    return units, messages


def generated_units(rng: random.Random) -> tuple[list[tuple], list[tuple]]:
    units, messages = [], []
    n = 0
    while len(units) < GENERATED:
        n += 1
        kind = rng.choices(["email", "sms", "whatsapp", "inbound"], weights=[6, 3, 1, 1])[0]
        if kind == "email":
            label, ts = f"e{n}", BASE_TS + n * 1000
            messages.append((label, "email", f"gen{n}@example.com", None))
            events = [("processed", 0, {})]
            roll = rng.random()
            if roll < 0.6:
                events.append(("delivered", 3, {"response": "250 OK"}))
                if rng.random() < 0.6:
                    events.append(("open", 100, {"useragent": "Mozilla/5.0"}))
                    if rng.random() < 0.5:
                        events.append(("click", 160, {"url": rng.choice(URLS)}))
                        events.append(("open", 170, {"useragent": "Mozilla/5.0"}))
                if rng.random() < 0.1:
                    events.append((rng.choice(["spamreport", "unsubscribe", "group_unsubscribe"]), 300, {}))
            elif roll < 0.7:
                events.append(("bounce", 4, {"type": "bounce", "bounce_classification": "Invalid Address"}))
            elif roll < 0.75:
                events.append(("bounce", 4, {"type": "blocked", "bounce_classification": "Reputation"}))
            elif roll < 0.8:
                events.append(("dropped", 4, {"reason": rng.choice(["Bounced Address", "Invalid SMTPAPI header"])}))
            else:
                events.append(("deferred", 5, {"attempt": "1", "response": "400 try again later"}))
                events.append(("delivered", 600, {"response": "250 OK"}))
            for i, (name, offset, extra) in enumerate(events):
                event = {"email": f"gen{n}@example.com", "timestamp": ts + offset, "event": name, **extra}
                if rng.random() < 0.9:  # some without sg_event_id: the fallback dedupe key
                    event["sg_event_id"] = f"gen-{n}-{i}"
                units.append(("sendgrid", label, event))
        elif kind in {"sms", "whatsapp"}:
            label, sid = f"t{n}", f"SMgen{n:030d}"
            phone = f"+4870{n:07d}"
            messages.append((label, kind, phone, sid))
            prefix = "whatsapp:" if kind == "whatsapp" else ""
            outcome = rng.choices(["delivered", "undelivered", "failed"], weights=[7, 1.5, 1.5])[0]
            statuses = ["sent", outcome] + (["read"] if kind == "whatsapp" and outcome == "delivered" else [])
            for status in statuses:
                params = {"MessageSid": sid, "From": prefix + "+15005550006", "To": prefix + phone}
                params["MessageStatus"] = status
                if status in {"undelivered", "failed"}:
                    params["ErrorCode"] = "30003" if status == "undelivered" else "30006"
                units.append(("twilio-status", label if n % 2 else None, params))
        else:
            # A reply from the customer of an earlier SMS: a question, HELP or (only) an opt-out.
            sms = [m for m in messages if m[1] == "sms"]
            if not sms:
                continue
            body = rng.choice(["Do you ship to Krakow?", "help", " STOP ", "quit", "Thanks!"])
            params = {"MessageSid": f"SMin{n:030d}", "From": rng.choice(sms)[2], "To": "+15005550006", "Body": body}
            units.append(("twilio-inbound", None, params))
    return units[:GENERATED], messages


# --- the world the events land in ---------------------------------------------------


def world_build(messages: list[tuple], campaign) -> dict[str, int]:
    """Opted-in customers with sent messages (label -> pk), as the events expect them."""
    run = CampaignRun.objects.get_or_create(campaign=campaign, number=1)[0]
    steps = {s.position: s for s in campaign.steps.all()}
    # The fixtures' Ana is one customer on every channel.
    ana = CustomerFactory(
        email="ana@example.com",
        phone="+48600100200",
        consents={"email": "opted_in", "sms": "opted_in", "whatsapp": "opted_in"},
    )
    customers = {"ana@example.com": ana, "+48600100200": ana}
    # The fixture's "unsubscribe" comes from a customer who had opted in, its START from one who had opted out.
    CustomerFactory(email="unsub@phone.example", phone="+48600100301", consents={"sms": "opted_in"})
    CustomerFactory(email="restart@phone.example", phone="+48600100302", consents={"sms": "opted_out"})
    pks = {}
    for label, channel, address, sid in messages:
        if address not in customers:
            if "@" in address:
                customers[address] = CustomerFactory(email=address, phone=None, consents={"email": "opted_in"})
            else:
                customers[address] = CustomerFactory(
                    email=f"{address[1:]}@phone.example",
                    phone=address,
                    consents={"sms": "opted_in", "whatsapp": "opted_in"},
                )
        pks[label] = Message.objects.create(
            run=run,
            step=steps[{"email": 0, "sms": 1, "whatsapp": 2}[channel]],
            customer=customers[address],
            channel=channel,
            to_address=address,
            status="sent",
            rank=Message.RANK["sent"],
            provider="sendgrid" if channel == "email" else "twilio",
            provider_message_id=sid,
        ).pk
    return pks


def world_clear() -> None:
    ProviderEvent.objects.all().delete()
    Suppression.objects.all().delete()
    Customer.objects.all().delete()  # with their messages, timelines and consents


def requests_of(units: list[tuple], rng: random.Random) -> list[tuple]:
    """Neighbouring SendGrid events go in one POST of 1-10 events, as SendGrid batches them."""
    requests, batch = [], []
    for unit in units:
        if unit[0] == "sendgrid":
            batch.append(unit)
            if len(batch) >= rng.randint(1, 10):
                requests.append(("sendgrid", None, batch))
                batch = []
            continue
        if batch:
            requests.append(("sendgrid", None, batch))
            batch = []
        requests.append(unit)
    return requests + ([("sendgrid", None, batch)] if batch else [])


def post(client: Client, request: tuple, pks: dict[str, int]):
    provider, label, payload = request
    if provider == "sendgrid":
        return post_sendgrid(client, [{**event, "chorus_message_id": str(pks[lb])} for _, lb, event in payload])
    if provider == "twilio-status":
        path = reverse("webhooks:twilio-status") + (f"?m={pks[label]}" if label else "")
        return post_twilio(client, path, payload)
    return post_twilio(client, reverse("webhooks:twilio-inbound"), payload)


def snapshot(labels: dict[int, str]) -> dict:
    """Everything the events decide, by natural keys. Times the provider does not give (Twilio's) are left out."""

    def who(customer: Customer) -> str:
        return customer.phone or customer.email

    messages = {}
    for m in Message.objects.all():
        times = (m.delivered_at, m.opened_at, m.clicked_at, m.failed_at) if m.channel == "email" else ()
        messages[labels[m.pk]] = (m.status, m.rank, *times)
    activities = Counter()
    for a in Activity.objects.select_related("customer"):
        properties = {k: v for k, v in a.properties.items() if k != "provider_event"}
        provider_time = a.kind.startswith("message.") and a.channel == "email"
        activities[
            (
                who(a.customer),
                a.kind,
                a.channel,
                labels.get(a.message_id),
                json.dumps(properties, sort_keys=True),
                a.occurred_at if provider_time else None,
            )
        ] += 1
    consents = Counter(
        (who(c.customer), c.channel, c.status, c.source) for c in Consent.objects.select_related("customer")
    )
    current = {}
    for c in Consent.objects.select_related("customer").order_by("occurred_at", "id"):
        current[(who(c.customer), c.channel)] = c.status
    return {
        "messages": messages,
        "activities": activities,
        "consent rows": consents,
        "current consent": current,
        "suppressions": set(Suppression.objects.values_list("address_hash", "reason")),
        "last engaged by email": {who(c): c.last_engaged_email_at for c in Customer.objects.all()},
        "events": ProviderEvent.objects.count(),
        "unprocessed": ProviderEvent.objects.filter(processed_at=None).count(),
        "errors": Counter(ProviderEvent.objects.exclude(error="").values_list("error", flat=True)),
    }


def out_of_order_pairs(sequence: list[tuple]) -> int:
    """How many events arrive before an earlier event of the same message (a shuffle that tests something)."""
    seen: dict[str, int] = {}
    late = 0
    for _provider, label, payload in sequence:
        key = label or payload.get("MessageSid")
        order = payload.get("timestamp") or ["sent", "delivered", "undelivered", "failed", "read"].index(
            payload.get("MessageStatus", "sent")
        )
        if order < seen.get(key, order):
            late += 1
        seen[key] = max(seen.get(key, order), order)
    return late


def test_replayed_shuffled_concurrent_webhooks_end_like_one_in_order_delivery(settings):
    rng = random.Random(5)
    fixture, fixture_messages = fixture_units()
    generated, generated_messages = generated_units(rng)
    messages = fixture_messages + generated_messages
    units = fixture + generated
    assert len(generated) == GENERATED
    campaign = CampaignFactory()
    StepFactory(campaign=campaign, position=0, channel="email")
    StepFactory(campaign=campaign, position=1, channel="sms", template__body="Hi")
    StepFactory(campaign=campaign, position=2, channel="sms", template__body="Hi there")

    # 1. One delivery, in order, one request at a time.
    pks = world_build(messages, campaign)
    client = Client()
    for request in requests_of(units, rng):
        assert post(client, request, pks).status_code in {200, 202, 204}
    expected = snapshot({pk: label for label, pk in pks.items()})
    assert (expected["unprocessed"], expected["errors"]) == (0, Counter()), "every event found its message or customer"
    assert 0 < expected["events"] <= len(units)
    world_clear()

    # 2. The same events three times each, shuffled, from several threads, into a fresh world.
    pks = world_build(messages, campaign)
    barrage = units * 3
    rng.shuffle(barrage)
    assert out_of_order_pairs(barrage) > 100
    failures: list[str] = []

    def deliver(share: list[tuple]) -> None:
        client = Client()
        try:
            for request in share:
                response = post(client, request, pks)
                if response.status_code not in {200, 202, 204}:
                    failures.append(f"{request[0]} -> {response.status_code} {response.content[:200]!r}")
        except Exception as exc:  # reported by the main thread
            failures.append(f"{request[0]} raised {exc!r}")
        finally:
            connections.close_all()

    requests = requests_of(barrage, rng)
    threads = [threading.Thread(target=deliver, args=(requests[i::THREADS],)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    actual = snapshot({pk: label for label, pk in pks.items()})

    for part in expected:
        assert actual[part] == expected[part], part
    # The end state is not trivial: every kind of outcome is in it.
    statuses = Counter(status for status, *_ in expected["messages"].values())
    assert {"sent", "delivered", "opened", "clicked", "bounced", "failed", "undelivered"} <= set(statuses)
    kinds = Counter(key[1] for key in expected["activities"].elements())
    assert {"message.deferred", "message.dropped", "message.complained", "message.replied", "consent.changed"} <= set(
        kinds
    )
    assert {reason for _, reason in expected["suppressions"]} == {"hard_bounce", "spam_report"}
    assert expected["current consent"][("+48600100200", "sms")] == "opted_out"
    assert expected["current consent"][("+48600100302", "sms")] == "opted_in"
