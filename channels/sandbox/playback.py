"""Playing back the providers' webhooks for what the sandbox received, signed as the providers sign them."""

from __future__ import annotations

import json
import time
import uuid
from urllib.parse import urlencode

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from twilio.request_validator import RequestValidator

from channels.models import SandboxMessage
from config.keys import ec_sign_b64


def emit_after_commit(ids: list[int]) -> None:
    """Once the recording commits, one playback task for these sandbox messages."""
    from channels.tasks import sandbox_emit_events

    if not ids:
        return
    delay = settings.CHORUS_SANDBOX_EVENT_DELAY
    transaction.on_commit(lambda: sandbox_emit_events.apply_async((ids,), countdown=delay))


def _post_sendgrid(message: SandboxMessage) -> None:
    base = {
        "email": message.to_address,
        "sg_message_id": message.provider_message_id,
        "smtp-id": f"<{message.provider_message_id}@sandbox>",
        **message.request.get("custom_args", {}),
    }
    now = int(time.time())
    events = [{**base, "event": "processed", "timestamp": now, "sg_event_id": uuid.uuid4().hex}]
    if message.outcome == "bounce":
        events.append(
            {
                **base,
                "event": "bounce",
                "type": "bounce",
                "status": "5.1.1",
                "reason": "550 5.1.1 The email account that you tried to reach does not exist",
                "timestamp": now + 1,
                "sg_event_id": uuid.uuid4().hex,
            }
        )
    else:
        events.append(
            {**base, "event": "delivered", "response": "250 OK", "timestamp": now + 1, "sg_event_id": uuid.uuid4().hex}
        )
    body = json.dumps(events)
    timestamp = str(now)
    signature = ec_sign_b64(settings.CHORUS_SANDBOX_SENDGRID_PRIVATE_KEY, (timestamp + body).encode())
    response = requests.post(
        message.callback_url,
        data=body.encode(),
        headers={
            "Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": signature,
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        },
        timeout=10,
    )
    response.raise_for_status()


def twilio_signed_post(url: str, params: dict, headers: dict | None = None) -> requests.Response:
    """POST form ``params`` to ``url`` signed as Twilio signs its callbacks."""
    signature = RequestValidator(settings.TWILIO_AUTH_TOKEN).compute_signature(url, params)
    return requests.post(
        url,
        data=urlencode(params),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature,
            **(headers or {}),
        },
        timeout=10,
    )


def _post_twilio(message: SandboxMessage) -> None:
    if not message.callback_url:
        return
    for status in ("sent", "delivered"):
        params = {
            "MessageSid": message.provider_message_id,
            "SmsSid": message.provider_message_id,
            "AccountSid": settings.TWILIO_ACCOUNT_SID,
            "From": message.from_address,
            "To": message.to_address,
            "MessageStatus": status,
            "SmsStatus": status,
            "ApiVersion": "2010-04-01",
        }
        token = f"{message.provider_message_id}-{status}"
        twilio_signed_post(message.callback_url, params, {"I-Twilio-Idempotency-Token": token}).raise_for_status()


def sandbox_events_emit(*, sandbox_message_ids: list[int]) -> None:
    """Post the provider's webhooks for the recorded messages not played back yet, once each."""
    post = {"sendgrid": _post_sendgrid, "twilio": _post_twilio}
    for message in SandboxMessage.objects.filter(pk__in=sandbox_message_ids, events_sent_at=None).order_by("pk"):
        post[message.provider](message)
        SandboxMessage.objects.filter(pk=message.pk).update(events_sent_at=timezone.now())
