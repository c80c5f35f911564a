"""The whole loop with a real Celery worker and beat in a subprocess.

customer -> segment -> campaign -> beat tick -> dispatch -> SendGrid/Twilio SDKs
-> sandbox -> signed webhooks -> message status and the customer's timeline.
"""

from __future__ import annotations

import django.apps
import pytest
from django.urls import reverse
from django.utils import timezone

from campaigns.models import Campaign
from campaigns.periodic import periodic_tasks_ensure
from campaigns.services import campaign_schedule
from channels.models import Message, SandboxMessage
from config.celery import app as celery_app
from customers.models import Activity
from tests.factories import CustomerFactory, UserFactory, two_channel_campaign
from tests.workers import celery_worker, wait_for


@pytest.fixture
def worker(sandbox, tmp_path):
    """``celery worker -B`` on every queue, against this test's database and server."""
    celery_app.control.purge()
    with celery_worker(
        sandbox=sandbox, log=tmp_path / "worker.log", beat_schedule=tmp_path / "beat-schedule"
    ) as process:
        yield process


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_scheduled_two_channel_campaign_is_delivered_once_per_step_to_consenting_customers(
    roles, sandbox, worker, tmp_path, client
):
    both = CustomerFactory.create_batch(4, consents={"email": "opted_in", "sms": "opted_in"})
    email_only = CustomerFactory(consents={"email": "opted_in", "sms": "opted_out"})
    no_consent = CustomerFactory()
    CustomerFactory(country="DE", consents={"email": "opted_in", "sms": "opted_in"})  # outside the segment
    campaign = two_channel_campaign(state=Campaign.State.APPROVED)
    periodic_tasks_ensure(django.apps.apps, every_seconds=1)
    campaign_schedule(campaign=campaign, at=timezone.now())

    expected_delivered = 2 * len(both) + 1

    def all_delivered() -> bool:
        return Message.objects.filter(run__campaign=campaign, status="delivered").count() >= expected_delivered

    wait_for(
        all_delivered, timeout=120, what=f"{expected_delivered} delivered messages", logs=[tmp_path / "worker.log"]
    )
    wait_for(
        lambda: Campaign.objects.get(pk=campaign.pk).state == "completed",
        timeout=30,
        what="the campaign to complete",
        logs=[tmp_path / "worker.log"],
    )

    messages = Message.objects.filter(run__campaign=campaign)
    for customer in both:
        assert sorted(messages.filter(customer=customer).values_list("channel", "status")) == [
            ("email", "delivered"),
            ("sms", "delivered"),
        ]
    assert sorted(messages.filter(customer=email_only).values_list("channel", "status")) == [
        ("email", "delivered"),
        ("sms", "skipped"),
    ]
    assert set(messages.filter(customer=no_consent).values_list("status", flat=True)) == {"skipped"}
    # One provider call per delivered message; nothing reached anyone without consent.
    assert SandboxMessage.objects.count() == expected_delivered
    assert not SandboxMessage.objects.filter(to_address__in=[no_consent.email, no_consent.phone, email_only.phone])
    assert Activity.objects.filter(customer=both[0], kind="message.delivered").count() == 2

    client.force_login(UserFactory(role="Analyst"))
    page = client.get(reverse("customers:detail", args=[both[0].pk]))
    assert page.status_code == 200
    assert page.content.decode().count("message.delivered") >= 2
    assert campaign.name in page.content.decode()
