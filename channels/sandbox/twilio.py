"""The Twilio Messages API (SMS and WhatsApp), as the ``twilio`` SDK calls it."""

from __future__ import annotations

import base64
import re
import uuid

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from channels.models import SandboxMessage
from channels.sandbox.faults import Fault, fault_for, fault_headers
from channels.sandbox.playback import emit_after_commit

MESSAGING_SERVICE_RE = re.compile(r"^MG[0-9a-f]{32}$")
E164_RE = re.compile(r"^(whatsapp:)?\+[1-9]\d{6,14}$")
TWILIO_REFUSED = {
    "+15005550001": (21211, "The 'To' number +15005550001 is not a valid phone number."),
    "+15005550009": (21614, "'To' number +15005550009 is not a valid mobile number."),
}


def _twilio_error(status: int, code: int, message: str) -> JsonResponse:
    return JsonResponse(
        {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status},
        status=status,
    )


def _twilio_fault(fault: Fault) -> JsonResponse:
    code, message = (20429, "Too Many Requests") if fault.status == 429 else (20500, "Internal Server Error")
    response = _twilio_error(fault.status, code, message)
    for name, value in fault_headers(fault, "twilio").items():
        response[name] = value
    return response


@csrf_exempt
@require_POST
def twilio_messages_create(request: HttpRequest, account_sid: str) -> HttpResponse:
    auth = request.headers.get("Authorization", "")
    expected = base64.b64encode(f"{settings.TWILIO_ACCOUNT_SID}:{settings.TWILIO_AUTH_TOKEN}".encode()).decode()
    if auth != f"Basic {expected}" or account_sid != settings.TWILIO_ACCOUNT_SID:
        return _twilio_error(401, 20003, "Authenticate")
    if fault := fault_for("twilio"):
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
        emit_after_commit([recorded.pk])
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
