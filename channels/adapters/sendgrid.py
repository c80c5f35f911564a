"""Email through SendGrid's v3 Mail Send API, with the official SDK.

Messages of a batch whose content and sender are identical go out in one API
call with one personalization each (up to 1,000 per call, SendGrid's limit),
each carrying its own recipient, ``List-Unsubscribe`` headers,
``chorus_message_id`` custom arg and ``substitutions``: the recipient's own
unsubscribe, preferences and view-in-browser URLs, which SendGrid writes over
their tags in the subject and body. A broadcast whose Liquid reads no customer
variable therefore goes out 1,000 recipients per call. Messages whose content
differs per customer (the template reads ``customer.*`` or ``links.*``) share
nothing, and go out one call each: correct, but a thousand times the requests.

The request body is the v3 JSON built here as plain dicts and posted by the
SDK's client (``client.mail.send.post``): the SDK's ``Mail`` helper objects
cost more than the HTTP call itself for a thousand personalizations.
"""

from __future__ import annotations

import json
import urllib.error
from collections import deque
from collections.abc import Sequence

from django.conf import settings
from python_http_client import exceptions as http_errors
from sendgrid import SendGridAPIClient

from channels.adapters.base import Adapter, ChannelError, Outbound, SendResult, retry_after_seconds

# SendGrid answers these when the request itself is wrong: retrying cannot help.
PERMANENT_STATUSES = {400, 401, 403, 404, 413}
# These condemn the account or the API key, not one message: the whole batch fails.
ACCOUNT_CODES = {"401", "403"}
MAX_PERSONALIZATIONS = 1000


def _error_text(exc: http_errors.HTTPError) -> str:
    try:
        body = exc.body.decode() if isinstance(exc.body, bytes) else exc.body
        errors = json.loads(body)["errors"]
        return "; ".join(e.get("message") or "" for e in errors) or f"HTTP {exc.status_code}"
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"HTTP {exc.status_code}"


def sendgrid_error(exc: http_errors.HTTPError) -> ChannelError:
    """The ``ChannelError`` for an HTTP error answer from SendGrid."""
    permanent = exc.status_code in PERMANENT_STATUSES
    return ChannelError(
        f"SendGrid {exc.status_code}: {_error_text(exc)}",
        permanent=permanent,
        code=str(exc.status_code),
        retry_after=None if permanent else retry_after_seconds(dict(exc.headers or {})),
    )


def _content_key(msg: Outbound) -> tuple:
    """Messages with the same key can share one mail send (headers and substitutions are per personalization)."""
    return (msg.sender, msg.sender_name, msg.reply_to, msg.subject, msg.body, msg.html, msg.categories)


def _personalization(msg: Outbound) -> dict:
    personalization = {
        "to": [{"email": msg.to}],
        # Comes back on every event webhook, tying the event to our Message row.
        "custom_args": {"chorus_message_id": str(msg.message_id)},
    }
    if msg.headers:
        personalization["headers"] = dict(msg.headers)
    if msg.substitutions:
        personalization["substitutions"] = dict(msg.substitutions)
    return personalization


class SendGridAdapter(Adapter):
    channel = "email"
    provider = "sendgrid"
    substitutes = True

    def __init__(self) -> None:
        self.client = SendGridAPIClient(settings.SENDGRID_API_KEY, host=settings.SENDGRID_API_HOST)
        self.client.client.timeout = settings.CHORUS_PROVIDER_TIMEOUT

    def _mail(self, group: Sequence[Outbound]) -> dict:
        """The v3 mail send body for ``group`` (messages sharing ``_content_key``), personalizations in order."""
        first = group[0]
        sender = {"email": first.sender}
        if first.sender_name:
            sender["name"] = first.sender_name
        content = [{"type": "text/plain", "value": first.body}]
        if first.html:
            content.append({"type": "text/html", "value": first.html})
        mail = {
            "from": sender,
            "subject": first.subject,
            "personalizations": [_personalization(msg) for msg in group],
            "content": content,
        }
        if first.categories:
            mail["categories"] = list(first.categories)
        if first.reply_to:
            mail["reply_to"] = {"email": first.reply_to}
        return mail

    def _groups(self, batch: Sequence[Outbound]) -> list[list[Outbound]]:
        groups: dict[tuple, list[list[Outbound]]] = {}
        for msg in batch:
            chunks = groups.setdefault(_content_key(msg), [[]])
            if len(chunks[-1]) == MAX_PERSONALIZATIONS:
                chunks.append([])
            chunks[-1].append(msg)
        return [group for chunks in groups.values() for group in chunks]

    def _send_group(self, group: Sequence[Outbound]) -> dict[int, SendResult]:
        """One mail send for ``group``; raises ChannelError when the call itself failed."""
        for msg in group:
            if "@" not in msg.to:  # SendGrid would refuse the whole call for it
                raise ChannelError(
                    f"SendGrid refused {msg.to!r} before sending: not an email address.", permanent=True, code="invalid"
                )
        try:
            response = self.client.client.mail.send.post(request_body=self._mail(group))
        except http_errors.HTTPError as exc:
            raise sendgrid_error(exc) from exc
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise ChannelError(f"SendGrid unreachable: {exc}") from exc
        x_message_id = response.headers.get("X-Message-Id")
        if len(group) == 1:
            return {group[0].message_id: SendResult(group[0].message_id, provider_message_id=x_message_id)}
        # One X-Message-Id per request; each personalization gets its own id so they stay unique.
        return {
            msg.message_id: SendResult(
                msg.message_id, provider_message_id=f"{x_message_id}.{i}" if x_message_id else None
            )
            for i, msg in enumerate(group)
        }

    def send(self, batch: Sequence[Outbound]) -> list[SendResult]:
        results: dict[int, SendResult] = {}
        pending = deque(self._groups(batch))
        while pending:
            group = pending.popleft()
            try:
                results.update(self._send_group(group))
            except ChannelError as error:
                if error.permanent and error.code not in ACCOUNT_CODES:
                    if len(group) == 1:
                        results[group[0].message_id] = SendResult(group[0].message_id, error=error)
                    else:
                        # One bad recipient refuses the whole call: send each alone to find it.
                        pending.extendleft([msg] for msg in reversed(group))
                    continue
                if not results:
                    raise
                # Part of the batch is done: report the rest, never make the caller resend it all.
                for msg in batch:
                    results.setdefault(msg.message_id, SendResult(msg.message_id, error=error))
                break
        return [results[msg.message_id] for msg in batch]
