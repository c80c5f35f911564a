"""The SendGrid v3 mail send API, as the ``sendgrid`` SDK calls it.

Each recipient is recorded with their own personalization of the request (whose
``substitutions`` SendGrid writes over their tags in the subject and content) and
their subject as substituted. The rest of the call (sender, subject, categories,
content: the HTML alone is several kilobytes) is the same for all of its
recipients and stored once, with the first recipient, whose row also keeps the
text as that recipient read it (the outbox lists and searches it for every
recipient of the call); the other rows' ``request`` name that row's
``provider_message_id`` under ``SandboxMessage.CONTENT_OF``. ``channels.selectors.sandbox_request``
puts a recipient's share of the call back together, ``email_as_received`` shows
the email as they got it. Stored a thousand times over, the call cost the
database more than everything else a send does.
"""

from __future__ import annotations

import base64
import json
import re
import uuid

from django.conf import settings
from django.db import connection, transaction
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


def _substitute(text: str, substitutions: dict[str, str]) -> str:
    for tag, value in substitutions.items():
        text = text.replace(tag, value)
    return text


# What the outbox keeps of each recipient (every other SandboxMessage field keeps its default).
_RECORDED = ("to_address", "from_address", "subject", "body", "callback_url", "request", "outcome")


def _record(provider_message_ids: list[str], rows: list[dict]) -> list[int]:
    """Store one outbox row per recipient; returns their ids.

    On PostgreSQL one ``INSERT ... SELECT`` from a single JSON parameter: ``bulk_create``
    binds eleven parameters per row, and splitting that query costs more than the
    rest of the request. Elsewhere (the embedded SQLite default) ``bulk_create``.
    """
    if connection.vendor != "postgresql":
        recorded = SandboxMessage.objects.bulk_create(
            SandboxMessage(provider="sendgrid", provider_message_id=pmid, **row)
            for pmid, row in zip(provider_message_ids, rows, strict=True)
        )
        return [row.pk for row in recorded]
    columns = ", ".join(_RECORDED)
    sql = (
        f"INSERT INTO {SandboxMessage._meta.db_table} (provider, provider_message_id, {columns}, created_at) "  # noqa: S608 - names from the model, values bound
        f"SELECT 'sendgrid', v.provider_message_id, {', '.join(f'v.{c}' for c in _RECORDED)}, now() "
        "FROM jsonb_to_recordset(%s::jsonb) AS v(provider_message_id text, to_address text, from_address text, "
        "subject text, body text, callback_url text, request jsonb, outcome text) RETURNING id"
    )
    payload = [{"provider_message_id": pmid, **row} for pmid, row in zip(provider_message_ids, rows, strict=True)]
    with connection.cursor() as cursor:
        cursor.execute(sql, [json.dumps(payload)])
        return [pk for (pk,) in cursor.fetchall()]


def _substitutions_error(personalization: dict, index: int) -> JsonResponse | None:
    substitutions = personalization.get("substitutions", {})
    field = f"personalizations.{index}.substitutions"
    if not isinstance(substitutions, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in substitutions.items()
    ):
        return _sendgrid_error(400, "Substitutions must be an object of string keys and string values.", field)
    if sum(len(k.encode()) + len(v.encode()) for k, v in substitutions.items()) > 10_000:
        return _sendgrid_error(400, "The total size of substitutions may not exceed 10,000 bytes.", field)
    return None


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
        if error := _substitutions_error(p, i):
            return error

    x_message_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    callback_url = settings.CHORUS_PUBLIC_URL + reverse("webhooks:sendgrid-events")
    body = contents.get("text/plain") or contents.get("text/html", "")
    first = f"{x_message_id}.sandbox.0"
    rows = []
    for p in personalizations:
        request = (
            {"personalizations": [p], SandboxMessage.CONTENT_OF: first} if rows else {**mail, "personalizations": [p]}
        )
        substitutions = p.get("substitutions") or {}
        for to in p["to"]:
            email = to["email"]
            rows.append(
                {
                    "to_address": email,
                    "from_address": sender,
                    "subject": _substitute(p.get("subject") or mail.get("subject", ""), substitutions),
                    "body": "" if rows else _substitute(body, substitutions),
                    "callback_url": callback_url,
                    "request": request,
                    "outcome": "bounce" if email.split("@")[0].lower().startswith("bounce") else "delivered",
                }
            )
    with transaction.atomic():
        ids = _record([f"{x_message_id}.sandbox.{n}" for n in range(len(rows))], rows)
        emit_after_commit(ids)
    return HttpResponse(status=202, headers={"X-Message-Id": x_message_id})
