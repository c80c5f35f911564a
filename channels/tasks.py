"""Thin tasks: take ids, call one service."""

from __future__ import annotations

import requests
from celery import shared_task
from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings
from django.db import OperationalError

from channels import sandbox, services
from channels.services import events, social
from config.celery import Queue

QUEUE_FOR_CHANNEL = {
    "email": Queue.EMAIL,
    "sms": Queue.SMS,
    "whatsapp": Queue.SMS,
    "social": Queue.SOCIAL,
    "mastodon": Queue.SOCIAL,
    "bluesky": Queue.SOCIAL,
}


def messages_enqueue(queued: dict[str, list[int]]) -> None:
    """One send task per batch of message ids (``CHORUS_SEND_BATCH`` per channel), on the channel's own queue."""
    for channel, ids in queued.items():
        size = settings.CHORUS_SEND_BATCH[channel]
        for start in range(0, len(ids), size):
            messages_send.apply_async(args=[ids[start : start + size]], queue=QUEUE_FOR_CHANNEL[channel].value)


SEND_BACKOFF = 5  # seconds before the first retry, doubling each time, with jitter
SEND_BACKOFF_MAX = 300
# A provider's Retry-After is honoured up to this; a longer ETA would outlive the broker's visibility timeout.
SEND_RETRY_AFTER_MAX = 900


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=6)
def messages_send(self, message_ids: list[int]) -> None:
    """Send a batch; transient errors retry with exponential backoff and jitter, never sooner than Retry-After."""
    try:
        services.messages_send(message_ids=message_ids, final_attempt=self.request.retries >= self.max_retries)
    except services.TransientSendError as exc:
        backoff = get_exponential_backoff_interval(
            SEND_BACKOFF, self.request.retries, SEND_BACKOFF_MAX, full_jitter=True
        )
        wait = min(max(backoff, exc.retry_after or 0), SEND_RETRY_AFTER_MAX)
        raise self.retry(exc=exc, countdown=wait) from exc


@shared_task(acks_late=True, reject_on_worker_lost=True, queue=Queue.DEFAULT.value)
def provider_event_process(event_id: int) -> None:
    services.provider_event_process(event_id=event_id)


# A deadlock or a lost connection rolls the whole delivery back, so running it again is safe.
@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError,),
    retry_backoff=1,
    max_retries=5,
    queue=Queue.DEFAULT.value,
)
def webhook_delivery_process(delivery_id: int) -> None:
    events.webhook_delivery_process(delivery_id=delivery_id)


@shared_task(autoretry_for=(requests.RequestException,), retry_backoff=2, max_retries=8, queue=Queue.DEFAULT.value)
def sandbox_emit_events(sandbox_message_ids: list[int]) -> None:
    sandbox.sandbox_events_emit(sandbox_message_ids=sandbox_message_ids)


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=6, queue=Queue.SOCIAL.value)
def social_post_publish(self, post_id: int) -> None:
    """Publish a social step's post once; transient errors retry like sends, never sooner than Retry-After."""
    try:
        social.social_post_publish(post_id=post_id, final_attempt=self.request.retries >= self.max_retries)
    except services.TransientSendError as exc:
        backoff = get_exponential_backoff_interval(
            SEND_BACKOFF, self.request.retries, SEND_BACKOFF_MAX, full_jitter=True
        )
        raise self.retry(exc=exc, countdown=min(max(backoff, exc.retry_after or 0), SEND_RETRY_AFTER_MAX)) from exc


@shared_task(queue=Queue.SOCIAL.value)
def social_engagement_poll() -> None:
    social.social_engagement_poll()
