"""SMS and WhatsApp through Twilio's Messages API, with the official SDK.

A sender starting with ``MG`` is a Messaging Service SID (Twilio picks the
number from its pool), anything else a from-number. WhatsApp is the same API
with ``whatsapp:`` before both numbers. Every message asks Twilio to post its
status to Chorus's public URL, with our message id in the (signed) URL.
"""

from __future__ import annotations

from collections.abc import Sequence

import requests
from django.conf import settings
from django.urls import reverse
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from channels.adapters.base import Adapter, ChannelError, Outbound, SendResult, retry_after_seconds

# Twilio error codes about this one recipient or message: retrying cannot help.
# https://www.twilio.com/docs/api/errors
PERMANENT_CODES = {
    21211,  # invalid 'To' number
    21214,  # 'To' number cannot be reached
    21217,  # phone number does not appear to be valid
    21408,  # permission to send to this region is not enabled
    21610,  # recipient unsubscribed (replied STOP)
    21612,  # 'To' number not reachable from this sender
    21614,  # 'To' number is not a valid mobile number
    21617,  # body exceeds the concatenated message limit
    63016,  # WhatsApp: outside the 24-hour window without a template
    30003,
    30005,
    30006,
}
# Twilio's "Too Many Requests": back off and try again.
TRANSIENT_CODES = {20429}
# Bad credentials or a suspended account: no message of the batch can go.
ACCOUNT_STATUSES = {401, 403}


class _HttpClient(TwilioHttpClient):
    """Keeps the last answer's headers: TwilioRestException drops them, and Retry-After lives there."""

    last_headers: dict = {}

    def request(self, *args, **kwargs):
        self.last_headers = {}
        response = super().request(*args, **kwargs)
        self.last_headers = dict(response.headers or {})
        return response


def twilio_error(exc: TwilioRestException, headers: dict | None = None) -> ChannelError:
    """The ``ChannelError`` for an error answer from Twilio."""
    transient = exc.code in TRANSIENT_CODES or exc.status == 429 or exc.status >= 500
    permanent = not transient and (exc.code in PERMANENT_CODES or 400 <= exc.status < 500)
    return ChannelError(
        f"Twilio {exc.code or exc.status}: {exc.msg}",
        permanent=permanent,
        code=str(exc.code or exc.status),
        retry_after=None if permanent else retry_after_seconds(headers),
    )


class TwilioSmsAdapter(Adapter):
    channel = "sms"
    provider = "twilio"
    prefix = ""

    def __init__(self) -> None:
        self.http = _HttpClient(timeout=settings.CHORUS_PROVIDER_TIMEOUT)
        self.client = Client(settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN, http_client=self.http)
        self.client.api.base_url = settings.TWILIO_API_BASE_URL
        self.status_callback = settings.CHORUS_PUBLIC_URL + reverse("webhooks:twilio-status")

    def _address(self, number: str) -> str:
        return self.prefix + number.removeprefix(self.prefix) if self.prefix else number

    def sender_of(self, msg: Outbound) -> str:
        """The brand's number or Messaging Service, else ``TWILIO_FROM_NUMBER``."""
        return msg.sender or settings.TWILIO_FROM_NUMBER

    def _create(self, msg: Outbound) -> str:
        sender = self.sender_of(msg)
        origin = {"messaging_service_sid": sender} if sender.startswith("MG") else {"from_": self._address(sender)}
        created = self.client.messages.create(
            to=self._address(msg.to),
            body=msg.body,
            # Our id rides in the signed callback URL: the status can
            # arrive before this call returns the provider's sid.
            status_callback=f"{self.status_callback}?m={msg.message_id}",
            **origin,
        )
        return created.sid

    def send(self, batch: Sequence[Outbound]) -> list[SendResult]:
        results: list[SendResult] = []
        for msg in batch:
            try:
                results.append(SendResult(msg.message_id, provider_message_id=self._create(msg)))
                continue
            except TwilioRestException as exc:
                error = twilio_error(exc, self.http.last_headers)
                if error.permanent and exc.status not in ACCOUNT_STATUSES:
                    results.append(SendResult(msg.message_id, error=error))
                    continue
            except requests.RequestException as exc:
                error = ChannelError(f"Twilio unreachable: {exc}")
            if not results:
                raise error
            # Part of the batch went out: report the rest, never make the caller resend it all.
            results.extend(SendResult(rest.message_id, error=error) for rest in batch[len(results) :])
            break
        return results


class TwilioWhatsAppAdapter(TwilioSmsAdapter):
    channel = "whatsapp"
    prefix = "whatsapp:"
