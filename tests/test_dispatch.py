"""Launch, dispatch and send: once per (step, run, customer), consent checked twice."""

from __future__ import annotations

import pytest
from django.utils import timezone

from campaigns.models import Campaign, CampaignRun, Enrollment, Template
from campaigns.selectors import campaign_channel_stats, campaigns_finished
from campaigns.services import campaign_launch, campaign_schedule, campaigns_complete, enrollments_dispatch
from channels.models import Message, SandboxMessage
from channels.sandbox import sandbox_fault_set, sandbox_faults_clear
from channels.selectors import sandbox_request
from channels.services import TransientSendError, messages_send
from customers.models import Activity
from customers.services import consent_record
from tests.factories import CustomerFactory, email_only_campaign, launch, two_channel_campaign


@pytest.mark.django_db
def test_launching_twice_creates_one_run_with_one_enrollment_per_audience_member():
    CustomerFactory.create_batch(3, country="PL")
    CustomerFactory(country="DE")
    campaign = two_channel_campaign()
    run = launch(campaign)
    assert campaign_launch(campaign_id=campaign.pk) is None
    assert CampaignRun.objects.filter(campaign=campaign).count() == 1
    assert run.enrollments.count() == 3


@pytest.mark.django_db
def test_scheduling_a_campaign_without_steps_names_the_problem():
    campaign = two_channel_campaign(state=Campaign.State.APPROVED)
    campaign.steps.all().delete()
    with pytest.raises(Exception, match="Add at least one step"):
        campaign_schedule(campaign=campaign, at=timezone.now())


@pytest.mark.django_db
def test_scheduling_rejects_broken_liquid_with_the_step_and_part():
    campaign = two_channel_campaign(state=Campaign.State.APPROVED)
    Template.objects.filter(steps__campaign=campaign, steps__position=0).update(subject="Hi {{ customer.first_name ")
    with pytest.raises(Exception, match=r"Step 1 \(Email\): Liquid error in the subject"):
        campaign_schedule(campaign=campaign, at=timezone.now())


@pytest.mark.django_db
def test_dispatch_never_creates_a_second_message_for_the_same_step_run_and_customer():
    CustomerFactory.create_batch(2, consents={"email": "opted_in", "sms": "opted_in"})
    run = launch(two_channel_campaign())
    enrollments_dispatch()  # on_commit callbacks are not run: nothing is sent here
    assert Message.objects.filter(run=run).count() == 2
    # A crash after the messages were written but before the enrollments moved on
    # would replay the same step: the unique constraint keeps one message each.
    Enrollment.objects.filter(run=run).update(step_position=0, state="active", next_action_at=timezone.now())
    enrollments_dispatch()
    assert Message.objects.filter(run=run).count() == 2
    assert Message.objects.filter(run=run, step__position=0).count() == 2


@pytest.mark.django_db
def test_customer_without_consent_gets_a_skipped_message_and_nothing_is_sent():
    CustomerFactory(consents={"email": "opted_in"})  # no SMS consent
    CustomerFactory(consents={"email": "opted_out", "sms": "opted_out"})
    run = launch(two_channel_campaign())
    enrollments_dispatch()
    enrollments_dispatch()
    skipped = Message.objects.filter(run=run, status="skipped")
    assert sorted(skipped.values_list("channel", "skip_reason")) == [
        ("email", "no_consent"),
        ("sms", "no_consent"),
        ("sms", "no_consent"),
    ]
    assert Message.objects.filter(run=run, status="queued").count() == 1
    assert Activity.objects.filter(kind="message.skipped").count() == 3


@pytest.mark.django_db(transaction=True)
def test_both_channels_send_through_the_real_sdks_and_come_back_delivered(sandbox):
    ana = CustomerFactory(first_name="Ana", consents={"email": "opted_in", "sms": "opted_in"})
    run = launch(two_channel_campaign())
    while enrollments_dispatch():
        pass
    email = Message.objects.get(run=run, customer=ana, channel="email")
    sms = Message.objects.get(run=run, customer=ana, channel="sms")
    # Delivered, or further: the sandbox plays back opens for a share of emails.
    assert email.delivered_at is not None and sms.delivered_at is not None
    assert email.rank >= Message.RANK["delivered"] and sms.rank >= Message.RANK["delivered"]
    assert email.provider == "sendgrid" and email.provider_message_id
    assert sms.provider == "twilio" and sms.provider_message_id.startswith("SM")
    outbox = {m.provider: m for m in SandboxMessage.objects.all()}
    assert outbox["sendgrid"].to_address == ana.email
    assert outbox["sendgrid"].subject == "Spring sale, Ana"
    assert sandbox_request(outbox["sendgrid"])["custom_args"] == {"chorus_message_id": str(email.pk)}
    assert "Northwind Outfitters" in outbox["sendgrid"].body  # the brand's legal footer
    assert outbox["twilio"].to_address == ana.phone
    assert outbox["twilio"].body == "Ana: 20% off today. Reply STOP to opt out"
    kinds = set(Activity.objects.filter(customer=ana, kind__startswith="message.").values_list("kind", "channel"))
    assert {
        ("message.delivered", "email"),
        ("message.delivered", "sms"),
        ("message.sent", "email"),
        ("message.sent", "sms"),
    } <= kinds
    stats = {row["channel"]: row for row in campaign_channel_stats(run.campaign)}
    assert (stats["email"]["sent"], stats["email"]["delivered"]) == (1, 1)
    assert campaigns_finished() == [run.campaign_id]
    campaigns_complete(campaign_ids=[run.campaign_id])
    run.campaign.refresh_from_db()
    assert run.campaign.state == "completed"


@pytest.mark.django_db(transaction=True)
def test_opt_out_after_dispatch_stops_the_send(sandbox, hold_sends):
    bo = CustomerFactory(consents={"email": "opted_in"})
    run = launch(two_channel_campaign())
    enrollments_dispatch()
    message = Message.objects.get(run=run, channel="email")
    consent_record(customer=bo, channel="email", status="opted_out", source="api")
    messages_send(message_ids=[message.pk])
    message.refresh_from_db()
    assert (message.status, message.skip_reason) == ("skipped", "no_consent")
    assert not SandboxMessage.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_redelivered_send_task_does_not_send_twice(sandbox, hold_sends):
    CustomerFactory(consents={"email": "opted_in"})
    run = launch(two_channel_campaign())
    enrollments_dispatch()
    message = Message.objects.get(run=run, channel="email")
    messages_send(message_ids=[message.pk])
    messages_send(message_ids=[message.pk])
    assert SandboxMessage.objects.filter(provider="sendgrid").count() == 1


@pytest.mark.django_db(transaction=True)
def test_invalid_number_fails_permanently_with_the_providers_reason(sandbox, hold_sends):
    CustomerFactory(phone="+15005550001", consents={"sms": "opted_in"})
    campaign = two_channel_campaign()
    campaign.steps.filter(channel="email").delete()
    campaign.steps.update(position=0)
    run = launch(campaign)
    enrollments_dispatch()
    message = Message.objects.get(run=run)
    messages_send(message_ids=[message.pk])
    message.refresh_from_db()
    assert message.status == "failed"
    assert "21211" in message.error and "not a valid phone number" in message.error
    assert Activity.objects.filter(message=message, kind="message.failed").exists()


@pytest.fixture
def message_after_outage(sandbox, settings, hold_sends) -> Message:
    """A queued email whose first send attempt found SendGrid unreachable."""
    settings.SENDGRID_API_HOST = "http://127.0.0.1:9"  # nothing listens there
    CustomerFactory(consents={"email": "opted_in"})
    run = launch(two_channel_campaign())
    enrollments_dispatch()
    message = Message.objects.get(run=run, channel="email")
    with pytest.raises(TransientSendError):
        messages_send(message_ids=[message.pk])
    message.refresh_from_db()
    return message


@pytest.mark.django_db(transaction=True)
def test_provider_outage_puts_the_message_back_in_the_queue_and_a_later_attempt_sends(
    message_after_outage, sandbox, settings
):
    message = message_after_outage
    assert message.status == "queued"
    assert "unreachable" in message.error
    settings.SENDGRID_API_HOST = f"{sandbox.url}/sandbox/sendgrid"  # the provider is back
    messages_send(message_ids=[message.pk])
    message.refresh_from_db()
    # Sent, and past it as the sandbox's events come back (delivered, maybe opened).
    assert message.sent_at is not None and message.rank >= Message.RANK["sent"]
    assert message.error == ""
    assert message.attempts == 2


@pytest.mark.django_db(transaction=True)
def test_provider_outage_fails_the_message_on_the_last_attempt(message_after_outage):
    message = message_after_outage
    messages_send(message_ids=[message.pk], final_attempt=True)
    message.refresh_from_db()
    assert message.status == "failed"
    assert "unreachable" in message.error
    assert message.attempts == 2


@pytest.mark.django_db(transaction=True)
def test_a_429_puts_the_message_back_and_the_retry_waits_for_the_providers_retry_after(sandbox, hold_sends):
    CustomerFactory(consents={"email": "opted_in"})
    run = launch(email_only_campaign())
    enrollments_dispatch()
    message = Message.objects.get(run=run, channel="email")
    sandbox_fault_set(provider="sendgrid", status=429, count=1, retry_after=7)
    try:
        with pytest.raises(TransientSendError) as raised:
            messages_send(message_ids=[message.pk])
    finally:
        sandbox_faults_clear()
    assert raised.value.retry_after == 7
    message.refresh_from_db()
    assert message.status == "queued"

    messages_send(message_ids=[message.pk])  # the retry, once the wait is over
    message.refresh_from_db()
    assert message.sent_at is not None and message.rank >= Message.RANK["sent"]
