"""The Celery app. Queues are named once, in ``Queue``; tasks route by name."""

from __future__ import annotations

import os
from enum import StrEnum

from celery import Celery
from kombu import Queue as KombuQueue

from config import broker

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
broker.register()


class Queue(StrEnum):
    DEFAULT = "default"
    EMAIL = "email"
    SMS = "sms"
    SOCIAL = "social"


app = Celery("chorus")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_default_queue=Queue.DEFAULT.value,
    task_queues=[KombuQueue(q.value) for q in Queue],
    # One unacked task at a time per process: with acks_late a crashed worker's
    # task goes back to the queue instead of being lost.
    worker_prefetch_multiplier=1,
    beat_scheduler="django_celery_beat.schedulers:DatabaseScheduler",
    timezone="UTC",
    broker_connection_retry_on_startup=True,
)
app.autodiscover_tasks()
