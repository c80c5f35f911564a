"""The sandbox: an emulator of the providers' HTTP APIs.

The real SendGrid and Twilio SDKs are pointed here (the embedded default, the
demo and the tests). It checks credentials and payloads like the provider,
records what it receives (the "Sandbox outbox"), then plays back signed
webhooks to ``CHORUS_PUBLIC_URL`` exactly as the provider would.

Outcomes are chosen by address, so demos and tests can ask for them:
email to a local part starting with ``bounce`` bounces; Twilio's magic test
numbers +15005550001 (invalid) and +15005550009 (not SMS-capable) are refused.

Faults can be injected per provider, to test and benchmark the retry path:
``CHORUS_SANDBOX_FAULTS`` answers an error status for a share of all requests;
``sandbox_fault_set`` (in-process, for tests) does the same, or for the next N
requests only. A 429 carries ``Retry-After`` (SendGrid's also ``X-RateLimit-Reset``).
"""

from __future__ import annotations

import base64
import json
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlencode

import requests
from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from twilio.request_validator import RequestValidator

from channels.models import SandboxMessage
from config.keys import ec_sign_b64

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MESSAGING_SERVICE_RE = re.compile(r"^MG[0-9a-f]{32}$")
E164_RE = re.compile(r"^(whatsapp:)?\+[1-9]\d{6,14}$")
TWILIO_REFUSED = {
    "+15005550001": (21211, "The 'To' number +15005550001 is not a valid phone number."),
    "+15005550009": (21614, "'To' number +15005550009 is not a valid mobile number."),
}


# --- fault injection -------------------------------------------------------------

FAULT_PROVIDERS = ("sendgrid", "twilio")


@dataclass
class Fault:
    status: int
    share: float = 1.0
    remaining: int | None = None  # None: until cleared
    retry_after: int | None = None
    after: int = 0  # requests let through before the fault starts


_faults: dict[str, Fault] = {}
_faults_lock = threading.Lock()


def sandbox_fault_set(
    *,
    provider: str,
    status: int,
    share: float = 1.0,
    count: int | None = None,
    retry_after: int | None = None,
    after: int = 0,
) -> None:
    """Answer ``status`` to ``share`` of ``provider``'s requests (``count`` of them only, if given),
    starting after the next ``after`` requests."""
    if provider not in FAULT_PROVIDERS:
        raise ValueError(f"Unknown sandbox provider {provider!r}; expected one of {', '.join(FAULT_PROVIDERS)}.")
    if not (status == 429 or 500 <= status <= 599):
        raise ValueError(f"A sandbox fault is a 429 or a 5xx status, got {status}.")
    if not 0 < share <= 1:
        raise ValueError(f"The share of failing requests must be in (0, 1], got {share}.")
    if count is not None and count < 1:
        raise ValueError(f"The number of failing requests must be at least 1, got {count}.")
    with _faults_lock:
        _faults[provider] = Fault(status=status, share=share, remaining=count, retry_after=retry_after, after=after)


def sandbox_faults_clear() -> None:
    with _faults_lock:
        _faults.clear()


def _fault_for(provider: str) -> Fault | None:
    """The fault this request hits, if any; counts down faults for the next N requests."""
    with _faults_lock:
        fault = _faults.get(provider)
        if fault is None:
            configured = settings.CHORUS_SANDBOX_FAULTS.get(provider)
            fault = Fault(**configured) if configured else None
        if fault is not None and fault.after > 0:
            fault.after -= 1
            return None
        if fault is None or random.random() >= fault.share:  # noqa: S311 - not security
            return None
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                del _faults[provider]
        return fault


def _fault_headers(fault: Fault, provider: str) -> dict[str, str]:
    if fault.retry_after is None:
        return {}
    headers = {"Retry-After": str(fault.retry_after)}
    if provider == "sendgrid":
        headers["X-RateLimit-Reset"] = str(int(time.time()) + fault.retry_after)
    return headers


def _sendgrid_fault(fault: Fault) -> JsonResponse:
    message = "too many requests" if fault.status == 429 else "The server encountered an unexpected error."
    response = _sendgrid_error(fault.status, message)
    for name, value in _fault_headers(fault, "sendgrid").items():
        response[name] = value
    return response


def _twilio_fault(fault: Fault) -> JsonResponse:
    code, message = (20429, "Too Many Requests") if fault.status == 429 else (20500, "Internal Server Error")
    response = _twilio_error(fault.status, code, message)
    for name, value in _fault_headers(fault, "twilio").items():
        response[name] = value
    return response


# --- the provider APIs -------------------------------------------------------------


def _sendgrid_error(status: int, message: str, field: str | None = None) -> JsonResponse:
    return JsonResponse({"errors": [{"message": message, "field": field, "help": None}]}, status=status)


def _twilio_error(status: int, code: int, message: str) -> JsonResponse:
    return JsonResponse(
        {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status},
        status=status,
    )


def _emit_after_commit(ids: list[int]) -> None:
    from channels.tasks import sandbox_emit_events

    delay = settings.CHORUS_SANDBOX_EVENT_DELAY
    transaction.on_commit(lambda: [sandbox_emit_events.apply_async((pk,), countdown=delay) for pk in ids])


def _recipient_request(mail: dict, personalization: dict) -> dict:
    """What one recipient of ``mail`` gets: its own personalization, and the custom args and
    headers in effect for it (a personalization's override the mail's, as at SendGrid)."""
    request = {**mail, "personalizations": [personalization]}
    for key in ("custom_args", "headers"):
        if key in mail or key in personalization:
            request[key] = {**mail.get(key, {}), **personalization.get(key, {})}
    return request


@csrf_exempt
@require_POST
def sendgrid_mail_send(request: HttpRequest) -> HttpResponse:
    if request.headers.get("Authorization") != f"Bearer {settings.SENDGRID_API_KEY}":
        return _sendgrid_error(401, "The provided authorization grant is invalid, expired, or revoked")
    if fault := _fault_for("sendgrid"):
        return _sendgrid_fault(fault)
    try:
        mail = json.loads(request.body)
    except ValueError:
        return _sendgrid_error(400, "Bad Request: the body is not JSON")
    sender = (mail.get("from") or {}).get("email", "")
    if not EMAIL_RE.match(sender):
        return _sendgrid_error(400, "The from object must be provided for every email send.", "from.email")
    contents = {c.get("type"): c.get("value", "") for c in mail.get("content") or []}
    if not contents:
        return _sendgrid_error(
            400, "Unless a valid template_id is provided, the content parameter is required.", "content"
        )
    personalizations = mail.get("personalizations") or []
    if not personalizations or len(personalizations) > 1000:
        return _sendgrid_error(
            400, "The personalizations field must have between 1 and 1000 items.", "personalizations"
        )
    for i, p in enumerate(personalizations):
        for j, to in enumerate(p.get("to") or [{}]):
            if not EMAIL_RE.match(to.get("email", "")):
                return _sendgrid_error(400, "Does not contain a valid address.", f"personalizations.{i}.to.{j}.email")
        if not (p.get("subject") or mail.get("subject")):
            return _sendgrid_error(400, "The subject is required.", f"personalizations.{i}.subject")

    x_message_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    ids = []
    with transaction.atomic():
        for p in personalizations:
            for to in p["to"]:
                email = to["email"]
                recorded = SandboxMessage.objects.create(
                    provider="sendgrid",
                    provider_message_id=f"{x_message_id}.sandbox.{len(ids)}",
                    to_address=email,
                    from_address=sender,
                    subject=p.get("subject") or mail.get("subject", ""),
                    body=contents.get("text/plain") or contents.get("text/html", ""),
                    callback_url=settings.CHORUS_PUBLIC_URL + reverse("webhooks:sendgrid-events"),
                    request=_recipient_request(mail, p),
                    outcome="bounce" if email.split("@")[0].lower().startswith("bounce") else "delivered",
                )
                ids.append(recorded.pk)
        _emit_after_commit(ids)
    return HttpResponse(status=202, headers={"X-Message-Id": x_message_id})


@csrf_exempt
@require_POST
def twilio_messages_create(request: HttpRequest, account_sid: str) -> HttpResponse:
    auth = request.headers.get("Authorization", "")
    expected = base64.b64encode(f"{settings.TWILIO_ACCOUNT_SID}:{settings.TWILIO_AUTH_TOKEN}".encode()).decode()
    if auth != f"Basic {expected}" or account_sid != settings.TWILIO_ACCOUNT_SID:
        return _twilio_error(401, 20003, "Authenticate")
    if fault := _fault_for("twilio"):
        return _twilio_fault(fault)
    to, body = request.POST.get("To", ""), request.POST.get("Body", "")
    sender = request.POST.get("From", "") or request.POST.get("MessagingServiceSid", "")
    if not E164_RE.match(to):
        return _twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
    if to in TWILIO_REFUSED:
        code, text = TWILIO_REFUSED[to]
        return _twilio_error(400, code, text)
    if not sender:
        return _twilio_error(400, 21603, "A 'From' phone number is required.")
    if sender.startswith("MG") and not MESSAGING_SERVICE_RE.match(sender):
        return _twilio_error(400, 21701, f"The Messaging Service Sid {sender} is invalid.")
    if to.startswith("whatsapp:") != sender.startswith("whatsapp:") and not sender.startswith("MG"):
        return _twilio_error(400, 63007, f"Twilio could not find a Channel with the specified From address: {sender}")
    if not body:
        return _twilio_error(400, 21602, "Message body is required.")
    sid = "SM" + uuid.uuid4().hex
    with transaction.atomic():
        recorded = SandboxMessage.objects.create(
            provider="twilio",
            provider_message_id=sid,
            to_address=to,
            from_address=sender,
            body=body,
            callback_url=request.POST.get("StatusCallback", ""),
            request=request.POST.dict(),
        )
        _emit_after_commit([recorded.pk])
    now = timezone.now().strftime("%a, %d %b %Y %H:%M:%S +0000")
    return JsonResponse(
        {
            "sid": sid,
            "account_sid": account_sid,
            "to": to,
            "from": sender,
            "body": body,
            "status": "queued",
            "num_segments": "1",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "date_created": now,
            "date_updated": now,
            "price": None,
            "error_code": None,
            "error_message": None,
            "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json",
        },
        status=201,
    )


# --- playing back webhooks -------------------------------------------------------


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


def sandbox_events_emit(*, sandbox_message_id: int) -> None:
    """Post the provider's webhooks for one recorded message, once."""
    message = SandboxMessage.objects.filter(pk=sandbox_message_id, events_sent_at=None).first()
    if message is None:
        return
    {"sendgrid": _post_sendgrid, "twilio": _post_twilio}[message.provider](message)
    SandboxMessage.objects.filter(pk=message.pk).update(events_sent_at=timezone.now())
