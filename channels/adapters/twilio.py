"""SMS through Twilio's Messages API, with the official SDK."""

from __future__ import annotations

from collections.abc import Sequence

import requests
from django.conf import settings
from django.urls import reverse
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from channels.adapters.base import Adapter, ChannelError, Outbound, SendResult

# Twilio error codes about this one recipient or message: retrying cannot help.
# https://www.twilio.com/docs/api/errors
PERMANENT_CODES = {21211, 21214, 21217, 21408, 21610, 21612, 21614, 21617, 30003, 30005, 30006}


class TwilioSmsAdapter(Adapter):
    channel = "sms"
    provider = "twilio"

    def __init__(self) -> None:
        http = TwilioHttpClient(timeout=settings.CHORUS_PROVIDER_TIMEOUT)
        self.client = Client(settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN, http_client=http)
        self.client.api.base_url = settings.TWILIO_API_BASE_URL
        self.status_callback = settings.CHORUS_PUBLIC_URL + reverse("webhooks:twilio-status")

    def send(self, batch: Sequence[Outbound]) -> list[SendResult]:
        results = []
        for msg in batch:
            try:
                created = self.client.messages.create(
                    to=msg.to,
                    from_=msg.sender or settings.TWILIO_FROM_NUMBER,
                    body=msg.body,
                    # Our id rides in the signed callback URL: the status can
                    # arrive before this call returns the provider's sid.
                    status_callback=f"{self.status_callback}?m={msg.message_id}",
                )
            except TwilioRestException as exc:
                error = ChannelError(
                    f"Twilio {exc.code or exc.status}: {exc.msg}",
                    permanent=exc.code in PERMANENT_CODES or exc.status in (400, 401, 403, 404),
                    code=str(exc.code or exc.status),
                )
                if exc.status in (401, 403) or not error.permanent:
                    raise error from exc
                results.append(SendResult(msg.message_id, error=error))
                continue
            except requests.RequestException as exc:
                raise ChannelError(f"Twilio unreachable: {exc}") from exc
            results.append(SendResult(msg.message_id, provider_message_id=created.sid))
        return results
