"""Provider webhooks: verify, store raw, acknowledge. Processing is a task.

Anything unsigned or forged gets 403 and stores nothing.
"""

from __future__ import annotations

import binascii
import json
import logging
from functools import lru_cache

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from sendgrid.helpers.eventwebhook import EventWebhook
from twilio.request_validator import RequestValidator

from channels.providers import sendgrid_dedupe_key, twilio_status_dedupe_key
from channels.services import provider_events_record

logger = logging.getLogger(__name__)


@lru_cache(maxsize=4)
def _sendgrid_verifier(public_key: str) -> EventWebhook | None:
    try:
        return EventWebhook(public_key)
    except ValueError:
        logger.error("SENDGRID_WEBHOOK_PUBLIC_KEY is not a valid base64 DER public key; rejecting SendGrid events.")
        return None


def sendgrid_signature_valid(body: bytes, signature: str, timestamp: str) -> bool:
    verifier = (
        _sendgrid_verifier(settings.SENDGRID_WEBHOOK_PUBLIC_KEY) if settings.SENDGRID_WEBHOOK_PUBLIC_KEY else None
    )
    if verifier is None or not signature or not timestamp:
        return False
    try:
        return verifier.verify_signature(body.decode("utf-8"), signature, timestamp)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return False


def twilio_signature_valid(request: HttpRequest) -> bool:
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature or not settings.TWILIO_AUTH_TOKEN:
        return False
    # Twilio signs the public URL it called, which a proxy may have rewritten.
    url = settings.CHORUS_PUBLIC_URL + request.get_full_path()
    return RequestValidator(settings.TWILIO_AUTH_TOKEN).validate(url, request.POST, signature)


@csrf_exempt
@require_POST
def sendgrid_events(request: HttpRequest) -> HttpResponse:
    if not sendgrid_signature_valid(
        request.body,
        request.headers.get("X-Twilio-Email-Event-Webhook-Signature", ""),
        request.headers.get("X-Twilio-Email-Event-Webhook-Timestamp", ""),
    ):
        return HttpResponseForbidden("Invalid or missing SendGrid event webhook signature.")
    try:
        events = json.loads(request.body)
    except ValueError:
        return JsonResponse({"detail": "The body is not JSON."}, status=400)
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        return JsonResponse({"detail": "Expected a JSON array of event objects."}, status=400)
    new = provider_events_record(
        provider="sendgrid", kind="status", events=[(sendgrid_dedupe_key(e), e) for e in events]
    )
    return JsonResponse({"received": len(events), "new": len(new)})


@csrf_exempt
@require_POST
def twilio_status(request: HttpRequest) -> HttpResponse:
    if not twilio_signature_valid(request):
        return HttpResponseForbidden("Invalid or missing X-Twilio-Signature.")
    params = {**request.POST.dict(), "chorus_message_id": request.GET.get("m", "")}
    key = twilio_status_dedupe_key(params, request.headers.get("I-Twilio-Idempotency-Token", ""))
    provider_events_record(provider="twilio", kind="status", events=[(key, params)])
    return HttpResponse(status=204)


@csrf_exempt
@require_POST
def twilio_inbound(request: HttpRequest) -> HttpResponse:
    if not twilio_signature_valid(request):
        return HttpResponseForbidden("Invalid or missing X-Twilio-Signature.")
    params = request.POST.dict()
    key = params.get("MessageSid") or request.headers.get("I-Twilio-Idempotency-Token", "")
    if not key:
        return JsonResponse({"detail": "MessageSid is missing."}, status=400)
    provider_events_record(provider="twilio", kind="inbound", events=[(key, params)])
    # Empty TwiML: Twilio itself answers STOP/START/HELP keywords.
    return HttpResponse("<?xml version='1.0' encoding='UTF-8'?><Response/>", content_type="text/xml")
