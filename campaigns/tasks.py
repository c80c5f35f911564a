"""Thin tasks. ``tick`` runs every few seconds from beat: it finds due work and
enqueues it, never sending anything itself."""

from __future__ import annotations

from celery import shared_task

from campaigns import selectors, services
from config.celery import Queue

DEFAULT = Queue.DEFAULT.value


@shared_task(queue=DEFAULT)
def tick() -> None:
    for campaign_id in selectors.campaigns_due_for_launch():
        campaign_launch.delay(campaign_id)
    if selectors.enrollments_due_exist():
        enrollments_dispatch.delay()
    finished = selectors.campaigns_finished()
    if finished:
        campaigns_complete.delay(finished)


@shared_task(queue=DEFAULT, acks_late=True, reject_on_worker_lost=True)
def campaign_launch(campaign_id: int) -> None:
    services.campaign_launch(campaign_id=campaign_id)


@shared_task(queue=DEFAULT, acks_late=True, reject_on_worker_lost=True)
def enrollments_dispatch(max_batches: int = 20) -> None:
    # Bounded so one task never hogs a worker; the next tick picks up the rest.
    for _ in range(max_batches):
        if not services.enrollments_dispatch():
            break


@shared_task(queue=DEFAULT)
def campaigns_complete(campaign_ids: list[int]) -> None:
    services.campaigns_complete(campaign_ids=campaign_ids)
