"""The beat schedule, created idempotently (data migration and ``chorus_setup``)."""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone

TICK_NAME = "chorus: tick (find due work)"
TICK_TASK = "campaigns.tasks.tick"
SOCIAL_POLL_NAME = "chorus: social engagement poll"
SOCIAL_POLL_TASK = "channels.tasks.social_engagement_poll"


def periodic_tasks_ensure(apps, every_seconds: int, social_poll_seconds: int | None = None) -> None:
    """Create or update the tick and the social engagement poll (every ``CHORUS_SOCIAL_POLL_SECONDS``
    unless given); works with historical models (``apps``)."""
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")

    schedule, _ = IntervalSchedule.objects.get_or_create(every=every_seconds, period="seconds")
    PeriodicTask.objects.update_or_create(
        name=TICK_NAME,
        defaults={"task": TICK_TASK, "interval": schedule, "enabled": True, "queue": "default"},
    )
    poll, _ = IntervalSchedule.objects.get_or_create(
        every=social_poll_seconds or settings.CHORUS_SOCIAL_POLL_SECONDS, period="seconds"
    )
    PeriodicTask.objects.update_or_create(
        name=SOCIAL_POLL_NAME,
        defaults={"task": SOCIAL_POLL_TASK, "interval": poll, "enabled": True, "queue": "social"},
    )
    # Tell a running beat to reload its schedule.
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})
