"""Email through SendGrid's v3 Mail Send API, with the official SDK."""

from __future__ import annotations

import json
import urllib.error
from collections.abc import Sequence

from django.conf import settings
from python_http_client import exceptions as http_errors
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import Category, CustomArg, From, Header, Mail, ReplyTo

from channels.adapters.base import Adapter, ChannelError, Outbound, SendResult

# SendGrid answers these when the request itself is wrong: retrying cannot help.
PERMANENT_STATUSES = {400, 401, 403, 404, 413}


def _error_text(exc: http_errors.HTTPError) -> str:
    try:
        errors = json.loads(exc.body)["errors"]
        return "; ".join(e.get("message", "") for e in errors) or str(exc)
    except (ValueError, KeyError, TypeError):
        return f"HTTP {exc.status_code}"


class SendGridAdapter(Adapter):
    channel = "email"
    provider = "sendgrid"

    def __init__(self) -> None:
        self.client = SendGridAPIClient(settings.SENDGRID_API_KEY, host=settings.SENDGRID_API_HOST)
        self.client.client.timeout = settings.CHORUS_PROVIDER_TIMEOUT

    def _mail(self, msg: Outbound) -> Mail:
        mail = Mail(
            from_email=From(msg.sender, msg.sender_name or None),
            to_emails=msg.to,
            subject=msg.subject,
            plain_text_content=msg.body,
            html_content=msg.html or None,
        )
        # Comes back on every event webhook, tying the event to our Message row.
        mail.custom_arg = CustomArg("chorus_message_id", str(msg.message_id))
        for name in msg.categories:
            mail.category = Category(name)
        for name, value in msg.headers.items():
            mail.header = Header(name, value)
        if msg.reply_to:
            mail.reply_to = ReplyTo(msg.reply_to)
        return mail

    def send(self, batch: Sequence[Outbound]) -> list[SendResult]:
        results = []
        for msg in batch:
            try:
                response = self.client.send(self._mail(msg))
            except http_errors.HTTPError as exc:
                if exc.status_code in PERMANENT_STATUSES and exc.status_code not in (401, 403):
                    results.append(SendResult(msg.message_id, error=self._error(exc)))
                    continue
                # Bad credentials or a provider outage fail the whole batch.
                raise self._error(exc) from exc
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                raise ChannelError(f"SendGrid unreachable: {exc}") from exc
            results.append(SendResult(msg.message_id, provider_message_id=response.headers.get("X-Message-Id")))
        return results

    def _error(self, exc: http_errors.HTTPError) -> ChannelError:
        return ChannelError(
            f"SendGrid {exc.status_code}: {_error_text(exc)}",
            permanent=exc.status_code in PERMANENT_STATUSES,
            code=str(exc.status_code),
        )
