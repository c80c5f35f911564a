"""Thin Celery task for recomputing personas in bulk (enqueued by customers.services.personas)."""

from __future__ import annotations

from celery import shared_task

from config.celery import Queue


@shared_task(acks_late=True, reject_on_worker_lost=True, queue=Queue.DEFAULT.value)
def personas_recompute() -> None:
    """Recompute every customer's persona: one UPDATE, safe to run twice."""
    from customers.services.personas import personas_assign

    personas_assign()
