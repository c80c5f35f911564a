"""Provider webhooks: verify, store the request whole (one INSERT), acknowledge. Processing is a task.

Anything unsigned, forged or stale gets 403, stores nothing and leaves a
WARNING on the ``chorus.security`` logger (endpoint, reason, remote address;
never the payload).
"""

from __future__ import annotations

import binascii
import json
import logging
import time
from functools import lru_cache
from xml.sax.saxutils import escape

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from sendgrid.helpers.eventwebhook import EventWebhook
from twilio.request_validator import RequestValidator

from channels.providers import sendgrid_events_parse
from channels.services.events import twilio_help_reply, webhook_delivery_record

logger = logging.getLogger(__name__)
security_log = logging.getLogger("chorus.security")

# A signed SendGrid request older (or further in the future) than this is a replay.
SENDGRID_MAX_AGE_SECONDS = 600


@lru_cache(maxsize=4)
def _sendgrid_verifier(public_key: str) -> EventWebhook | None:
    try:
        return EventWebhook(public_key)
    except ValueError:
        logger.error("SENDGRID_WEBHOOK_PUBLIC_KEY is not a valid base64 DER public key; rejecting SendGrid events.")
        return None


def sendgrid_signature_problem(body: bytes, signature: str, timestamp: str, *, now: float | None = None) -> str:
    """Why a SendGrid event request must be rejected, or "" if it is genuine and fresh."""
    if not signature or not timestamp:
        return "missing signature"
    verifier = (
        _sendgrid_verifier(settings.SENDGRID_WEBHOOK_PUBLIC_KEY) if settings.SENDGRID_WEBHOOK_PUBLIC_KEY else None
    )
    if verifier is None:
        return "no SendGrid public key configured"
    try:
        age = (time.time() if now is None else now) - int(timestamp)
    except ValueError:
        return "timestamp is not a number"
    try:
        valid = verifier.verify_signature(body.decode("utf-8"), signature, timestamp)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        valid = False
    if not valid:
        return "invalid signature"
    if abs(age) > SENDGRID_MAX_AGE_SECONDS:
        return f"stale timestamp ({int(age)} s old)"
    return ""


def twilio_signature_problem(request: HttpRequest) -> str:
    """Why a Twilio request must be rejected, or "" if its signature is genuine."""
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature:
        return "missing signature"
    if not settings.TWILIO_AUTH_TOKEN:
        return "no Twilio auth token configured"
    # Twilio signs the public URL it called, which a proxy may have rewritten.
    url = settings.CHORUS_PUBLIC_URL + request.get_full_path()
    if not RequestValidator(settings.TWILIO_AUTH_TOKEN).validate(url, request.POST, signature):
        return "invalid signature"
    return ""


def _forbidden(request: HttpRequest, endpoint: str, reason: str) -> HttpResponse:
    security_log.warning(
        "Rejected webhook %s: %s (remote address %s).", endpoint, reason, request.META.get("REMOTE_ADDR", "unknown")
    )
    return HttpResponseForbidden(f"Rejected: {reason}.")


@csrf_exempt
@require_POST
def sendgrid_events(request: HttpRequest) -> HttpResponse:
    if problem := sendgrid_signature_problem(
        request.body,
        request.headers.get("X-Twilio-Email-Event-Webhook-Signature", ""),
        request.headers.get("X-Twilio-Email-Event-Webhook-Timestamp", ""),
    ):
        return _forbidden(request, "sendgrid/events", problem)
    try:
        events = sendgrid_events_parse(request.body)
    except ValueError as exc:
        return JsonResponse({"detail": str(exc)}, status=400)
    # Accepted, not yet applied: a task splits the batch into events after this commits.
    webhook_delivery_record(provider="sendgrid", kind="status", body=request.body.decode())
    return JsonResponse({"received": len(events)}, status=202)


@csrf_exempt
@require_POST
def twilio_status(request: HttpRequest) -> HttpResponse:
    if problem := twilio_signature_problem(request):
        return _forbidden(request, "twilio/status", problem)
    params = {**request.POST.dict(), "chorus_message_id": request.GET.get("m", "")}
    if not params.get("MessageSid") or not params.get("MessageStatus"):
        return JsonResponse({"detail": "MessageSid and MessageStatus are required."}, status=400)
    webhook_delivery_record(provider="twilio", kind="status", body=json.dumps(params))
    return HttpResponse(status=204)


@csrf_exempt
@require_POST
def twilio_inbound(request: HttpRequest) -> HttpResponse:
    if problem := twilio_signature_problem(request):
        return _forbidden(request, "twilio/inbound", problem)
    params = request.POST.dict()
    if not params.get("MessageSid"):
        return JsonResponse({"detail": "MessageSid is missing."}, status=400)
    webhook_delivery_record(provider="twilio", kind="inbound", body=json.dumps(params))
    # STOP/START change consent when the event is processed; HELP/INFO are answered here.
    reply = twilio_help_reply(params)
    twiml = f"<Response><Message>{escape(reply)}</Message></Response>" if reply else "<Response/>"
    return HttpResponse(f"<?xml version='1.0' encoding='UTF-8'?>{twiml}", content_type="text/xml")
