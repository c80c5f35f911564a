"""Per-sender rate limits: the two limiters, the throttled send, and two real workers sharing a limit."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
import uuid

import pytest
from django.conf import settings
from django.db import connection

from benchmarks.sms import max_in_any_second
from campaigns.services import enrollments_dispatch
from channels import ratelimit
from channels.adapters.base import Outbound
from channels.adapters.sendgrid import SendGridAdapter
from channels.adapters.twilio import TwilioSmsAdapter
from channels.models import Message, RateLimitSlot, SandboxMessage, SenderRateLimit
from channels.ratelimit import DatabaseRateLimiter, RedisRateLimiter, limits, send_throttled
from channels.sandbox import sandbox_fault_set, sandbox_faults_clear
from config.celery import app as celery_app
from tests.factories import CustomerFactory, launch, two_channel_campaign
from tests.test_settings_env import ROOT, load_settings
from tests.workers import celery_worker, wait_for

SMS_SENDER = "+15005550006"
needs_redis = pytest.mark.skipif(not settings.CHORUS_REDIS_URL, reason="no Redis configured (CHORUS_REDIS_URL)")


@pytest.fixture(autouse=True)
def _fresh_limits(monkeypatch):
    """Each test reads the limits its own rows define, not what an earlier test cached."""
    monkeypatch.setattr(limits, "loaded_at", -math.inf)


@pytest.fixture(params=["database", pytest.param("redis", marks=needs_redis)])
def limiter(request):
    """Each limiter on its own key; Redis keys are removed afterwards.

    Tests using it are transactional: the database limiter commits, from several threads.
    """
    if request.param == "redis":
        limiter = RedisRateLimiter(settings.CHORUS_REDIS_URL)
        key = f"test:{uuid.uuid4().hex}"
        yield limiter, key
        limiter.client.delete(*(limiter.prefix + k for k in (key, f"{key}:other")))
    else:
        yield DatabaseRateLimiter(), f"test:{uuid.uuid4().hex}"


def slot_count(limiter, key: str) -> int:
    if isinstance(limiter, RedisRateLimiter):
        return limiter.client.zcard(limiter.prefix + key)
    return RateLimitSlot.objects.filter(key__startswith=f"{key}#").count()


@pytest.mark.django_db(transaction=True)
def test_a_new_sender_gets_its_slots_and_sends_at_once(limiter):
    limiter, key = limiter
    first = limiter.reserve(key, 3)
    assert first.wait == 0
    assert slot_count(limiter, key) == 3


@pytest.mark.django_db(transaction=True)
def test_a_slot_is_free_again_a_second_after_its_send_finished(limiter):
    limiter, key = limiter
    a, b = limiter.reserve(key, 2), limiter.reserve(key, 2)
    assert (a.wait, b.wait) == (0, 0)
    assert set(a.slots).isdisjoint(b.slots)
    assert limiter.reserve(key, 2) is None  # both slots are in flight
    limiter.release(key, a)
    again = limiter.reserve(key, 2)
    assert again.slots == a.slots
    assert 0.5 < again.wait <= 1.0


@pytest.mark.django_db(transaction=True)
def test_several_messages_take_as_many_slots(limiter):
    limiter, key = limiter
    three = limiter.reserve(key, 5, 3)
    assert len(set(three.slots)) == 3 and three.wait == 0
    assert limiter.reserve(key, 5, 3) is None  # two slots left
    two = limiter.reserve(key, 5, 2)
    assert set(two.slots).isdisjoint(three.slots)
    limiter.release(key, three)
    limiter.release(key, two)
    assert limiter.reserve(key, 5, 5).wait > 0.5


@pytest.mark.django_db(transaction=True)
def test_senders_do_not_share_slots(limiter):
    limiter, key = limiter
    assert limiter.reserve(key, 1) is not None
    assert limiter.reserve(key, 1) is None
    assert limiter.reserve(f"{key}:other", 1).wait == 0


@pytest.mark.django_db(transaction=True)
def test_a_lowered_limit_keeps_the_slots_used_last(limiter):
    limiter, key = limiter
    old = limiter.reserve(key, 4, 2)
    limiter.release(key, old)
    # The new limit: two slots, the two just used, so the next message waits for them.
    assert limiter.reserve(key, 2).wait > 0.5
    assert slot_count(limiter, key) == 2


@pytest.mark.django_db(transaction=True)
def test_a_release_frees_only_slots_its_own_send_still_holds(limiter):
    limiter, key = limiter
    taken = limiter.reserve(key, 1)
    # A send whose hold ran out, and whose slot was taken since, reports back late.
    limiter.release(key, ratelimit.Reservation(wait=0, slots=taken.slots, held_until=taken.held_until - 60))
    assert limiter.reserve(key, 1) is None  # still held by ``taken``


@pytest.mark.django_db(transaction=True)
def test_concurrent_senders_never_exceed_the_limit_in_any_second(limiter):
    limiter, key = limiter
    sent: list[float] = []
    lock = threading.Lock()

    def sender():
        try:
            for _ in range(15):
                with limiter.slots(key, 20), lock:
                    sent.append(time.time())
        finally:
            connection.close()  # this thread's own connection: the test database must drop

    workers = [threading.Thread(target=sender) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(sent) == 60
    assert max_in_any_second(sent) <= 20


@pytest.mark.django_db(transaction=True)
def test_more_messages_at_once_than_the_limit_is_refused(limiter):
    limiter, key = limiter
    with (
        pytest.raises(ValueError, match="Cannot send 3 messages at once under a limit of 2 per second"),
        limiter.slots(key, 2, 3),
    ):
        pass


class RecordingLimiter(DatabaseRateLimiter):
    """The database limiter, noting every reservation's size (and calling ``hook`` on each)."""

    def __init__(self, hook=None):
        self.sizes: list[int] = []
        self.hook = hook

    def reserve(self, key, per_second, n=1):
        self.sizes.append(n)
        if self.hook:
            self.hook(len(self.sizes))
        return super().reserve(key, per_second, n)


def sms(message_id: int, sender: str = SMS_SENDER) -> Outbound:
    return Outbound(message_id=message_id, to=f"+486001{message_id:05d}", sender=sender, body=f"Hello {message_id}")


@pytest.mark.django_db(transaction=True)
def test_an_unlimited_sender_is_not_throttled(sandbox, monkeypatch):
    recording = RecordingLimiter()
    monkeypatch.setattr(ratelimit, "limiter", lambda: recording)
    SenderRateLimit.objects.create(channel="sms", sender="+15005550007", per_second=1)  # another sender
    results = send_throttled(TwilioSmsAdapter(), [sms(i) for i in range(1, 6)])
    assert [r.ok for r in results] == [True] * 5
    assert recording.sizes == []
    assert SandboxMessage.objects.count() == 5


@pytest.mark.django_db(transaction=True)
def test_a_limited_sms_sender_takes_one_slot_per_message_and_results_keep_their_order(sandbox, monkeypatch):
    recording = RecordingLimiter()
    monkeypatch.setattr(ratelimit, "limiter", lambda: recording)
    SenderRateLimit.objects.create(channel="sms", sender=SMS_SENDER, per_second=50)
    batch = [sms(1), sms(2, sender="+15005550007"), sms(3), sms(4, sender="")]  # "" falls back to TWILIO_FROM_NUMBER
    results = send_throttled(TwilioSmsAdapter(), batch)
    assert [r.message_id for r in results] == [1, 2, 3, 4]
    assert all(r.ok for r in results)
    assert recording.sizes == [1, 1, 1]  # messages 1, 3 and 4; +15005550007 is unlimited
    assert settings.TWILIO_FROM_NUMBER == SMS_SENDER


@pytest.mark.django_db(transaction=True)
def test_email_to_a_limited_sender_goes_in_chunks_of_at_most_the_limit(sandbox, monkeypatch):
    recording = RecordingLimiter()
    monkeypatch.setattr(ratelimit, "limiter", lambda: recording)
    SenderRateLimit.objects.create(channel="email", sender="hello@northwind.example", per_second=2)
    batch = [
        Outbound(message_id=i, to=f"c{i}@example.com", sender="hello@northwind.example", subject="Hi", body="Sale")
        for i in range(1, 6)
    ]
    results = send_throttled(SendGridAdapter(), batch)
    assert all(r.ok for r in results)
    assert recording.sizes == [2, 2, 1]
    assert SandboxMessage.objects.filter(provider="sendgrid").count() == 5


@pytest.mark.django_db(transaction=True)
def test_a_provider_failure_mid_batch_reports_the_rest_and_keeps_what_was_sent(sandbox, monkeypatch):
    monkeypatch.setattr(ratelimit, "limiter", lambda: RecordingLimiter())
    SenderRateLimit.objects.create(channel="sms", sender=SMS_SENDER, per_second=50)
    sandbox_fault_set(provider="twilio", status=503, after=2)
    try:
        results = send_throttled(TwilioSmsAdapter(), [sms(i) for i in range(1, 5)])
    finally:
        sandbox_faults_clear()
    assert [r.ok for r in results] == [True, True, False, False]
    assert not results[2].error.permanent
    assert SandboxMessage.objects.count() == 2


@pytest.mark.django_db
def test_a_limit_changed_in_the_database_applies_once_the_cache_expires(settings, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(ratelimit, "monotonic", lambda: clock[0])
    settings.CHORUS_RATE_LIMIT_CACHE_SECONDS = 5
    assert limits.get("sms", SMS_SENDER) is None
    row = SenderRateLimit.objects.create(channel="sms", sender=SMS_SENDER, per_second=20)
    clock[0] += 4
    assert limits.get("sms", SMS_SENDER) is None  # still the cached table
    clock[0] += 1
    assert limits.get("sms", SMS_SENDER) == 20
    SenderRateLimit.objects.filter(pk=row.pk).update(per_second=5)
    clock[0] += 5
    assert limits.get("sms", SMS_SENDER) == 5


def sms_campaign():
    campaign = two_channel_campaign()
    campaign.steps.filter(channel="email").delete()
    return campaign


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["database", pytest.param("redis", marks=needs_redis)])
def test_two_workers_sharing_a_20_per_second_limit_never_send_more_than_20_in_any_second(
    kind, sandbox, settings, tmp_path
):
    celery_app.control.purge()
    SenderRateLimit.objects.create(channel="sms", sender=SMS_SENDER, per_second=20)
    CustomerFactory.create_batch(160, consents={"sms": "opted_in"})
    run = launch(sms_campaign())
    settings.CHORUS_SEND_BATCH = {**settings.CHORUS_SEND_BATCH, "sms": 10}  # 16 send tasks for the two workers
    env = {"CHORUS_RATE_LIMITER": kind, "CHORUS_REDIS_URL": settings.CHORUS_REDIS_URL}
    logs = [tmp_path / "sms-1.log", tmp_path / "sms-2.log"]
    with (
        celery_worker(sandbox=sandbox, log=logs[0], queues="sms", concurrency=1, env=env),
        celery_worker(sandbox=sandbox, log=logs[1], queues="sms", concurrency=1, env=env),
    ):
        wait_for(lambda: all("ready." in log.read_text() for log in logs), timeout=60, what="workers", logs=logs)
        while enrollments_dispatch():
            pass
        wait_for(
            lambda: Message.objects.filter(run=run, status__in=["sent", "delivered"]).count() == 160,
            timeout=120,
            what="160 sent messages",
            logs=logs,
        )
    received = [m.created_at.timestamp() for m in SandboxMessage.objects.filter(provider="twilio")]
    assert len(received) == 160  # each message once
    assert max_in_any_second(received) <= 20
    for log in logs:  # both workers sent
        assert "channels.tasks.messages_send[" in log.read_text() and " succeeded in " in log.read_text()


def test_the_window_count_sees_a_burst():
    assert max_in_any_second([0.0, 0.5, 0.99, 1.0, 1.5]) == 3
    assert max_in_any_second([0.0, 1.0, 2.0]) == 1
    assert max_in_any_second([]) == 0


def settings_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("CHORUS_", "CELERY_", "DATABASE_URL"))}


@pytest.mark.parametrize(
    ("env", "chosen"),
    [
        ({}, "database "),
        ({"CELERY_BROKER_URL": "redis://127.0.0.1:6379/12"}, "redis redis://127.0.0.1:6379/12"),
        ({"CHORUS_REDIS_URL": "redis://127.0.0.1:6379/12"}, "redis redis://127.0.0.1:6379/12"),
        (
            {"CELERY_BROKER_URL": "redis://127.0.0.1:6379/12", "CHORUS_RATE_LIMITER": "database"},
            "database redis://127.0.0.1:6379/12",
        ),
    ],
)
def test_the_limiter_is_redis_when_there_is_redis_else_the_database(env, chosen, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings as s; "
         "print(s.CHORUS_RATE_LIMITER, s.CHORUS_REDIS_URL)"],
        cwd=ROOT,
        env={**settings_environment(), "CHORUS_DATA_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert result.stdout.strip() == chosen.strip(), result.stderr


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"CHORUS_RATE_LIMITER": "memcached"}, "CHORUS_RATE_LIMITER must be 'redis' or 'database', got 'memcached'"),
        ({"CHORUS_RATE_LIMITER": "redis"}, "CHORUS_RATE_LIMITER=redis needs CHORUS_REDIS_URL"),
        ({"CHORUS_REDIS_URL": "127.0.0.1:6379"}, "CHORUS_REDIS_URL must be a URL starting with redis://"),
    ],
)
def test_a_bad_limiter_setting_stops_start_up_naming_it(env, problem, tmp_path):
    result = load_settings(CHORUS_DATA_DIR=str(tmp_path), **env)
    assert result.returncode != 0
    assert problem in result.stderr
