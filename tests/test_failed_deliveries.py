"""Failed deliveries: the page, its filters, and retrying by hand (still at most one delivery)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.urls import reverse

from campaigns.services import enrollments_dispatch
from channels.models import Message, SandboxMessage
from channels.services import TransientSendError, messages_retry, messages_send
from config.roles import ADMIN
from customers.models import Activity
from customers.services import consent_record
from customers.services.activities import counts_as_engagement
from tests.factories import CustomerFactory, UserFactory, launch, two_channel_campaign

pytestmark = pytest.mark.django_db(transaction=True)

CERTAIN = {"email": {"delivered": 1.0}, "sms": {"delivered": 1.0}, "whatsapp": {"delivered": 1.0}}


@pytest.fixture
def failed(sandbox, settings, hold_sends, roles):
    """Ana's email and SMS, both failed for good: SendGrid and Twilio were unreachable on every attempt."""
    settings.CHORUS_SANDBOX_PLAYBACK = CERTAIN
    ana = CustomerFactory(first_name="Ana", consents={"email": "opted_in", "sms": "opted_in"})
    run = launch(two_channel_campaign(name="Spring sale"))
    while enrollments_dispatch():  # the email step, then the SMS step
        pass
    settings.SENDGRID_API_HOST = settings.TWILIO_API_BASE_URL = "http://127.0.0.1:9"  # nothing listens there
    messages = list(Message.objects.filter(run=run, customer=ana).order_by("channel"))
    for message in messages:
        with pytest.raises(TransientSendError):
            messages_send(message_ids=[message.pk])
        messages_send(message_ids=[message.pk], final_attempt=True)
    settings.SENDGRID_API_HOST = f"{sandbox.url}/sandbox/sendgrid"  # the providers are back
    settings.TWILIO_API_BASE_URL = f"{sandbox.url}/sandbox/twilio"
    hold_sends.clear()
    for message in messages:
        message.refresh_from_db()
        assert message.status == "failed"
    return messages


def send_held(hold_sends) -> None:
    """Run the send tasks retries enqueued, as the worker would."""
    for queued in hold_sends:
        for ids in queued.values():
            messages_send(message_ids=ids)
    hold_sends.clear()


# --- the service ------------------------------------------------------------------


def test_a_retried_message_is_queued_again_and_delivered_once(failed, hold_sends):
    email, sms = failed
    admin = UserFactory(username="root", role=ADMIN)
    assert messages_retry(message_ids=[email.pk], by=admin) == 1
    email.refresh_from_db()
    assert (email.status, email.rank, email.provider_message_id, email.failed_at) == ("queued", 0, None, None)
    assert "unreachable" in email.error  # kept until the next attempt overwrites it
    retried = Activity.objects.get(message=email, kind="message.retried")
    assert retried.properties["by"] == "root"
    assert retried.properties["was"] == "failed"
    assert retried.channel == "email"  # on the timeline under its channel...
    assert not counts_as_engagement(retried.kind, retried.channel)  # ...without counting as engagement
    assert hold_sends == [{"email": [email.pk]}]

    send_held(hold_sends)
    email.refresh_from_db()
    assert (email.status, email.error, email.attempts) == ("delivered", "", 3)
    assert SandboxMessage.objects.filter(to_address=email.to_address).count() == 1
    sms.refresh_from_db()
    assert sms.status == "failed"  # not selected, not touched


def test_a_message_no_longer_failed_is_left_alone(failed, hold_sends):
    email, sms = failed
    admin = UserFactory(username="root", role=ADMIN)
    messages_retry(message_ids=[email.pk], by=admin)
    send_held(hold_sends)
    assert messages_retry(message_ids=[email.pk, sms.pk], by=admin) == 1
    assert hold_sends == [{"sms": [sms.pk]}]
    assert Activity.objects.filter(message=email, kind="message.retried").count() == 1


def test_a_retry_rechecks_consent_at_send_time(failed, hold_sends):
    email, _ = failed
    consent_record(customer=email.customer, channel="email", status="opted_out", source="api")
    messages_retry(message_ids=[email.pk], by=UserFactory(role=ADMIN))
    send_held(hold_sends)
    email.refresh_from_db()
    assert (email.status, email.skip_reason) == ("skipped", "no_consent")
    assert not SandboxMessage.objects.exists()


def _together(target, args_list) -> list:
    """Run ``target`` once per argument tuple, in threads released at the same moment."""
    barrier = threading.Barrier(len(args_list))
    results: list = [None] * len(args_list)
    errors: list = []

    def run(index, args):
        try:
            barrier.wait()
            results[index] = target(*args)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, args)) for i, args in enumerate(args_list)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return results


def test_two_concurrent_retries_and_two_send_tasks_send_the_message_once(failed, hold_sends):
    email, _ = failed
    mia, root = UserFactory(username="mia2", role=ADMIN), UserFactory(username="root", role=ADMIN)

    retried = _together(lambda user: messages_retry(message_ids=[email.pk], by=user), [(mia,), (root,)])
    assert sorted(retried) == [0, 1]
    assert hold_sends == [{"email": [email.pk]}]
    assert Activity.objects.filter(message=email, kind="message.retried").count() == 1

    # The task, delivered twice (a redelivery, a second worker): one claim wins.
    _together(lambda: messages_send(message_ids=[email.pk]), [(), ()])
    email.refresh_from_db()
    assert email.status == "delivered"
    assert SandboxMessage.objects.filter(to_address=email.to_address).count() == 1


# --- the page ---------------------------------------------------------------------


def test_marketer_sees_failed_messages_with_their_last_error(failed, marketer_client):
    email, sms = failed
    page = marketer_client.get(reverse("deliveries:failed"))
    assert page.status_code == 200
    html = page.content.decode()
    assert f'data-message="{email.pk}"' in html and f'data-message="{sms.pk}"' in html
    assert "Spring sale" in html and "unreachable" in html
    assert "Retry selected" in html
    assert 'name="csrfmiddlewaretoken"' in html


def test_filters_by_channel_and_searches_by_recipient(failed, marketer_client):
    email, sms = failed
    fragment = marketer_client.get(reverse("deliveries:failed"), {"channel": "sms"}, headers={"HX-Request": "true"})
    html = fragment.content.decode()
    assert html.lstrip().startswith('<div id="failed-results">')
    assert f'data-message="{sms.pk}"' in html and f'data-message="{email.pk}"' not in html
    found = marketer_client.get(reverse("deliveries:failed"), {"q": sms.to_address[-6:]}).content.decode()
    assert f'data-message="{sms.pk}"' in found and f'data-message="{email.pk}"' not in found
    nothing = marketer_client.get(reverse("deliveries:failed"), {"q": "nobody@nowhere"}).content.decode()
    assert "No failed deliveries match these filters." in nothing


def test_bounces_are_not_listed_but_counted(failed, marketer_client):
    email, _ = failed
    Message.objects.filter(pk=email.pk).update(status="bounced")
    html = marketer_client.get(reverse("deliveries:failed")).content.decode()
    assert f'data-message="{email.pk}"' not in html
    assert "1 bounced message is not listed" in html


def test_marketer_retries_the_selected_messages_and_is_told_what_happened(failed, marketer_client, hold_sends):
    email, sms = failed
    Message.objects.filter(pk=sms.pk).update(status="delivered")  # delivered in between
    response = marketer_client.post(reverse("deliveries:retry"), {"message": [email.pk, sms.pk]}, follow=True)
    assert response.redirect_chain[-1][0] == reverse("deliveries:failed")
    assert "1 message queued again; 1 was no longer failed and was left alone." in response.content.decode()
    assert hold_sends == [{"email": [email.pk]}]
    assert Activity.objects.get(message=email, kind="message.retried").properties["by"] == "mia"


def test_retry_all_matching_retries_only_what_the_filters_match(failed, marketer_client, hold_sends):
    email, sms = failed
    response = marketer_client.post(reverse("deliveries:retry"), {"all": "1", "channel": "sms"})
    assert response.status_code == 302
    assert response["Location"] == reverse("deliveries:failed") + "?channel=sms"
    assert hold_sends == [{"sms": [sms.pk]}]
    email.refresh_from_db()
    assert email.status == "failed"


def test_analyst_sees_the_page_read_only_and_cannot_retry(failed, analyst_client, hold_sends):
    email, _ = failed
    html = analyst_client.get(reverse("deliveries:failed")).content.decode()
    assert f'data-message="{email.pk}"' in html
    assert "Retry selected" not in html and 'name="message"' not in html
    assert analyst_client.post(reverse("deliveries:retry"), {"message": [email.pk]}).status_code == 403
    email.refresh_from_db()
    assert email.status == "failed"
    assert hold_sends == []


def test_retry_without_a_selection_says_so(failed, marketer_client):
    response = marketer_client.post(reverse("deliveries:retry"), {}, follow=True)
    assert "Select at least one message to retry." in response.content.decode()
