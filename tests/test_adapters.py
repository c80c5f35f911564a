"""Each adapter through its real SDK against the sandbox over HTTP: request shape and error mapping.

The sandbox records every request it accepts (``SandboxMessage.request``) and can be told to
answer 429 or 5xx (``sandbox_fault_set``); nothing here patches an SDK.
"""

from __future__ import annotations

import logging
import time
from email.utils import formatdate
from unittest.mock import ANY

import pytest
from django.core.exceptions import ImproperlyConfigured
from twilio.base.exceptions import TwilioRestException

from channels.adapters import ChannelError, Outbound, adapter_for
from channels.adapters.base import retry_after_seconds
from channels.adapters.console import ConsoleAdapter
from channels.adapters.sendgrid import SendGridAdapter
from channels.adapters.twilio import TwilioSmsAdapter, TwilioWhatsAppAdapter, twilio_error
from channels.models import SandboxMessage
from channels.sandbox import sandbox_fault_set, sandbox_faults_clear
from channels.selectors import email_as_received, outbox_messages, sandbox_request, sandbox_requests, sandbox_text
from config.settings import _sandbox_faults

pytestmark = pytest.mark.django_db(transaction=True)

UNSUBSCRIBE = {
    "List-Unsubscribe": "<https://chorus.example/u/tok>",
    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
}


@pytest.fixture(autouse=True)
def _no_faults():
    sandbox_faults_clear()
    yield
    sandbox_faults_clear()


def email(message_id: int, to: str, **kwargs) -> Outbound:
    fields = {
        "sender": "news@brand.example",
        "sender_name": "Brand News",
        "reply_to": "care@brand.example",
        "subject": "Spring sale",
        "body": "Hello, the sale is on.",
        "html": "<p>Hello, the sale is on.</p>",
        "categories": ("campaign-7",),
        "headers": {**UNSUBSCRIBE, "List-Unsubscribe": f"<https://chorus.example/u/{message_id}>"},
    }
    return Outbound(message_id=message_id, to=to, **{**fields, **kwargs})


def sms(message_id: int, to: str, sender: str = "+15005550006", body: str = "Sale today") -> Outbound:
    return Outbound(message_id=message_id, to=to, sender=sender, body=body)


def recorded(provider: str) -> list[SandboxMessage]:
    return list(SandboxMessage.objects.filter(provider=provider).order_by("pk"))


# --- SendGrid: request shape -------------------------------------------------------


def test_identical_emails_go_out_as_one_call_with_a_personalization_each(sandbox):
    batch = [email(11, "ann@example.com"), email(12, "bob@example.com"), email(13, "cy@example.com")]

    results = SendGridAdapter().send(batch)

    assert [r.message_id for r in results] == [11, 12, 13]
    assert all(r.ok for r in results)
    ids = [r.provider_message_id for r in results]
    assert len(set(ids)) == 3, "each message needs its own provider id (unique per provider)"
    assert len({i.split(".")[0] for i in ids}) == 1, "one API call, one X-Message-Id"
    rows = recorded("sendgrid")
    assert [r.to_address for r in rows] == ["ann@example.com", "bob@example.com", "cy@example.com"]
    request = rows[0].request
    assert request["from"] == {"email": "news@brand.example", "name": "Brand News"}
    assert request["reply_to"] == {"email": "care@brand.example"}
    assert request["subject"] == "Spring sale"
    assert request["categories"] == ["campaign-7"]
    assert [c["type"] for c in request["content"]] == ["text/plain", "text/html"]
    # Each recipient's share of the call: its own personalization and the headers in effect for it.
    shares = [sandbox_request(r) for r in rows]
    assert [
        (share["personalizations"], share["custom_args"], share["headers"]["List-Unsubscribe"]) for share in shares
    ] == [
        (
            [{"to": [{"email": f"{name}@example.com"}], "custom_args": {"chorus_message_id": str(pk)}, "headers": ANY}],
            {"chorus_message_id": str(pk)},
            f"<https://chorus.example/u/{pk}>",
        )
        for name, pk in (("ann", 11), ("bob", 12), ("cy", 13))
    ]
    assert all(share["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click" for share in shares)
    assert all(share["subject"] == "Spring sale" and share["content"] == request["content"] for share in shares)
    # The call itself is stored once: the others keep only their personalization.
    assert all(set(r.request) == {"personalizations", SandboxMessage.CONTENT_OF} for r in rows[1:])
    assert len({r.provider_message_id.split(".")[0] for r in rows}) == 1, "the sandbox saw one call"


def test_shared_emails_carry_each_recipients_substitutions_and_the_sandbox_records_them_applied(sandbox):
    shared = {"body": "Hi. Unsubscribe: -unsub-", "html": '<a href="-unsub-">Unsubscribe</a>'}
    batch = [
        email(31, "ann@example.com", substitutions={"-unsub-": "https://chorus.example/u/ann"}, **shared),
        email(32, "bob@example.com", substitutions={"-unsub-": "https://chorus.example/u/bob"}, **shared),
    ]

    results = SendGridAdapter().send(batch)

    assert all(r.ok for r in results)
    ann, bob = recorded("sendgrid")
    assert ann.provider_message_id.split(".")[0] == bob.provider_message_id.split(".")[0], "one call"
    assert ann.request["personalizations"][0]["substitutions"] == {"-unsub-": "https://chorus.example/u/ann"}
    assert bob.request["personalizations"][0]["substitutions"] == {"-unsub-": "https://chorus.example/u/bob"}
    assert ann.request["content"][1]["value"] == '<a href="-unsub-">Unsubscribe</a>', "the request as sent"
    assert (sandbox_text(ann), sandbox_text(bob)) == (
        "Hi. Unsubscribe: https://chorus.example/u/ann",
        "Hi. Unsubscribe: https://chorus.example/u/bob",
    )
    # The text is kept once, with the call's first recipient; a search for it finds both.
    assert (ann.body, bob.body) == ("Hi. Unsubscribe: https://chorus.example/u/ann", "")
    assert {m.to_address for m in outbox_messages(query="Unsubscribe")} == {"ann@example.com", "bob@example.com"}


def test_the_recipients_shares_of_a_call_are_read_with_one_query_for_the_lot(sandbox, django_assert_num_queries):
    shared = {"body": "Hi. Unsubscribe: -unsub-"}
    batch = [
        email(50 + n, f"r{n}@example.com", substitutions={"-unsub-": f"https://u/{n}"}, **shared) for n in range(30)
    ]
    SendGridAdapter().send(batch)
    first, *others = recorded("sendgrid")

    with django_assert_num_queries(1):  # the row keeping the call
        shares = sandbox_requests(others)
    with django_assert_num_queries(0):  # it is among them
        assert sandbox_requests([first, *others]) == {**shares, first.pk: sandbox_request(first)}
    assert [email_as_received(shares[r.pk])["text"] for r in others] == [
        f"Hi. Unsubscribe: https://u/{n}" for n in range(1, 30)
    ]


def test_the_sandbox_refuses_substitutions_that_are_not_strings(sandbox):
    (result,) = SendGridAdapter().send([email(41, "ann@example.com", substitutions={"-unsub-": 7})])
    assert result.error.permanent
    assert "Substitutions must be" in result.error.message
    assert not recorded("sendgrid")


def test_emails_with_different_content_go_out_one_call_each(sandbox):
    batch = [
        email(21, "ann@example.com", body="Hello Ann"),
        email(22, "bob@example.com", body="Hello Bob"),
        email(23, "cy@example.com", body="Hello Ann"),
    ]

    results = SendGridAdapter().send(batch)

    assert [r.message_id for r in results] == [21, 22, 23]
    calls = {r.to_address: r.provider_message_id.split(".")[0] for r in recorded("sendgrid")}
    assert calls["ann@example.com"] == calls["cy@example.com"]  # Ann's and Cy's texts are identical
    assert calls["bob@example.com"] != calls["ann@example.com"]
    assert sandbox_request(SandboxMessage.objects.get(to_address="bob@example.com"))["custom_args"] == {
        "chorus_message_id": "22"
    }
    bob = next(r for r in results if r.message_id == 22)
    assert "." not in bob.provider_message_id  # a lone message keeps the plain X-Message-Id


def test_more_than_a_thousand_identical_emails_are_split_into_calls_of_at_most_a_thousand():
    batch = [email(i, f"r{i}@example.com") for i in range(2001)]
    groups = SendGridAdapter()._groups(batch)
    assert [len(g) for g in groups] == [1000, 1000, 1]
    assert [m.message_id for g in groups for m in g] == list(range(2001))


# --- SendGrid: errors ----------------------------------------------------------------


def test_sendgrid_429_raises_a_transient_error_with_the_providers_retry_after(sandbox):
    sandbox_fault_set(provider="sendgrid", status=429, count=1, retry_after=7)

    with pytest.raises(ChannelError) as caught:
        SendGridAdapter().send([email(1, "ann@example.com")])

    assert not caught.value.permanent
    assert caught.value.code == "429"
    assert caught.value.retry_after == pytest.approx(7, abs=1)
    assert recorded("sendgrid") == []
    # The fault was for one request only: the next attempt goes through.
    assert SendGridAdapter().send([email(1, "ann@example.com")])[0].ok


@pytest.mark.parametrize("status", [500, 503])
def test_sendgrid_5xx_is_transient(sandbox, status):
    sandbox_fault_set(provider="sendgrid", status=status)

    with pytest.raises(ChannelError) as caught:
        SendGridAdapter().send([email(1, "ann@example.com"), email(2, "bob@example.com", body="other")])

    assert not caught.value.permanent
    assert caught.value.code == str(status)
    assert caught.value.retry_after is None


def test_sendgrid_bad_api_key_is_permanent_and_fails_the_whole_batch(sandbox, settings):
    key, settings.SENDGRID_API_KEY = settings.SENDGRID_API_KEY, "SG.wrong"
    adapter = SendGridAdapter()
    settings.SENDGRID_API_KEY = key  # what the sandbox expects

    with pytest.raises(ChannelError) as caught:
        adapter.send([email(1, "ann@example.com")])

    assert caught.value.permanent
    assert caught.value.message == "SendGrid 401: The provided authorization grant is invalid, expired, or revoked"


def test_sendgrid_400_fails_only_the_bad_message_with_the_providers_reason(sandbox):
    batch = [email(1, "ann@example.com"), email(2, "ann@localhost"), email(3, "cy@example.com")]

    results = SendGridAdapter().send(batch)

    assert [r.ok for r in results] == [True, False, True]
    error = results[1].error
    assert error.permanent
    assert error.code == "400"
    assert error.message == "SendGrid 400: Does not contain a valid address."
    assert sorted(r.to_address for r in recorded("sendgrid")) == ["ann@example.com", "cy@example.com"]


def test_an_address_the_sdk_cannot_even_parse_fails_that_message_permanently(sandbox):
    results = SendGridAdapter().send([email(1, "ann@example.com"), email(2, "not-an-address")])

    assert [r.ok for r in results] == [True, False]
    assert results[1].error.permanent
    assert results[1].error.message == "SendGrid refused 'not-an-address' before sending: not an email address."


def test_a_sendgrid_failure_after_part_of_the_batch_went_out_is_reported_not_raised(sandbox):
    sandbox_fault_set(provider="sendgrid", status=429, retry_after=3, after=1)
    batch = [email(1, "ann@example.com", body="a"), email(2, "bob@example.com", body="b")]

    results = SendGridAdapter().send(batch)

    assert results[0].ok
    assert not results[1].ok and not results[1].error.permanent
    assert results[1].error.retry_after == pytest.approx(3, abs=1)


def test_sendgrid_unreachable_is_transient(settings):
    settings.SENDGRID_API_HOST = "http://127.0.0.1:9"  # discard port: nothing listens
    with pytest.raises(ChannelError, match="SendGrid unreachable") as caught:
        SendGridAdapter().send([email(1, "ann@example.com")])
    assert not caught.value.permanent


# --- Twilio ---------------------------------------------------------------------------


def test_sms_asks_for_status_callbacks_at_the_public_url(sandbox):
    results = TwilioSmsAdapter().send([sms(5, "+48600100200")])

    assert results[0].ok and results[0].provider_message_id.startswith("SM")
    (row,) = recorded("twilio")
    assert row.request == {
        "To": "+48600100200",
        "From": "+15005550006",
        "Body": "Sale today",
        "StatusCallback": f"{sandbox.url}/webhooks/twilio/status?m=5",
    }


def test_a_messaging_service_sender_is_sent_as_messaging_service_sid(sandbox):
    service = "MG" + "a" * 32
    TwilioSmsAdapter().send([sms(5, "+48600100200", sender=service)])

    (row,) = recorded("twilio")
    assert row.request["MessagingServiceSid"] == service
    assert "From" not in row.request


def test_whatsapp_prefixes_both_numbers(sandbox):
    adapter = adapter_for("whatsapp")
    assert isinstance(adapter, TwilioWhatsAppAdapter)

    results = adapter.send([sms(6, "+48600100200", sender="+14155238886")])

    assert results[0].ok
    (row,) = recorded("twilio")
    assert (row.request["To"], row.request["From"]) == ("whatsapp:+48600100200", "whatsapp:+14155238886")


@pytest.mark.parametrize(
    ("number", "code"),
    [("+15005550001", "21211"), ("+15005550009", "21614"), ("48600", "21211")],
)
def test_twilio_recipient_errors_fail_only_that_message_permanently(sandbox, number, code):
    results = TwilioSmsAdapter().send([sms(1, "+48600100200"), sms(2, number), sms(3, "+48600100201")])

    assert [r.ok for r in results] == [True, False, True]
    assert results[1].error.permanent
    assert results[1].error.code == code
    assert results[1].error.message.startswith(f"Twilio {code}: ")
    assert len(recorded("twilio")) == 2


def test_twilio_429_raises_a_transient_error_with_retry_after(sandbox):
    sandbox_fault_set(provider="twilio", status=429, count=1, retry_after=4)

    with pytest.raises(ChannelError) as caught:
        TwilioSmsAdapter().send([sms(1, "+48600100200")])

    assert not caught.value.permanent
    assert caught.value.code == "20429"
    assert caught.value.retry_after == pytest.approx(4)


def test_twilio_5xx_is_transient(sandbox):
    sandbox_fault_set(provider="twilio", status=503)

    with pytest.raises(ChannelError) as caught:
        TwilioSmsAdapter().send([sms(1, "+48600100200")])

    assert not caught.value.permanent
    assert caught.value.retry_after is None


def test_twilio_bad_credentials_are_permanent_for_the_whole_batch(sandbox, settings):
    token, settings.TWILIO_AUTH_TOKEN = settings.TWILIO_AUTH_TOKEN, "wrong"
    adapter = TwilioSmsAdapter()
    settings.TWILIO_AUTH_TOKEN = token  # what the sandbox expects

    with pytest.raises(ChannelError) as caught:
        adapter.send([sms(1, "+48600100200"), sms(2, "+48600100201")])

    assert caught.value.permanent
    assert caught.value.code == "20003"


def test_a_twilio_failure_after_part_of_the_batch_went_out_is_reported_not_raised(sandbox):
    sandbox_fault_set(provider="twilio", status=429, retry_after=2, after=1)

    results = TwilioSmsAdapter().send([sms(1, "+48600100200"), sms(2, "+48600100201"), sms(3, "+48600100202")])

    assert [r.ok for r in results] == [True, False, False]
    assert all(not r.error.permanent and r.error.retry_after == 2 for r in results[1:])
    assert len(recorded("twilio")) == 1


def test_twilio_unreachable_is_transient(settings):
    settings.TWILIO_API_BASE_URL = "http://127.0.0.1:9"
    with pytest.raises(ChannelError, match="Twilio unreachable") as caught:
        TwilioSmsAdapter().send([sms(1, "+48600100200")])
    assert not caught.value.permanent


@pytest.mark.parametrize(
    ("status", "code", "permanent"),
    [
        (400, 21211, True),
        (400, 21610, True),  # the recipient replied STOP
        (400, 21614, True),
        (400, 21408, True),
        (429, 20429, False),
        (500, 20500, False),
        (503, None, False),
    ],
)
def test_twilio_error_codes_map_onto_permanent_and_transient(status, code, permanent):
    error = twilio_error(TwilioRestException(status, "/Messages.json", "nope", code), {"Retry-After": "9"})
    assert error.permanent is permanent
    assert error.retry_after == (None if permanent else 9)


# --- Retry-After parsing, fault settings, console ------------------------------------------


def test_retry_after_is_read_from_seconds_dates_or_the_rate_limit_reset():
    now = time.time()
    assert retry_after_seconds({"Retry-After": "12"}, now=now) == 12
    assert retry_after_seconds({"retry-after": formatdate(now + 30, usegmt=True)}, now=now) == pytest.approx(30, abs=1)
    assert retry_after_seconds({"X-RateLimit-Reset": str(int(now) + 20)}, now=now) == pytest.approx(20, abs=1)
    assert retry_after_seconds({"Retry-After": "-5"}, now=now) == 0
    assert retry_after_seconds({"Retry-After": "soon"}, now=now) is None
    assert retry_after_seconds({}, now=now) is None


def test_sandbox_faults_setting_is_parsed_and_bad_values_are_named():
    assert _sandbox_faults("sendgrid=429:0.1:2, twilio=503:1") == {
        "sendgrid": {"status": 429, "share": 0.1, "retry_after": 2},
        "twilio": {"status": 503, "share": 1.0, "retry_after": None},
    }
    with pytest.raises(ImproperlyConfigured, match=r"'sendgrid=400:0\.5' is not one"):
        _sandbox_faults("sendgrid=400:0.5")


def test_faults_from_settings_hit_every_request_at_share_one(sandbox, settings):
    settings.CHORUS_SANDBOX_FAULTS = {"twilio": {"status": 502, "share": 1.0, "retry_after": None}}
    with pytest.raises(ChannelError) as caught:
        TwilioSmsAdapter().send([sms(1, "+48600100200")])
    assert caught.value.code == "20500"
    assert SendGridAdapter().send([email(1, "ann@example.com")])[0].ok  # other providers unaffected


def test_bad_fault_requests_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="429 or a 5xx"):
        sandbox_fault_set(provider="sendgrid", status=400)
    with pytest.raises(ValueError, match="Unknown sandbox provider 'mailgun'"):
        sandbox_fault_set(provider="mailgun", status=429)


def test_the_console_adapter_logs_instead_of_sending(settings):
    settings.CHORUS_ADAPTERS = {**settings.CHORUS_ADAPTERS, "email": "channels.adapters.console.ConsoleAdapter"}
    adapter = adapter_for("email")
    assert isinstance(adapter, ConsoleAdapter)
    logged: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: logged.append(record.getMessage())
    logger = logging.getLogger("channels.adapters.console")
    logger.addHandler(handler)
    try:
        results = adapter.send([email(9, "ann@example.com")])
    finally:
        logger.removeHandler(handler)

    assert results[0].ok and results[0].provider_message_id.startswith("console-")
    (text,) = logged
    assert "To: ann@example.com" in text
    assert "From: Brand News <news@brand.example>" in text
    assert "Subject: Spring sale" in text
    assert "Hello, the sale is on." in text
    assert SandboxMessage.objects.count() == 0
