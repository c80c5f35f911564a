"""Retrying failed deliveries by hand, from the "Failed deliveries" page."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from channels.models import Message
from customers.models import Activity

S = Message.Status
RETRYABLE = (S.FAILED, S.UNDELIVERED)
RETRY_CHUNK = 1000


def messages_retry(*, message_ids: Iterable[int], by: AbstractBaseUser) -> int:
    """Put the failed or undelivered messages among ``message_ids`` back in the queue; returns how many.

    Each is still the same ``Message`` row (one per step, run and customer), so a
    retry never adds a delivery: the message goes back to ``queued`` with a checked
    UPDATE, and only a message that is failed or undelivered at that moment moves.
    One retried twice at once, or sent again in between, is queued once and then
    claimed (queued -> sending) by exactly one send task. The send path re-checks
    consent, suppression and erasure as for any send. The last error stays until
    the next attempt overwrites it; the previous attempt's provider id and
    timestamps are cleared, so its late webhooks cannot touch the new attempt.
    Each retried message leaves a ``message.retried`` entry on the customer's
    timeline naming who retried it. Send tasks are enqueued after commit.
    """
    from channels import tasks

    ids = sorted(set(message_ids))
    queued: dict[str, list[int]] = defaultdict(list)
    activities = []
    now = timezone.now()
    with transaction.atomic():
        for start in range(0, len(ids), RETRY_CHUNK):
            chunk = ids[start : start + RETRY_CHUNK]
            # Locked first, so a concurrent retry waits here and then sees the new status.
            rows = list(
                Message.objects.select_for_update()
                .filter(pk__in=chunk, status__in=RETRYABLE)
                .values_list(
                    "pk", "channel", "customer_id", "customer__erased_at", "step__campaign_id", "status", "error"
                )
            )
            Message.objects.filter(pk__in=[row[0] for row in rows], status__in=RETRYABLE).update(
                status=S.QUEUED,
                rank=Message.RANK[S.QUEUED],
                provider_message_id=None,
                sent_at=None,
                delivered_at=None,
                failed_at=None,
                updated_at=now,
            )
            for pk, channel, customer_id, erased_at, campaign_id, status, error in rows:
                queued[channel].append(pk)
                if erased_at:
                    continue  # the send path will skip it; an erased customer's timeline stays empty
                activities.append(
                    Activity(
                        customer_id=customer_id,
                        kind=Activity.Kind.MESSAGE_RETRIED,
                        channel=channel,
                        campaign_id=campaign_id,
                        message_id=pk,
                        occurred_at=now,
                        properties={"by": by.get_username(), "was": status, "error": error[:500]},
                    )
                )
        Activity.objects.bulk_create(activities)
        if queued:
            transaction.on_commit(lambda: tasks.messages_enqueue(dict(queued)))
    return sum(len(pks) for pks in queued.values())
