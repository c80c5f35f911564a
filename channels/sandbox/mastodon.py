"""Mastodon's REST API, as the ``Mastodon.py`` SDK calls it: one account, its statuses, media and mentions.

The access token is ``MASTODON_ACCESS_TOKEN``; statuses are limited to 500
characters as Mastodon counts them (a link is 23, ``@user@host`` counts as
``@user``) and refused with Mastodon's 422. Each status is recorded as a
``SandboxMessage`` (to the mentioned handle for a direct message, else
"public"). ``Idempotency-Key`` returns the status already created with that key.
Media ids carry the attachment itself (signed), so no state lives in one process.
Engagement and replies are made up by ``channels.sandbox.engagement``.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from datetime import UTC, datetime

from django.conf import settings
from django.core import signing
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from campaigns.content.checks import mastodon_length
from channels.models import SandboxMessage
from channels.sandbox import engagement
from channels.sandbox.faults import fault_for

PROVIDER = "mastodon"
USERNAME = "chorus"
VERSION = "4.3.0"
MAX_CHARACTERS = 500
MAX_MEDIA = 4
MAX_DESCRIPTION = 1500
MAX_MEDIA_BYTES = 16 * 1024 * 1024
VISIBILITIES = ("public", "unlisted", "private", "direct")
MENTION_RE = re.compile(r"(?<![\w/])@([a-z0-9_]{1,30})@([a-z0-9-]+(?:\.[a-z0-9-]+)+)", re.IGNORECASE)
_MEDIA_SALT = "chorus.sandbox.mastodon.media"


def _error(status: int, message: str, headers: dict | None = None) -> JsonResponse:
    response = JsonResponse({"error": message}, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _refusal(request: HttpRequest) -> JsonResponse | None:
    """401 without the account's token; a configured fault (429 with Mastodon's rate-limit headers, or 5xx)."""
    if request.headers.get("Authorization") != f"Bearer {settings.MASTODON_ACCESS_TOKEN}":
        return _error(401, "The access token is invalid")
    fault = fault_for(PROVIDER)
    if fault is None:
        return None
    if fault.status != 429:
        return _error(fault.status, "We're sorry, but something went wrong on our end.")
    wait = fault.retry_after if fault.retry_after is not None else 300
    reset = datetime.fromtimestamp(time.time() + wait, tz=UTC).isoformat(timespec="milliseconds")
    headers = {
        "X-RateLimit-Limit": "300",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": reset.replace("+00:00", "Z"),
    }
    if fault.retry_after is not None:
        headers["Retry-After"] = str(fault.retry_after)
    return _error(429, "Too many requests", headers)


def _base(request: HttpRequest) -> str:
    return request.build_absolute_uri(reverse("sandbox:mastodon-instance")).removesuffix("/api/v1/instance")


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _new_id() -> str:
    """A snowflake like Mastodon's (milliseconds, then random bits), leaving room for made-up reply ids."""
    return str((int(time.time() * 1000) << 16) | (secrets.randbelow(4096) << 4))


def _account(request: HttpRequest, handle: str | None = None) -> dict:
    """The sandbox account (``handle`` None) or a remote one (``@user@host``)."""
    base = _base(request)
    if handle is None:
        username, acct, url = USERNAME, USERNAME, f"{base}/@{USERNAME}"
    else:
        username, host = handle.lstrip("@").split("@", 1)
        acct, url = f"{username}@{host}", f"https://{host}/@{username}"
    return {
        "id": str(engagement.seed(acct) % 10**12),
        "username": username,
        "acct": acct,
        "display_name": username,
        "locked": False,
        "bot": False,
        "group": False,
        "discoverable": True,
        "created_at": "2024-01-01T00:00:00.000Z",
        "note": "",
        "url": url,
        "avatar": f"{base}/avatar.png",
        "avatar_static": f"{base}/avatar.png",
        "header": f"{base}/header.png",
        "header_static": f"{base}/header.png",
        "followers_count": 1200,
        "following_count": 80,
        "statuses_count": SandboxMessage.objects.filter(provider=PROVIDER).count() if handle is None else 10,
        "last_status_at": None,
        "emojis": [],
        "fields": [],
    }


def _media(request: HttpRequest, media_id: str, attachment: dict) -> dict:
    url = f"{_base(request)}/media/{attachment['name']}"
    return {
        "id": media_id,
        "type": attachment["type"],
        "url": url,
        "preview_url": url,
        "remote_url": None,
        "text_url": None,
        "description": attachment["description"],
        "blurhash": "UBL_:rOpGG-oBUNG,qRj2so|=eE1w^n4S5NH",
        "meta": {"original": {"width": 1200, "height": 630, "size": "1200x630", "aspect": 1.9047619}},
    }


def _status(request: HttpRequest, message: SandboxMessage, now: datetime) -> dict:
    """A recorded status as Mastodon shows it, with made-up counts."""
    base, data = _base(request), message.request
    likes, reposts = engagement.counts(message.provider_message_id, message.created_at, now)
    replies = _replies(message, now, engagement.fans("mastodon_handle"))
    mentions = [_account(request, handle) for handle in data.get("mentions", [])]
    return {
        "id": message.provider_message_id,
        "uri": f"{base}/users/{USERNAME}/statuses/{message.provider_message_id}",
        "url": f"{base}/@{USERNAME}/{message.provider_message_id}",
        "created_at": _iso(message.created_at),
        "account": _account(request),
        "content": f"<p>{escape(message.body)}</p>",
        "visibility": data.get("visibility", "public"),
        "sensitive": False,
        "spoiler_text": "",
        "language": data.get("language") or "en",
        "in_reply_to_id": data.get("in_reply_to_id"),
        "in_reply_to_account_id": None,
        "reblog": None,
        "poll": None,
        "card": None,
        "application": {"name": "Chorus", "website": None},
        "media_attachments": [_media(request, m["id"], m) for m in data.get("media", [])],
        "mentions": [{"id": m["id"], "username": m["username"], "acct": m["acct"], "url": m["url"]} for m in mentions],
        "tags": [],
        "emojis": [],
        "favourites_count": likes,
        "reblogs_count": reposts,
        "replies_count": sum(1 for r in replies if r.kind == "reply"),
        "edited_at": None,
    }


def _replies(message: SandboxMessage, now: datetime, fans: list[str]) -> list[engagement.Reply]:
    direct = message.request.get("visibility") == "direct"
    return engagement.replies(
        message.provider_message_id,
        message.created_at,
        now,
        fans=fans,
        stranger=lambda n: f"@reader{n}@fediverse.example",
        direct_to=(message.request.get("mentions") or [""])[0] if direct else "",
    )


def _reply_status(request: HttpRequest, message: SandboxMessage, reply: engagement.Reply) -> dict:
    """A made-up reply to (or mention in the thread of) a recorded status, from ``reply.author``."""
    status_id = str(int(message.provider_message_id) + 1 + reply.index)
    account = _account(request, reply.author)
    host = account["url"].split("/")[2]
    own = (
        f'<span class="h-card"><a href="{_base(request)}/@{USERNAME}" class="u-url mention">'
        f"@<span>{USERNAME}</span></a></span>"
    )
    return {
        "id": status_id,
        "uri": f"https://{host}/users/{account['username']}/statuses/{status_id}",
        "url": f"https://{host}/@{account['username']}/{status_id}",
        "created_at": _iso(reply.at),
        "account": account,
        "content": f"<p>{own} {escape(reply.text)}</p>",
        "visibility": "direct" if message.request.get("visibility") == "direct" else "public",
        "sensitive": False,
        "spoiler_text": "",
        "language": "en",
        "in_reply_to_id": message.provider_message_id if reply.kind == "reply" else None,
        "in_reply_to_account_id": _account(request)["id"] if reply.kind == "reply" else None,
        "reblog": None,
        "poll": None,
        "card": None,
        "application": None,
        "media_attachments": [],
        "mentions": [{"id": "1", "username": USERNAME, "acct": USERNAME, "url": f"{_base(request)}/@{USERNAME}"}],
        "tags": [],
        "emojis": [],
        "favourites_count": 0,
        "reblogs_count": 0,
        "replies_count": 0,
        "edited_at": None,
    }


# --- instance and account --------------------------------------------------------


@require_GET
def mastodon_instance_v1(request: HttpRequest) -> HttpResponse:
    return JsonResponse(
        {
            "uri": request.get_host(),
            "title": "Chorus sandbox",
            "short_description": "The Chorus provider emulator.",
            "description": "The Chorus provider emulator.",
            "email": "sandbox@chorus.invalid",
            "version": VERSION,
            "urls": {},
            "stats": {"user_count": 1, "status_count": 0, "domain_count": 1},
            "languages": ["en"],
            "registrations": False,
            "approval_required": False,
            "invites_enabled": False,
            "configuration": _configuration(),
            "contact_account": None,
            "rules": [],
        }
    )


def _configuration() -> dict:
    return {
        "statuses": {
            "max_characters": MAX_CHARACTERS,
            "max_media_attachments": MAX_MEDIA,
            "characters_reserved_per_url": 23,
        },
        "media_attachments": {
            "supported_mime_types": ["image/jpeg", "image/png", "image/gif", "image/webp"],
            "image_size_limit": MAX_MEDIA_BYTES,
            "description_limit": MAX_DESCRIPTION,
        },
    }


@require_GET
def mastodon_instance_v2(request: HttpRequest) -> HttpResponse:
    return JsonResponse(
        {
            "domain": request.get_host(),
            "title": "Chorus sandbox",
            "version": VERSION,
            "source_url": "https://github.com/mastodon/mastodon",
            "description": "The Chorus provider emulator.",
            "usage": {"users": {"active_month": 1}},
            "languages": ["en"],
            "configuration": _configuration(),
            "registrations": {"enabled": False, "approval_required": False, "message": None},
            "api_versions": {"mastodon": 2},
            "contact": {"email": "sandbox@chorus.invalid", "account": None},
            "rules": [],
        }
    )


@require_GET
def mastodon_verify_credentials(request: HttpRequest) -> HttpResponse:
    if refusal := _refusal(request):
        return refusal
    return JsonResponse(_account(request))


# --- media ------------------------------------------------------------------------


@csrf_exempt
@require_POST
def mastodon_media_create(request: HttpRequest) -> HttpResponse:
    if refusal := _refusal(request):
        return refusal
    upload = request.FILES.get("file")
    if upload is None:
        return _error(422, "Validation failed: File can't be blank")
    kind = (upload.content_type or "").split("/")[0]
    if kind not in ("image", "video", "audio") or upload.size > MAX_MEDIA_BYTES:
        return _error(422, "Validation failed: File content type is invalid, File file size must be less than 16 MB")
    description = request.POST.get("description", "")
    if len(description) > MAX_DESCRIPTION:
        return _error(422, f"Validation failed: Description is too long (maximum is {MAX_DESCRIPTION} characters)")
    attachment = {
        "type": "gifv" if upload.content_type == "image/gif" else kind,
        "name": upload.name,
        "mime": upload.content_type,
        "size": upload.size,
        "description": description or None,
    }
    media_id = signing.dumps(attachment, salt=_MEDIA_SALT, compress=True)
    return JsonResponse(_media(request, media_id, attachment))


def _attachment(media_id: str) -> dict | None:
    try:
        return signing.loads(media_id, salt=_MEDIA_SALT)
    except signing.BadSignature:
        return None


@require_GET
def mastodon_media_detail(request: HttpRequest, media_id: str) -> HttpResponse:
    if refusal := _refusal(request):
        return refusal
    attachment = _attachment(media_id)
    if attachment is None:
        return _error(404, "Record not found")
    return JsonResponse(_media(request, media_id, attachment))


# --- statuses -------------------------------------------------------------------------


def _params(request: HttpRequest) -> tuple[dict, list[str]]:
    """The status form (the SDK posts a form, or JSON with a poll) and its media ids."""
    if request.content_type == "application/json":
        data = json.loads(request.body or b"{}")
        return data, [str(m) for m in data.get("media_ids") or []]
    return request.POST.dict(), request.POST.getlist("media_ids[]")


@csrf_exempt
def mastodon_statuses(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return _error(405, "Method not allowed")
    if refusal := _refusal(request):
        return refusal
    try:
        data, media_ids = _params(request)
    except ValueError:
        return _error(400, "Error while parsing request body")
    key = request.headers.get("Idempotency-Key", "")
    if key and (earlier := SandboxMessage.objects.filter(provider=PROVIDER, request__idempotency_key=key).first()):
        return JsonResponse(_status(request, earlier, timezone.now()))
    text = data.get("status", "") or ""
    visibility = data.get("visibility") or "public"
    if visibility not in VISIBILITIES:
        return _error(422, "Validation failed: Visibility is not included in the list")
    if not text.strip() and not media_ids:
        return _error(422, "Validation failed: Text can't be blank")
    if mastodon_length(text) > MAX_CHARACTERS:
        return _error(422, f"Validation failed: Text character limit of {MAX_CHARACTERS} exceeded")
    if len(media_ids) > MAX_MEDIA:
        return _error(422, f"Validation failed: Media attachments cannot be more than {MAX_MEDIA}")
    media = []
    for media_id in media_ids:
        attachment = _attachment(media_id)
        if attachment is None:
            return _error(422, "Validation failed: Media attachments are invalid")
        media.append({**attachment, "id": media_id})
    mentions = [f"@{user.lower()}@{host.lower()}" for user, host in MENTION_RE.findall(text)]
    status_id = _new_id()
    message = SandboxMessage.objects.create(
        provider=PROVIDER,
        provider_message_id=status_id,
        to_address=(", ".join(mentions) or "nobody")[:254] if visibility == "direct" else "public",
        from_address=f"@{USERNAME}@{request.get_host()}",
        body=text,
        request={
            "status": text,
            "visibility": visibility,
            "media_ids": media_ids,
            "media": media,
            "mentions": mentions,
            "in_reply_to_id": data.get("in_reply_to_id"),
            "language": data.get("language"),
            "idempotency_key": key or None,
        },
        outcome=visibility,
    )
    return JsonResponse(_status(request, message, timezone.now()))


def _recorded(status_id: str) -> SandboxMessage | None:
    return SandboxMessage.objects.filter(provider=PROVIDER, provider_message_id=status_id).first()


@require_GET
def mastodon_status_detail(request: HttpRequest, status_id: str) -> HttpResponse:
    if refusal := _refusal(request):
        return refusal
    message = _recorded(status_id)
    if message is None:
        return _error(404, "Record not found")
    return JsonResponse(_status(request, message, timezone.now()))


@require_GET
def mastodon_status_context(request: HttpRequest, status_id: str) -> HttpResponse:
    if refusal := _refusal(request):
        return refusal
    message = _recorded(status_id)
    if message is None:
        return _error(404, "Record not found")
    replies = _replies(message, timezone.now(), engagement.fans("mastodon_handle"))
    return JsonResponse(
        {"ancestors": [], "descendants": [_reply_status(request, message, r) for r in replies if r.kind == "reply"]}
    )


# --- notifications ----------------------------------------------------------------------


@require_GET
def mastodon_notifications(request: HttpRequest) -> HttpResponse:
    """The account's mentions (replies to its statuses are mentions too), newest first, paged by id."""
    if refusal := _refusal(request):
        return refusal
    types = request.GET.getlist("types[]")
    excluded = request.GET.getlist("exclude_types[]")
    if (types and "mention" not in types) or "mention" in excluded:
        return JsonResponse([], safe=False)
    try:
        limit = min(max(int(request.GET.get("limit", 40)), 1), 80)
        max_id = int(request.GET["max_id"]) if request.GET.get("max_id") else None
        since_id = int(request.GET.get("since_id") or request.GET.get("min_id") or 0)
    except ValueError:
        return _error(422, "Validation failed: limit, max_id, since_id and min_id must be numbers")
    now = timezone.now()
    fans = engagement.fans("mastodon_handle")
    notifications = []
    recorded = SandboxMessage.objects.filter(provider=PROVIDER, created_at__gte=engagement.recent_since(now))
    for message in recorded.order_by("-created_at", "-id")[:500]:
        for reply in _replies(message, now, fans):
            status = _reply_status(request, message, reply)
            number = int(status["id"])
            if (max_id is not None and number >= max_id) or number <= since_id:
                continue
            notifications.append(
                {
                    "id": status["id"],
                    "type": "mention",
                    "created_at": status["created_at"],
                    "account": status["account"],
                    "status": status,
                }
            )
    notifications.sort(key=lambda n: int(n["id"]), reverse=True)
    return JsonResponse(notifications[:limit], safe=False)
