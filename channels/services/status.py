"""A message's status only moves forward (by rank); timestamps keep the earliest time seen."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Case, F, Value, When
from django.db.models.functions import Greatest
from django.utils import timezone

from channels.models import Message

S = Message.Status

_TIMESTAMP = {
    S.SENT: "sent_at",
    S.DELIVERED: "delivered_at",
    S.OPENED: "opened_at",
    S.CLICKED: "clicked_at",
    S.FAILED: "failed_at",
    S.BOUNCED: "failed_at",
    S.UNDELIVERED: "failed_at",
}


def advance(status: str, at: datetime) -> dict:
    """UPDATE expressions that move a message to ``status`` unless it is already past it.

    Timestamps keep the earliest time seen, so events applied in any order and
    any number of times leave the same row.
    """
    rank = Message.RANK[status]
    fields = {
        "status": Case(When(rank__lt=rank, then=Value(status)), default=F("status")),
        "rank": Greatest(F("rank"), Value(rank)),
        "updated_at": Value(timezone.now()),
    }
    if ts := _TIMESTAMP.get(status):
        fields[ts] = Case(
            When(**{f"{ts}__isnull": True}, then=Value(at)), When(**{f"{ts}__gt": at}, then=Value(at)), default=F(ts)
        )
    return fields


def message_advance(*, message: Message, status: str, at: datetime) -> None:
    """Record that ``message`` reached ``status`` at ``at``; never moves backwards. Skipped is final."""
    Message.objects.filter(pk=message.pk).exclude(status=S.SKIPPED).update(**advance(status, at))
