"""A stored SendGrid delivery applied in one PostgreSQL statement (the webhook hot path).

``sendgrid_delivery_apply`` leaves exactly what ``provider_events_record``
leaves for the same events (``tests/test_sendgrid_delivery.py`` holds the two
side by side), without Python touching each event: PostgreSQL splits the
stored request body, keys each event (``providers.sendgrid_dedupe_key``),
stores the new ones in ``ProviderEvent`` and applies them (status, timeline,
last engaged, failure reason, suppression) in one statement; consent changes,
a handful per batch, go through ``consents_record``. At thousands of events
per request, parsing and building rows in Python cost more than the writes.

What the events mean is not repeated here: the event table
(``providers.SENDGRID_EVENTS``), ranks, timestamp columns, detail fields and
sender-side bounce classes are passed in from their Python definitions. The
SQL reads each field as ``providers.parse_sendgrid_event`` does: ``json_text``
(a falsy value is "") is ``_text`` below, ``_epoch`` is the ``at`` expression.
Where the two could still part is in values no provider sends: a number written
with an exponent (jsonb keeps ``1e2`` as ``100``, Python as ``100.0``) or an
address padded with non-ASCII spaces.
"""

from __future__ import annotations

import json
from datetime import datetime

from django.db import DataError, connection, transaction
from django.utils import timezone

from campaigns.models import Step
from channels.models import Message, ProviderEvent, Suppression, WebhookDelivery
from channels.providers import (
    EPOCH_RANGE,
    NO_MATCH,
    NO_MESSAGE_NAMED,
    SENDER_SIDE_BOUNCES,
    SENDGRID_DETAILS,
    SENDGRID_EVENTS,
    SENDGRID_FALLBACK_KEY_PARTS,
)
from channels.services.status import TIMESTAMP
from customers.models import Activity, Channel, Consent, Customer
from customers.services.activities import counts_as_engagement
from customers.services.consent import ConsentChange, consents_record

_WHITESPACE = r"E' \t\n\r\f\x0b'"  # Python's ASCII whitespace


def _truthy(value: str) -> str:
    """SQL: whether the jsonb ``value`` is truthy in Python (present, and not null, false, 0, "", [] or {})."""
    return (
        f"""CASE jsonb_typeof({value}) WHEN 'string' THEN {value} <> '""' WHEN 'number' THEN {value} <> '0' """
        f"WHEN 'boolean' THEN {value} = 'true' WHEN 'array' THEN {value} <> '[]' "
        f"WHEN 'object' THEN {value} <> '{{}}' ELSE false END"
    )


def _text(value: str) -> str:
    """SQL: ``providers.json_text`` of the jsonb ``value``."""
    return f"CASE WHEN {_truthy(value)} THEN {value} #>> '{{}}' ELSE '' END"


def _meanings() -> str:
    """The event table as one JSON document: name, status, rank, activity, consent, timestamp column."""
    return json.dumps(
        [
            {
                "name": name,
                "status": status,
                "rank": Message.RANK[status] if status else None,
                "activity": activity,
                "consent": consent,
                "moment": TIMESTAMP.get(status),
                "failure": status in (Message.Status.BOUNCED, Message.Status.FAILED),
            }
            for name, (status, activity, consent) in SENDGRID_EVENTS.items()
        ]
    )


_HAS_EVENT_ID = _truthy("j.payload -> 'sg_event_id'")
# An element that is not an object gets a key of its own, so deduplication cannot hide it (see not_objects).
_KEY = (
    "CASE WHEN jsonb_typeof(j.payload) <> 'object' THEN 'not an object: ' || j.position "
    f"WHEN {_HAS_EVENT_ID} THEN j.payload ->> 'sg_event_id' "
    "ELSE 'sha256:' || encode(sha256(convert_to(jsonb_build_array("
    + ", ".join(_text(f"j.payload -> '{part}'") for part in SENDGRID_FALLBACK_KEY_PARTS)
    + ")::text, 'UTF8')), 'hex') END"
)
_SECONDS = (
    "CASE jsonb_typeof(e.payload -> 'timestamp') "
    "WHEN 'number' THEN trunc((e.payload ->> 'timestamp')::numeric) "
    "WHEN 'string' THEN CASE WHEN e.payload ->> 'timestamp' ~ '^[ \\t\\n\\r\\f\\v]*[-+]?[0-9]+[ \\t\\n\\r\\f\\v]*$' "
    f"THEN btrim(e.payload ->> 'timestamp', {_WHITESPACE})::numeric END END"
)
_COLUMNS = sorted(set(TIMESTAMP.values()))
# The event's details as the timeline keeps them (each one present, null or not), and "hard" for a bounce.
_DETAILS = " || ".join(
    [
        f"CASE WHEN payload ? '{key}' THEN jsonb_build_object('{key}', payload -> '{key}') ELSE '{{}}' END"
        for key in SENDGRID_DETAILS
    ]
    + ["CASE WHEN name = 'bounce' THEN jsonb_build_object('hard', hard) ELSE '{}' END"]
)
_REASON = _text("event.payload -> 'reason'")
_ENGAGED = f"last_engaged_{Channel.EMAIL.value}_at"
_M, _A, _C, _S = (model._meta.db_table for model in (Message, Activity, Customer, Suppression))

# Names come from the models and constants above; every value is a parameter.
SQL = f"""
WITH event AS MATERIALIZED (
    -- Each event once: its first occurrence in the request.
    SELECT DISTINCT ON (e.key) e.key, e.payload, e.payload ->> 'event' AS name,
        coalesce(
            to_timestamp(CASE WHEN s.seconds BETWEEN {EPOCH_RANGE[0]} AND {EPOCH_RANGE[1]} THEN s.seconds END),
            %(now)s
        ) AS at,
        CASE WHEN r.is_id THEN s.reference::bigint END AS reference,
        CASE WHEN NOT r.is_id AND {_truthy("e.payload -> 'sg_message_id'")}
            THEN split_part(e.payload ->> 'sg_message_id', '.', 1) END AS provider_reference,
        e.position
    FROM (
        SELECT left({_KEY}, 200) AS key, j.payload, j.position
        FROM {WebhookDelivery._meta.db_table} AS d
        CROSS JOIN jsonb_array_elements(d.body::jsonb) WITH ORDINALITY AS j(payload, position)
        WHERE d.id = %(delivery)s
    ) AS e
    CROSS JOIN LATERAL (SELECT {_SECONDS} AS seconds, {_text("e.payload -> 'chorus_message_id'")} AS reference) AS s
    -- A Chorus message id: 1 to 18 digits (providers.parse_sendgrid_event's _MESSAGE_ID).
    CROSS JOIN LATERAL (
        SELECT length(s.reference) BETWEEN 1 AND 18 AND ltrim(s.reference, '0123456789') = '' AS is_id
    ) AS r
    ORDER BY e.key, e.position
),
resolved AS MATERIALIZED (
    SELECT event.*, meaning.status, meaning.rank, meaning.activity, meaning.consent, meaning.moment,
        m.id AS message_id, m.customer_id, m.to_address, step.campaign_id,
        c.erased_at IS NOT NULL AS erased,
        CASE WHEN meaning.failure THEN left(
            'SendGrid ' || event.name || ': ' || coalesce(nullif({_REASON}, ''), 'no reason given'),
            2000
        ) END AS failure,
        event.name = 'bounce' AND (NOT event.payload ? 'type' OR event.payload -> 'type' = '"bounce"')
            AND NOT coalesce(jsonb_typeof(event.payload -> 'bounce_classification') = 'string'
                AND event.payload ->> 'bounce_classification' = ANY(%(sender_side)s), false) AS hard,
        CASE
            WHEN meaning.name IS NULL
                THEN 'Unknown SendGrid event ' || coalesce((event.payload -> 'event')::text, 'null') || '.'
            WHEN event.reference IS NULL AND event.provider_reference IS NULL THEN %(no_reference)s
            WHEN m.id IS NULL THEN %(no_match)s
            ELSE ''
        END AS error
    FROM event
    LEFT JOIN jsonb_to_recordset(%(meanings)s::jsonb)
        AS meaning(name text, status text, rank int, activity text, consent text, moment text, failure boolean)
        ON meaning.name = event.name AND jsonb_typeof(event.payload -> 'event') = 'string'
    LEFT JOIN {_M} AS by_id
        ON meaning.name IS NOT NULL AND by_id.id = event.reference AND by_id.channel = %(channel)s
    LEFT JOIN {_M} AS by_reference
        ON meaning.name IS NOT NULL AND by_reference.provider = 'sendgrid'
        AND by_reference.provider_message_id = event.provider_reference
    CROSS JOIN LATERAL (
        SELECT coalesce(by_id.id, by_reference.id) AS id,
            coalesce(by_id.customer_id, by_reference.customer_id) AS customer_id,
            coalesce(by_id.to_address, by_reference.to_address) AS to_address,
            coalesce(by_id.step_id, by_reference.step_id) AS step_id
    ) AS m
    LEFT JOIN {Step._meta.db_table} AS step ON step.id = m.step_id
    LEFT JOIN {_C} AS c ON c.id = m.customer_id
),
inserted AS (
    -- Keys in one order, so two deliveries sharing events wait for each other, never deadlock.
    INSERT INTO {ProviderEvent._meta.db_table}
        (provider, kind, dedupe_key, payload, received_at, processed_at, message_id, error)
    SELECT 'sendgrid', 'status', key, CASE WHEN erased THEN %(erased_payload)s::jsonb ELSE payload END,
        %(received)s, %(now)s, message_id, error
    FROM resolved ORDER BY key
    ON CONFLICT (provider, dedupe_key) DO NOTHING
    RETURNING id, dedupe_key
),
new AS MATERIALIZED (
    SELECT resolved.*, inserted.id AS event_id FROM inserted JOIN resolved ON resolved.key = inserted.dedupe_key
),
advanced AS (
    -- As status.messages_advance, and the first failure reason onto a message without one.
    UPDATE {_M} AS m SET
        status = CASE WHEN m.rank < v.rank THEN v.status ELSE m.status END,
        rank = GREATEST(m.rank, v.rank),
        {", ".join(f"{column} = LEAST(m.{column}, v.{column})" for column in _COLUMNS)},
        error = CASE WHEN m.error = '' AND v.failure IS NOT NULL THEN v.failure ELSE m.error END,
        updated_at = %(now)s
    FROM (
        SELECT message_id, (array_agg(status ORDER BY rank DESC, at, status))[1] AS status, max(rank) AS rank,
            {", ".join(f"min(at) FILTER (WHERE moment = '{column}') AS {column}" for column in _COLUMNS)},
            min(failure) AS failure
        FROM new WHERE status IS NOT NULL AND message_id IS NOT NULL
        GROUP BY message_id ORDER BY message_id
    ) AS v
    WHERE m.id = v.message_id AND m.status <> %(skipped)s
),
timeline AS (
    -- A late event about an erased customer moves the message's status but leaves nothing personal.
    INSERT INTO {_A} (customer_id, kind, channel, campaign_id, message_id, occurred_at, properties)
    SELECT customer_id, activity, %(channel)s, campaign_id, message_id, at,
        {_DETAILS} || jsonb_build_object('provider_event', event_id)
    FROM new WHERE activity IS NOT NULL AND customer_id IS NOT NULL AND NOT erased
),
engaged AS (
    UPDATE {_C} AS c SET {_ENGAGED} = v.at
    FROM (
        SELECT customer_id, max(at) AS at FROM new
        WHERE activity = ANY(%(engaging)s) AND customer_id IS NOT NULL AND NOT erased
        GROUP BY customer_id ORDER BY customer_id
    ) AS v
    WHERE c.id = v.customer_id AND (c.{_ENGAGED} IS NULL OR c.{_ENGAGED} < v.at)
),
suppressed AS (
    -- Only a hash is kept, so this holds for erased customers too; an address already listed keeps its reason.
    INSERT INTO {_S} (address_hash, reason, created_at)
    SELECT DISTINCT ON (hash) hash, reason, %(now)s FROM (
        SELECT encode(sha256(convert_to(lower(btrim(address, {_WHITESPACE})), 'UTF8')), 'hex') AS hash, reason
        FROM (
            SELECT coalesce(nullif({_text("payload -> 'email'")}, ''), to_address, '') AS address,
                CASE WHEN hard OR (name = 'dropped' AND payload -> 'reason' = '"Bounced Address"')
                    THEN %(hard_bounce)s WHEN name = 'spamreport' THEN %(spam_report)s END AS reason
            FROM new
        ) AS a
        WHERE reason IS NOT NULL AND btrim(address, {_WHITESPACE}) <> ''
    ) AS h
    ORDER BY hash, reason
    ON CONFLICT (address_hash) DO NOTHING
)
SELECT
    (SELECT coalesce(array_agg(event_id ORDER BY key), '{{}}') FROM new),
    (SELECT coalesce(jsonb_agg(jsonb_build_array(event_id, customer_id, consent, to_jsonb(at), {_DETAILS})
        ORDER BY customer_id, event_id), '[]')
     FROM new WHERE consent IS NOT NULL AND customer_id IS NOT NULL AND NOT erased),
    (SELECT count(*) FROM event WHERE jsonb_typeof(payload) <> 'object')
"""  # noqa: S608


class _NotEvents(Exception):
    """The stored body is not a JSON array of event objects."""


def sendgrid_delivery_apply(delivery: WebhookDelivery) -> list[int] | None:
    """Store and apply the events of a stored SendGrid delivery (PostgreSQL); returns the new events' ids.

    None, with nothing written, when the body is not a JSON array of event
    objects: the Python path then names the problem. Runs in the caller's
    transaction, which holds the delivery.
    """
    params = {
        "delivery": delivery.pk,
        "now": timezone.now(),
        "received": delivery.received_at,
        "meanings": _meanings(),
        "sender_side": sorted(SENDER_SIDE_BOUNCES),
        "no_reference": NO_MESSAGE_NAMED,
        "no_match": NO_MATCH,
        "channel": Channel.EMAIL.value,
        "erased_payload": json.dumps(ProviderEvent.ERASED_PAYLOAD),
        "skipped": Message.Status.SKIPPED.value,
        "engaging": [kind for kind in Activity.Kind.values if counts_as_engagement(kind, Channel.EMAIL)],
        "hard_bounce": Suppression.Reason.HARD_BOUNCE.value,
        "spam_report": Suppression.Reason.SPAM_REPORT.value,
    }
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(SQL, params)
            new, consents, not_objects = cursor.fetchone()
            if not_objects:
                raise _NotEvents
    except (DataError, _NotEvents):  # not JSON, not an array, a NUL: undone with the savepoint
        return None
    consents_record(
        changes=[
            ConsentChange(
                customer_id,
                Channel.EMAIL,
                status,
                Consent.Source.PROVIDER_EVENT,
                # As the Python path records it: the provider's time is evidence.
                {"provider_event": event_id, "event_at": datetime.fromisoformat(at).isoformat(), **details},
            )
            # Django reads jsonb as text.
            for event_id, customer_id, status, at, details in json.loads(consents)
        ]
    )
    return list(new)
