"""The SendGrid v3 mail send API, as the ``sendgrid`` SDK calls it."""

from __future__ import annotations

import base64
import json
import re
import uuid

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from channels.models import SandboxMessage
from channels.sandbox.faults import Fault, fault_for, fault_headers
from channels.sandbox.playback import emit_after_commit

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _sendgrid_error(status: int, message: str, field: str | None = None) -> JsonResponse:
    return JsonResponse({"errors": [{"message": message, "field": field, "help": None}]}, status=status)


def _sendgrid_fault(fault: Fault) -> JsonResponse:
    message = "too many requests" if fault.status == 429 else "The server encountered an unexpected error."
    response = _sendgrid_error(fault.status, message)
    for name, value in fault_headers(fault, "sendgrid").items():
        response[name] = value
    return response


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
    if fault := fault_for("sendgrid"):
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
        emit_after_commit(ids)
    return HttpResponse(status=202, headers={"X-Message-Id": x_message_id})
