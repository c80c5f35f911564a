"""Thin Celery tasks for the customer record: take ids, call one service."""

from __future__ import annotations

from celery import shared_task

from config.celery import Queue


@shared_task(acks_late=True, reject_on_worker_lost=True, queue=Queue.DEFAULT.value)
def import_run(job_id: int) -> None:
    """Run a queued CSV import (``customers.imports.import_run``).

    Never retried: a redelivered task (the worker died mid-import) finds the job
    running and marks it failed with how far it got, rather than importing twice.
    """
    from customers.imports import import_run as run

    run(job_id=job_id)


@shared_task(acks_late=True, reject_on_worker_lost=True, queue=Queue.DEFAULT.value)
def personas_recompute() -> None:
    """Recompute every customer's persona (enqueued by customers.services.personas): one UPDATE, safe to run twice."""
    from customers.services.personas import personas_assign

    personas_assign()
