"""Broadcast email in batches: shared content, per-recipient substitutions, status recorded in bulk.

Through the real SendGrid SDK against the sandbox: a template whose Liquid reads
no customer variable renders to the same content for everyone, so its
recipients go out up to 1,000 per API call, each with its own unsubscribe,
preferences and view-in-browser links as SendGrid substitutions.
"""

from __future__ import annotations

import math
import re
from urllib.parse import urlsplit

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from campaigns.content.render import RECIPIENT_TAGS, RenderedContent
from campaigns.models import CampaignRun, TemplateVariant
from campaigns.services import enrollments_dispatch
from channels.models import Message, MessageContent, SandboxMessage
from channels.ratelimit import limits
from channels.selectors import message_as_sent, sandbox_text
from channels.services import messages_send
from channels.services.sending import _claim, _finish_sent
from customers.models import Consent, Customer, Persona
from customers.services.privacy import customer_erase, customer_export
from tests.factories import CustomerFactory, email_only_campaign, launch

pytestmark = pytest.mark.django_db(transaction=True)

NEWSLETTER = {
    "subject": "Spring at {{ brand.name }}",
    "blocks": [
        {"type": "heading", "text": "Spring is here"},
        {"type": "text", "text": "20% off everything this week, in {{ campaign.name }}."},
        {"type": "button", "text": "Shop now", "url": "https://northwind.example/sale"},
    ],
}


@pytest.fixture
def hold_playback(monkeypatch) -> list[list[int]]:
    """The sandbox records but plays no events back (eager, a thousand webhooks would run inside its answer)."""
    held: list[list[int]] = []
    monkeypatch.setattr("channels.sandbox.sendgrid.emit_after_commit", held.append)
    return held


def broadcast_campaign(**template):
    campaign = email_only_campaign()
    step = campaign.steps.get()
    for name, value in {**NEWSLETTER, **template}.items():
        setattr(step.template, name, value)
    step.template.save()
    return campaign


# Content rendered for one recipient: stored on the message itself.
PERSONAL = RenderedContent(channel="email", subject="Spring", text="Hello")


def queued_messages(campaign) -> list[Message]:
    run = launch(campaign)
    while enrollments_dispatch():
        pass
    return list(Message.objects.filter(run=run, status="queued").order_by("pk"))


def call_id(row: SandboxMessage) -> str:
    """The X-Message-Id of the API call that carried ``row``."""
    return row.provider_message_id.split(".")[0]


def unsubscribe_url(text: str) -> str:
    return re.search(r"^Unsubscribe: (\S+)$", text, re.MULTILINE).group(1)


def test_a_broadcast_goes_out_in_one_call_with_each_recipients_links_as_substitutions(sandbox, hold_sends):
    customers = [CustomerFactory(consents={"email": "opted_in"}) for _ in range(3)]
    messages = queued_messages(broadcast_campaign())

    messages_send(message_ids=[m.pk for m in messages])

    rows = list(SandboxMessage.objects.filter(provider="sendgrid").order_by("pk"))
    assert [r.to_address for r in rows] == [c.email for c in customers]
    assert len({call_id(r) for r in rows}) == 1, "one API call for the three recipients"
    first = rows[0].request
    html = next(c["value"] for c in first["content"] if c["type"] == "text/html")
    assert RECIPIENT_TAGS["unsubscribe"] in html, "the shared content carries the tag"
    assert all(r.request[SandboxMessage.CONTENT_OF] == rows[0].provider_message_id for r in rows[1:])
    unsubscribes = set()
    messages = list(Message.objects.filter(pk__in=[m.pk for m in messages]).select_related("content").order_by("pk"))
    # Chorus stores the shared content once, not a copy per recipient.
    assert MessageContent.objects.count() == 1
    assert {(m.content_id, m.subject, m.body) for m in messages} == {(MessageContent.objects.get().pk, "", "")}
    for row, message in zip(rows, messages, strict=True):
        (personalization,) = row.request["personalizations"]
        substitutions = personalization["substitutions"]
        assert set(substitutions) == set(RECIPIENT_TAGS.values())
        url = substitutions[RECIPIENT_TAGS["unsubscribe"]]
        unsubscribes.add(url)
        # The outbox shows, and Chorus keeps, the body this recipient got: its own links, no tags.
        subject, body = message_as_sent(message)
        received = sandbox_text(row)
        assert unsubscribe_url(received) == url
        assert "-chorus_" not in received and "-chorus_" not in body
        assert unsubscribe_url(body) == url
        assert personalization["headers"]["List-Unsubscribe"] == f"<{url}>"
        assert personalization["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert personalization["custom_args"] == {"chorus_message_id": str(message.pk)}
        assert message.sent_at is not None and subject == "Spring at Northwind"
    assert len(unsubscribes) == 3, "every recipient has their own unsubscribe link"


def test_a_broadcast_persona_variant_goes_to_the_personas_members_in_a_call_of_its_own(sandbox, hold_sends):
    persona = Persona.objects.create(
        name="Bargain hunter", slug="bargain-hunter", rules={"all": [{"field": "country", "op": "eq", "value": "XX"}]}
    )
    campaign = broadcast_campaign()
    template = campaign.steps.get().template
    TemplateVariant.objects.create(template=template, persona=persona, subject="Deals for bargain hunters")
    bea, cy, di = (CustomerFactory(consents={"email": "opted_in"}) for _ in range(3))
    messages = queued_messages(campaign)
    Customer.objects.filter(pk=bea.pk).update(persona=persona)

    messages_send(message_ids=[m.pk for m in messages])

    rows = {r.to_address: r for r in SandboxMessage.objects.filter(provider="sendgrid")}
    assert rows[bea.email].subject == "Deals for bargain hunters"
    assert rows[cy.email].subject == rows[di.email].subject == "Spring at Northwind"
    assert call_id(rows[cy.email]) == call_id(rows[di.email]) != call_id(rows[bea.email])
    assert MessageContent.objects.count() == 2, "the default and the variant, each stored once"


def test_a_data_export_shows_a_broadcast_email_as_its_recipient_got_it_and_erasure_forgets_it(sandbox, hold_sends):
    ana, bo = (CustomerFactory(consents={"email": "opted_in"}) for _ in range(2))
    messages_send(message_ids=[m.pk for m in queued_messages(broadcast_campaign())])
    received = {row.to_address: sandbox_text(row) for row in SandboxMessage.objects.filter(provider="sendgrid")}

    for customer in (ana, bo):
        export = customer_export(customer=customer)
        [email], [outbox] = export["messages"], export["sandbox_outbox"]
        assert (email["subject"], email["body"]) == ("Spring at Northwind", received[customer.email])
        assert outbox["body"] == received[customer.email]

    customer_erase(customer=ana, by=None)
    assert Message.objects.get(customer=ana).content is None
    assert Message.objects.get(customer=bo).content is not None
    # Ana's outbox row kept the call Bo's shares: it keeps that and nothing of hers.
    [anas] = SandboxMessage.objects.filter(provider="sendgrid", to_address="")
    assert anas.body == "" and "personalizations" not in anas.request and ana.email not in str(anas.request)
    assert sandbox_text(SandboxMessage.objects.get(to_address=bo.email)) == received[bo.email]


def test_each_recipients_unsubscribe_link_in_a_shared_email_opts_out_only_them(sandbox, hold_sends, client):
    ann, bob = (CustomerFactory(consents={"email": "opted_in"}) for _ in range(2))
    messages_send(message_ids=[m.pk for m in queued_messages(broadcast_campaign())])
    bobs = SandboxMessage.objects.get(provider="sendgrid", to_address=bob.email)

    response = client.post(
        urlsplit(unsubscribe_url(sandbox_text(bobs))).path, data="List-Unsubscribe=One-Click", content_type="text/plain"
    )

    assert response.status_code == 200
    assert list(Customer.objects.filter(pk__in=[ann.pk, bob.pk]).consented("email")) == [ann]


def test_an_email_reading_customer_variables_goes_out_one_call_per_recipient(sandbox, hold_sends):
    ana, bo = (
        CustomerFactory(first_name="Ana", consents={"email": "opted_in"}),
        CustomerFactory(first_name="Bo", consents={"email": "opted_in"}),
    )
    messages = queued_messages(broadcast_campaign(subject="Spring sale, {{ customer.first_name }}"))

    messages_send(message_ids=[m.pk for m in messages])

    rows = {r.to_address: r for r in SandboxMessage.objects.filter(provider="sendgrid")}
    assert call_id(rows[ana.email]) != call_id(rows[bo.email])
    assert (rows[ana.email].subject, rows[bo.email].subject) == ("Spring sale, Ana", "Spring sale, Bo")
    for row in rows.values():
        assert "substitutions" not in row.request["personalizations"][0]
        assert "-chorus_" not in str(row.request["content"]) and SandboxMessage.CONTENT_OF not in row.request


def test_a_thousand_and_one_recipients_go_out_in_two_calls(sandbox, hold_playback):
    campaign = broadcast_campaign()
    step = campaign.steps.get()
    run = CampaignRun.objects.create(campaign=campaign, number=1)
    customers = Customer.objects.bulk_create(
        Customer(email=f"reader{n}@example.com", first_name="Reader", country="PL") for n in range(1001)
    )
    Consent.objects.bulk_create(
        Consent(customer=c, channel="email", status="opted_in", source=Consent.Source.IMPORT) for c in customers
    )
    messages = Message.objects.bulk_create(
        Message(run=run, step=step, customer=c, channel="email", to_address=c.email) for c in customers
    )

    messages_send(message_ids=[m.pk for m in messages])

    calls: dict[str, int] = {}
    for row in SandboxMessage.objects.filter(provider="sendgrid"):
        calls[call_id(row)] = calls.get(call_id(row), 0) + 1
    assert sorted(calls.values()) == [1, 1000]
    assert sorted(len(ids) for ids in hold_playback) == [1, 1000], "one playback task per request"
    assert Message.objects.filter(run=run, status="sent", provider_message_id__isnull=False).count() == 1001
    assert Message.objects.filter(run=run).values("provider_message_id").distinct().count() == 1001


def test_recording_a_sent_batch_never_moves_a_message_backwards(hold_sends):
    CustomerFactory.create_batch(3, consents={"email": "opted_in"})
    first, second, third = _claim([m.pk for m in queued_messages(broadcast_campaign())])
    delivered_at = timezone.now()
    # The provider's "delivered" webhook got there before the API call returned; the third was skipped.
    Message.objects.filter(pk=first.pk).update(
        status="delivered", rank=Message.RANK["delivered"], delivered_at=delivered_at
    )
    Message.objects.filter(pk=third.pk).update(status="skipped", rank=Message.RANK["skipped"], skip_reason="erased")
    _finish_sent("sendgrid", [(m, PERSONAL, f"x.{m.pk}") for m in (first, second, third)])

    first, second, third = (Message.objects.get(pk=m.pk) for m in (first, second, third))
    assert (first.status, first.rank, first.delivered_at) == ("delivered", Message.RANK["delivered"], delivered_at)
    assert (first.provider_message_id, first.body, first.sent_at is not None) == (f"x.{first.pk}", "Hello", True)
    assert (second.status, second.rank, second.provider, second.subject) == ("sent", 20, "sendgrid", "Spring")
    assert (third.status, third.provider_message_id, third.body) == ("skipped", None, "")


def test_a_failure_reported_before_the_send_call_returned_keeps_its_reason(hold_sends):
    CustomerFactory.create_batch(2, consents={"email": "opted_in"})
    bounced, sent = _claim([m.pk for m in queued_messages(broadcast_campaign())])
    Message.objects.filter(pk=sent.pk).update(error="SendGrid 429: too many requests")  # an earlier attempt's
    # The bounce webhook got there first, with the reason shown on the Failed deliveries page.
    Message.objects.filter(pk=bounced.pk).update(
        status="bounced", rank=Message.RANK["bounced"], error="SendGrid bounce: 550 no such user"
    )
    _finish_sent("sendgrid", [(m, PERSONAL, f"x.{m.pk}") for m in (bounced, sent)])

    bounced, sent = (Message.objects.get(pk=m.pk) for m in (bounced, sent))
    assert (bounced.status, bounced.error) == ("bounced", "SendGrid bounce: 550 no such user")
    assert (sent.status, sent.error) == ("sent", "")


def test_the_send_path_makes_the_same_queries_for_three_recipients_as_for_thirty(
    sandbox, hold_sends, hold_playback, django_assert_max_num_queries, settings, monkeypatch
):
    """No query per message: claim, re-checks, render and recording are per batch.

    On PostgreSQL; SQLite records each sent message with its own UPDATE (one transaction)."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite records sent messages one UPDATE each, by design")
    # Sender limits are read once, by the first call, however long the test takes.
    settings.CHORUS_RATE_LIMIT_CACHE_SECONDS = 3600
    monkeypatch.setattr(limits, "loaded_at", -math.inf)
    CustomerFactory.create_batch(33, consents={"email": "opted_in"})
    messages = queued_messages(broadcast_campaign())
    small, large = messages[:3], messages[3:]

    with CaptureQueriesContext(connection) as for_three:
        messages_send(message_ids=[m.pk for m in small])
    with django_assert_max_num_queries(len(for_three.captured_queries)):
        messages_send(message_ids=[m.pk for m in large])
    assert Message.objects.filter(status="sent").count() == len(messages)
