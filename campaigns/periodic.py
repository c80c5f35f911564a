"""The beat schedule, created idempotently (data migration and ``chorus_setup``)."""

from __future__ import annotations

from django.utils import timezone

TICK_NAME = "chorus: tick (find due work)"
TICK_TASK = "campaigns.tasks.tick"


def periodic_tasks_ensure(apps, every_seconds: int) -> None:
    """Create or update the tick; works with historical models (``apps``)."""
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")

    schedule, _ = IntervalSchedule.objects.get_or_create(every=every_seconds, period="seconds")
    PeriodicTask.objects.update_or_create(
        name=TICK_NAME,
        defaults={"task": TICK_TASK, "interval": schedule, "enabled": True, "queue": "default"},
    )
    # Tell a running beat to reload its schedule.
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})
