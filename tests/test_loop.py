"""The whole loop with a real Celery worker and beat in a subprocess.

customer -> segment -> campaign -> beat tick -> dispatch -> SendGrid/Twilio SDKs
-> sandbox -> signed webhooks -> message status and the customer's timeline.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import django.apps
import pytest
from django.conf import settings
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from campaigns.models import Campaign
from campaigns.periodic import periodic_tasks_ensure
from campaigns.services import campaign_schedule
from channels.models import Message, SandboxMessage
from config.celery import app as celery_app
from customers.models import Activity
from tests.factories import CustomerFactory, UserFactory, two_channel_campaign

ROOT = Path(__file__).resolve().parent.parent


def database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def worker(sandbox, tmp_path):
    """``celery worker -B`` on every queue, against this test's database and server."""
    celery_app.control.purge()
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("SENDGRID_", "TWILIO_", "CHORUS_"))}
    env = {
        **keep,
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CHORUS_DATA_DIR": str(settings.DATA_DIR),
        "CHORUS_PUBLIC_URL": sandbox.url,
        "CHORUS_SANDBOX_EVENT_DELAY": "0",
    }
    log = (tmp_path / "worker.log").open("w")
    command = [
        sys.executable, "-m", "celery", "-A", "config", "worker", "-B",
        "-Q", "default,email,sms,social", "--concurrency", "2", "--loglevel", "INFO",
        "-s", str(tmp_path / "beat-schedule"),
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield process
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()
    if connection.vendor == "postgresql":
        # A killed worker child can leave its session behind; the test DB must drop.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


def wait_for(condition, *, timeout: float, what: str, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    pytest.fail(f"Timed out after {timeout:.0f}s waiting for {what}.\nWorker log:\n{log.read_text()[-5000:]}")


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

    wait_for(all_delivered, timeout=120, what=f"{expected_delivered} delivered messages", log=tmp_path / "worker.log")
    wait_for(
        lambda: Campaign.objects.get(pk=campaign.pk).state == "completed",
        timeout=30,
        what="the campaign to complete",
        log=tmp_path / "worker.log",
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
