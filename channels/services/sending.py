"""Sending messages: claim, re-check, render, call the adapter, record the result.

This module is the only caller of channel adapters.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict

from django.db import connection, transaction
from django.db.models import Case, F, TextField, Value, When
from django.utils import timezone

from campaigns.content.liquid import ContentError
from campaigns.content.render import RenderedContent, render_template, shares_content
from campaigns.models import CONSENT_CHANNEL, Step
from channels.adapters import ChannelError, Outbound, SendResult, adapter_for, adapter_substitutes
from channels.models import Message, MessageContent
from channels.ratelimit import send_throttled
from channels.services.status import advance
from channels.suppression import suppressed_addresses
from config.db import in_values
from customers.models import Activity, Consent, Customer, Persona
from customers.querysets import consent_status_subquery

logger = logging.getLogger(__name__)
S = Message.Status
# What a provider's webhook reports when a message did not arrive; its reason is the message's error.
FAILURES = (S.FAILED.value, S.BOUNCED.value, S.UNDELIVERED.value)


class TransientSendError(Exception):
    """Some messages of a batch hit a transient error and went back to queued.

    ``retry_after``: the longest wait a provider asked for (``Retry-After``), or None.
    """

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def skip_reason(customer: Customer, address: str | None, consented: set[int], suppressed: set[str]) -> str:
    """Why a message to ``customer`` at ``address`` must not go out, or "" if it may.

    The one rule, applied at dispatch and again right before the provider call:
    erased, no address, suppressed address, no consent on the channel.
    """
    if customer.erased_at is not None:
        return Message.SkipReason.ERASED
    if not address:
        return Message.SkipReason.NO_ADDRESS
    if address in suppressed:
        return Message.SkipReason.SUPPRESSED
    if customer.pk not in consented:
        return Message.SkipReason.NO_CONSENT
    return ""


# What sending reads of a message (in the model's field order); the rest is written, never read here.
_CLAIMED = [
    f.attname
    for f in Message._meta.concrete_fields
    if f.attname in {"id", "run_id", "step_id", "customer_id", "channel", "to_address"}
]
# What sending reads of a customer whose email shares its content (``shares_content``): not the profile.
_SHARING_CUSTOMER = [
    f.attname for f in Customer._meta.concrete_fields if f.attname in {"id", "erased_at", "persona_id"}
]


def _claim_rows(message_ids: list[int]) -> list[tuple]:
    """queued -> sending for the ids nobody else holds (locked rows are skipped, not waited for).

    Returns the ``_CLAIMED`` fields of what we now own; on PostgreSQL one statement,
    the claim checked by what it returns.
    """
    claim = {"status": S.SENDING, "rank": Message.RANK[S.SENDING], "updated_at": timezone.now()}
    if connection.vendor == "postgresql":
        table = Message._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET status = %s, rank = %s, attempts = attempts + 1, updated_at = %s "  # noqa: S608 - names from the model, values bound
                f"WHERE id IN (SELECT id FROM {table} WHERE id = ANY(%s) AND status = %s FOR UPDATE SKIP LOCKED) "
                f"RETURNING {', '.join(_CLAIMED)}",
                [*claim.values(), message_ids, S.QUEUED.value],
            )
            return cursor.fetchall()
    with transaction.atomic():
        ids = list(
            Message.objects.select_for_update(skip_locked=True)
            .filter(pk__in=message_ids, status=S.QUEUED)
            .values_list("pk", flat=True)
        )
        Message.objects.filter(pk__in=ids, status=S.QUEUED).update(**claim, attempts=F("attempts") + 1)
    return list(Message.objects.filter(pk__in=ids).values_list(*_CLAIMED))


def _claim(message_ids: list[int]) -> list[Message]:
    """queued -> sending for the ids nobody else holds; returns what we now own, with its step.

    A batch has one step or a few: each is loaded once (brand, template, variants)
    and shared by its messages, not joined into every row. Customers are loaded
    per channel, by ``_send_channel``.
    """
    messages = [Message.from_db(connection.alias, _CLAIMED, row) for row in sorted(_claim_rows(message_ids))]
    steps = (
        Step.objects.filter(pk__in={message.step_id for message in messages})
        .select_related("campaign__brand", "template")
        .prefetch_related("template__variants")
        .in_bulk()
    )
    for message in messages:
        message.step = steps[message.step_id]
    return messages


def _customers_load(channel: str, messages: list[Message]) -> set[int]:
    """Give ``messages`` their customers, read now; returns the ids of those who consent to ``channel``.

    One query (and one for the personas of a batch whose content is shared). When
    the channel's provider fills in each recipient's links and every step's
    content is shared (``shares_content``), no profile is rendered, so only the
    customer's id, erasure and persona are read.
    """
    customers = Customer.objects.filter(pk__in=in_values({m.customer_id for m in messages})).annotate(
        consent=consent_status_subquery(CONSENT_CHANNEL.get(channel, channel))
    )
    consented: set[int] = set()
    if adapter_substitutes(channel) and all(shares_content(step.template) for step in {m.step for m in messages}):
        by_pk = {}
        for *row, consent in customers.values_list(*_SHARING_CUSTOMER, "consent"):
            customer = by_pk[row[0]] = Customer.from_db(connection.alias, _SHARING_CUSTOMER, row)
            if consent == Consent.Status.OPTED_IN:
                consented.add(customer.pk)
        personas = Persona.objects.in_bulk({c.persona_id for c in by_pk.values() if c.persona_id})
        for customer in by_pk.values():
            if customer.persona_id:
                customer.persona = personas[customer.persona_id]
    else:
        by_pk = {customer.pk: customer for customer in customers.select_related("persona")}
        consented = {pk for pk, customer in by_pk.items() if customer.consent == Consent.Status.OPTED_IN}
    for message in messages:
        message.customer = by_pk[message.customer_id]
    return consented


def _activities(messages: list[Message], kind: str, at, properties) -> list[Activity]:
    """Timeline entries for ``messages``; ``properties(message)`` gives each one's."""
    return [
        Activity(
            customer_id=message.customer_id,
            kind=kind,
            channel=message.channel,
            campaign_id=message.step.campaign_id,
            message_id=message.pk,
            occurred_at=at,
            properties=properties(message),
        )
        for message in messages
    ]


def _finish(
    messages: list[Message], status: str, *, error: str = "", skip: str = "", rendered=None, **details
) -> list[Activity]:
    """Record one outcome of a send attempt for ``messages`` (one UPDATE) and return their timeline entries.

    The provider's webhook may already have moved a message further (it can
    arrive before the API call returns), so the status only moves forward.
    ``details`` are further Message fields (provider, provider_message_id);
    ``rendered`` and ``details`` are per message, so pass one message with them.
    """
    now = timezone.now()
    if rendered is not None:
        details.update(subject=rendered.subject, body=rendered.text)
    details.update(skip_reason=skip)
    fields = {name: value for name, value in details.items() if value}
    # A success after a transient error clears it; a failure the provider's webhook reported
    # first (it can beat the API call's answer) keeps its reason.
    fields["error"] = Case(
        When(status__in=FAILURES, rank__gte=Message.RANK[status], then=F("error")),
        default=Value(error[:2000]),
        output_field=TextField(),
    )
    Message.objects.filter(pk__in=in_values([m.pk for m in messages])).exclude(status=S.SKIPPED).update(
        **fields, **advance(status, now)
    )
    kind = {
        S.SENT: Activity.Kind.MESSAGE_SENT,
        S.FAILED: Activity.Kind.MESSAGE_FAILED,
        S.SKIPPED: Activity.Kind.MESSAGE_SKIPPED,
    }[status]
    return _activities(
        messages,
        kind,
        now,
        lambda message: {"reason": skip} if skip else ({"error": error} if error else {"to": message.to_address}),
    )


def _contents_ensure(contents: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """The ``MessageContent`` id of each (subject, text), stored when new; two queries for a batch."""
    by_digest = {MessageContent.digest_for(subject, body): (subject, body) for subject, body in contents}
    MessageContent.objects.bulk_create(
        [MessageContent(digest=digest, subject=s, body=b) for digest, (s, b) in by_digest.items()],
        ignore_conflicts=True,  # stored by an earlier batch or another worker
    )
    stored = MessageContent.objects.filter(digest__in=by_digest).values_list("digest", "pk")
    return {by_digest[digest]: pk for digest, pk in stored}


def _finish_sent(provider: str, sent: list[tuple[Message, RenderedContent, str | None]]) -> list[Activity]:
    """Record that the provider accepted ``sent``: (message, what was rendered for it, provider id).

    What is stored is what the recipient got (not the HTML part): content the
    provider personalised with substitutions (a broadcast) once, as a
    ``MessageContent`` the messages point at; other content on the message.
    The same outcome as ``_finish(..., S.SENT, ...)`` per message: status and
    rank only move forward (a webhook may have got there first), ``sent_at``
    keeps the earliest time, the error is cleared, skipped messages stay as
    they are. On PostgreSQL that is one statement for the whole call,
    ``UPDATE ... FROM jsonb_to_recordset(...)`` (one JSON parameter: half the
    client time of binding arrays) feeding the ``message.sent`` timeline
    INSERT, and nothing is returned; elsewhere one UPDATE per message, in one
    transaction (SQLite would otherwise sync the file after every one).
    """
    contents = _contents_ensure({(r.subject, r.text) for _, r, _ in sent if r.substitutions})
    stored = [
        (message, "", "", contents[(r.subject, r.text)], provider_message_id)
        if r.substitutions
        else (message, r.subject, r.text, None, provider_message_id)
        for message, r, provider_message_id in sent
    ]
    if connection.vendor != "postgresql":
        activities = []
        with transaction.atomic():
            for message, subject, body, content_id, provider_message_id in stored:
                activities += _finish(
                    [message],
                    S.SENT,
                    subject=subject,
                    body=body,
                    content_id=content_id,
                    provider=provider,
                    provider_message_id=provider_message_id,
                )
        return activities
    now = timezone.now()
    rank = Message.RANK[S.SENT]
    rows = [
        {"id": message.pk, "provider_message_id": provider_message_id, "campaign_id": message.step.campaign_id}
        | ({"content_id": content_id} if content_id else {"subject": subject, "body": body})
        for message, subject, body, content_id, provider_message_id in stored
    ]
    # Mirrors status.advance(S.SENT, now); empty subjects and bodies, like _finish, leave the stored ones.
    # The timeline entries are written by the same statement, from the rows it updated.
    sql = (
        f"WITH sent AS (UPDATE {Message._meta.db_table} AS m SET "  # noqa: S608 - table names come from the models, values are bound
        "status = CASE WHEN m.rank < %s THEN %s ELSE m.status END, rank = GREATEST(m.rank, %s), "
        "sent_at = LEAST(m.sent_at, %s), updated_at = %s, provider = %s, "
        "error = CASE WHEN m.status = ANY(%s) THEN m.error ELSE '' END, "
        "provider_message_id = COALESCE(v.provider_message_id, m.provider_message_id), "
        "subject = COALESCE(NULLIF(v.subject, ''), m.subject), body = COALESCE(NULLIF(v.body, ''), m.body), "
        "content_id = COALESCE(v.content_id, m.content_id) "
        "FROM jsonb_to_recordset(%s::jsonb) "
        "AS v(id bigint, provider_message_id text, subject text, body text, content_id bigint, campaign_id bigint) "
        "WHERE m.id = v.id AND m.status <> %s "
        "RETURNING m.id, m.customer_id, m.channel, m.to_address, v.campaign_id) "
        f"INSERT INTO {Activity._meta.db_table} "
        "(customer_id, occurred_at, kind, channel, campaign_id, message_id, properties) "
        "SELECT customer_id, %s, %s, channel, campaign_id, id, jsonb_build_object('to', to_address) FROM sent"
    )
    params = [rank, S.SENT.value, rank, now, now, provider, list(FAILURES), json.dumps(rows), S.SKIPPED.value]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, now, Activity.Kind.MESSAGE_SENT.value])
    return []


def messages_send(*, message_ids: list[int], final_attempt: bool = False) -> None:
    """Send the queued messages among ``message_ids``.

    Each message is claimed (queued -> sending) before any provider call, so a
    redelivered task or a second worker never sends it twice. Erasure, suppression
    and consent are checked again now, right before the provider is called.
    Permanent errors fail the message with the provider's reason; transient ones
    put it back to queued and raise ``TransientSendError`` so the task retries,
    unless this is the final attempt.
    """
    claimed = _claim(message_ids)
    by_channel: dict[str, list[Message]] = defaultdict(list)
    for message in claimed:
        by_channel[message.channel].append(message)
    waits = [_send_channel(channel, messages, final_attempt) for channel, messages in by_channel.items()]
    waits = [wait for wait in waits if wait is not None]
    if waits:
        raise TransientSendError(
            f"Transient provider errors; {len(claimed)} messages will be retried.",
            retry_after=max(waits) or None,
        )


def _send_channel(channel: str, messages: list[Message], final_attempt: bool) -> float | None:
    """Send one channel's claimed messages; returns None, or the wait before a retry if some went back to queued."""
    # Read now, not at dispatch: the customer may have been erased, the address
    # suppressed or consent withdrawn since.
    consented = _customers_load(channel, messages)
    suppressed = suppressed_addresses(m.to_address for m in messages)
    skipped: dict[str, list[Message]] = defaultdict(list)
    sendable = []
    for message in messages:
        if skip := skip_reason(message.customer, message.to_address, consented, suppressed):
            skipped[skip].append(message)
        else:
            sendable.append(message)
    activities: list[Activity] = []
    for skip, group in skipped.items():  # one UPDATE per reason, not per message
        activities += _finish(group, S.SKIPPED, skip=skip)
    outbound, pending = [], {}
    # Short links, SMS prices and the shared part of a broadcast email, kept across the batch's renders.
    cache: dict = {}
    adapter = adapter_for(channel) if sendable else None
    for message in sendable:
        try:
            rendered = render_template(
                message.step.template,
                campaign=message.step.campaign,
                customer=message.customer,
                message=message,
                cache=cache,
                recipient_tags=adapter.substitutes,
            )
            rendered.raise_for_problems()
        except ContentError as exc:
            activities += _finish([message], S.FAILED, error=f"Content error in {exc}")
            continue
        brand = message.step.campaign.brand
        outbound.append(
            Outbound(
                message_id=message.pk,
                to=message.to_address,
                sender=brand.sender_for(channel),
                sender_name=brand.email_from_name,
                reply_to=brand.email_reply_to,
                subject=rendered.subject,
                body=rendered.text,
                html=rendered.html,
                categories=(f"campaign-{message.step.campaign_id}",),
                headers=dict(rendered.headers),
                substitutions=rendered.substitutions,
            )
        )
        pending[message.pk] = (message, rendered)

    wait: float | None = None  # set when some message must be retried: the provider's Retry-After, or 0
    sent: list[tuple[Message, RenderedContent, str | None]] = []
    if outbound:
        try:
            results = send_throttled(adapter, outbound)
        except ChannelError as exc:
            results = [SendResult(o.message_id, error=exc) for o in outbound]
        for result in results:
            message, rendered = pending[result.message_id]
            if result.ok:
                sent.append((message, rendered, result.provider_message_id))
            elif result.error.permanent or final_attempt:
                activities += _finish(
                    [message],
                    S.FAILED,
                    rendered=rendered.personal(),
                    provider=adapter.provider,
                    error=result.error.message,
                )
            else:
                logger.warning("Transient error sending message %s: %s", message.pk, result.error.message)
                Message.objects.filter(pk=message.pk, status=S.SENDING).update(
                    status=S.QUEUED, rank=Message.RANK[S.QUEUED], error=result.error.message
                )
                wait = max(wait or 0.0, result.error.retry_after or 0.0)
    if sent:
        activities += _finish_sent(adapter.provider, sent)
    Activity.objects.bulk_create(activities)
    return wait
