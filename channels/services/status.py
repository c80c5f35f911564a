"""A message's status only moves forward (by rank); timestamps keep the earliest time seen."""

from __future__ import annotations

import json
from datetime import datetime

from django.db import connection
from django.db.models import Case, F, Value, When
from django.db.models.functions import Greatest
from django.utils import timezone

from channels.models import Message

S = Message.Status

# The column keeping the (earliest) time a message reached each status.
TIMESTAMP = {
    S.SENT: "sent_at",
    S.DELIVERED: "delivered_at",
    S.OPENED: "opened_at",
    S.CLICKED: "clicked_at",
    S.FAILED: "failed_at",
    S.BOUNCED: "failed_at",
    S.UNDELIVERED: "failed_at",
}
_TIMESTAMP_COLUMNS = ("sent_at", "delivered_at", "opened_at", "clicked_at", "failed_at")
_CHUNK = 5_000


def _advance_fields(status: str, times: dict[str, datetime]) -> dict:
    rank = Message.RANK[status]
    fields = {
        "status": Case(When(rank__lt=rank, then=Value(status)), default=F("status")),
        "rank": Greatest(F("rank"), Value(rank)),
        "updated_at": Value(timezone.now()),
    }
    for column, at in times.items():
        fields[column] = Case(
            When(**{f"{column}__isnull": True}, then=Value(at)),
            When(**{f"{column}__gt": at}, then=Value(at)),
            default=F(column),
        )
    return fields


def advance(status: str, at: datetime) -> dict:
    """UPDATE expressions that move a message to ``status`` unless it is already past it.

    Timestamps keep the earliest time seen, so events applied in any order and
    any number of times leave the same row.
    """
    column = TIMESTAMP.get(status)
    return _advance_fields(status, {column: at} if column else {})


def message_advance(*, message: Message, status: str, at: datetime) -> None:
    """Record that ``message`` reached ``status`` at ``at``; never moves backwards. Skipped is final."""
    Message.objects.filter(pk=message.pk).exclude(status=S.SKIPPED).update(**advance(status, at))


def messages_advance(*, reached: dict[int, list[tuple[str, datetime]]]) -> int:
    """Record many (status, time) events for many messages at once; returns messages updated.

    The end state is the one ``message_advance`` leaves when called once per
    event, in any order: the highest-ranked status wins (between equal ranks the
    earliest event, as in arrival order), each timestamp keeps the earliest time,
    skipped messages are left alone. On PostgreSQL the batch is one rank-guarded
    ``UPDATE ... FROM jsonb_to_recordset(...)`` per 5,000 messages, in id order, so concurrent
    batches lock rows in the same order; elsewhere one UPDATE per message.
    """
    rows = []
    for pk, events in sorted(reached.items()):
        status = min(events, key=lambda event: (-Message.RANK[event[0]], event[1], event[0]))[0]
        times: dict[str, datetime] = {}
        for event_status, at in events:
            if column := TIMESTAMP.get(event_status):
                times[column] = min(times.get(column, at), at)
        rows.append((pk, status, times))
    if connection.vendor != "postgresql":
        return sum(
            Message.objects.filter(pk=pk).exclude(status=S.SKIPPED).update(**_advance_fields(status, times))
            for pk, status, times in rows
        )
    return sum(_messages_advance_postgresql(rows[start : start + _CHUNK]) for start in range(0, len(rows), _CHUNK))


def _messages_advance_postgresql(rows: list[tuple[int, str, dict[str, datetime]]]) -> int:
    # The rows travel as one JSON document (times as Unix seconds). LEAST/GREATEST
    # ignore NULLs on PostgreSQL: a column the batch has no time for keeps its value.
    document = json.dumps(
        [
            {"id": pk, "s": status, "r": Message.RANK[status]} | {c: at.timestamp() for c, at in times.items()}
            for pk, status, times in rows
        ]
    )
    times = ", ".join(f"{c} = LEAST(m.{c}, to_timestamp(v.{c}))" for c in _TIMESTAMP_COLUMNS)
    columns = ", ".join(f"{c} float8" for c in _TIMESTAMP_COLUMNS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Message._meta.db_table} AS m "  # noqa: S608 - names from the model, values bound
            "SET status = CASE WHEN m.rank < v.r THEN v.s ELSE m.status END, "
            f"rank = GREATEST(m.rank, v.r), {times}, updated_at = %s "
            f"FROM jsonb_to_recordset(%s::jsonb) AS v(id bigint, s text, r smallint, {columns}) "
            "WHERE m.id = v.id AND m.status <> %s",
            [timezone.now(), document, S.SKIPPED.value],
        )
        return cursor.rowcount
