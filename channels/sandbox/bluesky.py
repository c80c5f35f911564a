"""Bluesky's XRPC API (a PDS and the AppView), as the ``atproto`` SDK calls it, for one account.

``com.atproto.server.createSession`` takes ``BLUESKY_HANDLE`` (or its DID)
and ``BLUESKY_APP_PASSWORD`` and hands out HS256 session JWTs; every other
method wants the access JWT as a bearer token, as a PDS does. Posts are
limited to 300 graphemes (and 3,000 bytes), facets must address the text's
UTF-8 bytes and images need an ``alt``; a breach is Bluesky's 400
``InvalidRequest``. Each post is recorded as a ``SandboxMessage`` to "public".
Engagement and replies are made up by ``channels.sandbox.engagement``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from campaigns.content.checks import graphemes
from channels.models import SandboxMessage
from channels.sandbox import engagement
from channels.sandbox.faults import fault_for

PROVIDER = "bluesky"
POST = "app.bsky.feed.post"
MAX_GRAPHEMES = 300
MAX_TEXT_BYTES = 3000
MAX_IMAGES = 4
MAX_BLOB_BYTES = 1_000_000
ACCESS_SECONDS = 2 * 3600
REFRESH_SECONDS = 90 * 86400
_B32_SORTABLE = "234567abcdefghijklmnopqrstuvwxyz"
_CODEC_DAG_CBOR, _CODEC_RAW = 0x71, 0x55
_IMAGE_MAGIC = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif", b"RIFF": "image/webp"}


class XrpcError(Exception):
    def __init__(self, status: int, error: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.error, self.message, self.headers = status, error, message, headers or {}

    def response(self) -> JsonResponse:
        response = JsonResponse({"error": self.error, "message": self.message}, status=self.status)
        for name, value in self.headers.items():
            response[name] = value
        return response


# --- identifiers ----------------------------------------------------------------------


def did_for(handle: str) -> str:
    """A stable did:plc for a handle (24 base32 characters, as PLC identifiers are)."""
    digest = base64.b32encode(hashlib.sha256(handle.lower().encode()).digest()).decode().lower()
    return f"did:plc:{digest[:24]}"


def cid_for(data: bytes, codec: int = _CODEC_DAG_CBOR) -> str:
    """A CIDv1 (sha2-256, base32) of ``data``: records use dag-cbor's codec, blobs raw."""
    raw = bytes([0x01, codec, 0x12, 0x20]) + hashlib.sha256(data).digest()
    return "b" + base64.b32encode(raw).decode().lower().rstrip("=")


def record_cid(record: dict) -> str:
    return cid_for(json.dumps(record, sort_keys=True, separators=(",", ":")).encode())


def tid(at: datetime, clock: int) -> str:
    """A record key: 53 bits of microseconds then 10 bits of clock id, base32-sortable."""
    value = (int(at.timestamp() * 1_000_000) << 10) | (clock % 1024)
    return "".join(_B32_SORTABLE[(value >> shift) & 31] for shift in range(60, -1, -5))


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- sessions -------------------------------------------------------------------------


def _key() -> bytes:
    return hashlib.sha256(f"chorus.sandbox.bluesky:{settings.SECRET_KEY}".encode()).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _jwt(claims: dict) -> str:
    signing_input = _b64(b'{"alg":"HS256","typ":"at+jwt"}') + "." + _b64(json.dumps(claims).encode())
    signature = hmac.new(_key(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _claims(token: str, scope: str) -> dict:
    """The claims of a session JWT we issued with ``scope``; XrpcError as a PDS answers otherwise."""
    try:
        header, payload, signature = token.split(".")
        expected = hmac.new(_key(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(_b64(expected), signature):
            raise ValueError("bad signature")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        raise XrpcError(400, "InvalidToken", "Token could not be verified") from None
    if claims.get("exp", 0) <= time.time():
        raise XrpcError(400, "ExpiredToken", "Token has expired")
    if claims.get("scope") != scope:
        raise XrpcError(400, "InvalidToken", "Bad token scope")
    return claims


def _bearer(request: HttpRequest, scope: str = "com.atproto.appPass") -> dict:
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Bearer "):
        raise XrpcError(401, "AuthenticationRequired", "Authentication Required")
    return _claims(auth.removeprefix("Bearer "), scope)


def _session(handle: str) -> dict:
    did, now = did_for(handle), int(time.time())
    return {
        "did": did,
        "handle": handle,
        "accessJwt": _jwt(
            {
                "scope": "com.atproto.appPass",
                "sub": did,
                "aud": "did:web:sandbox",
                "iat": now,
                "exp": now + ACCESS_SECONDS,
            }
        ),
        "refreshJwt": _jwt(
            {
                "scope": "com.atproto.refresh",
                "sub": did,
                "aud": "did:web:sandbox",
                "iat": now,
                "exp": now + REFRESH_SECONDS,
                "jti": base64.b32encode(hashlib.sha256(f"{did}{time.time_ns()}".encode()).digest()[:10]).decode(),
            }
        ),
        "active": True,
        "email": f"{handle}@sandbox.invalid",
        "emailConfirmed": True,
    }


def _fault() -> None:
    fault = fault_for(PROVIDER)
    if fault is None:
        return
    if fault.status == 429:
        wait = fault.retry_after if fault.retry_after is not None else 300
        headers = {
            "RateLimit-Limit": "5000",
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": str(int(time.time()) + wait),
            "RateLimit-Policy": "5000;w=3600",
        }
        if fault.retry_after is not None:
            headers["Retry-After"] = str(fault.retry_after)
        raise XrpcError(429, "RateLimitExceeded", "Rate Limit Exceeded", headers)
    raise XrpcError(fault.status, "InternalServerError", "Internal Server Error")


def create_session(request: HttpRequest) -> dict:
    data = _json(request)
    identifier = str(data.get("identifier", "")).lower().removeprefix("@")
    handle = settings.BLUESKY_HANDLE
    if identifier not in (handle.lower(), did_for(handle)) or data.get("password") != settings.BLUESKY_APP_PASSWORD:
        raise XrpcError(401, "AuthenticationRequired", "Invalid identifier or password")
    _fault()
    return _session(handle)


def refresh_session(request: HttpRequest) -> dict:
    _bearer(request, "com.atproto.refresh")
    _fault()
    return _session(settings.BLUESKY_HANDLE)


def get_session(request: HttpRequest) -> dict:
    _bearer(request)
    _fault()
    session = _session(settings.BLUESKY_HANDLE)
    return {k: session[k] for k in ("did", "handle", "active", "email", "emailConfirmed")}


# --- records and blobs ------------------------------------------------------------------


def _json(request: HttpRequest) -> dict:
    try:
        data = json.loads(request.body or b"{}")
    except ValueError:
        raise XrpcError(400, "InvalidRequest", "Request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise XrpcError(400, "InvalidRequest", "Request body must be a JSON object")
    return data


def upload_blob(request: HttpRequest) -> dict:
    _bearer(request)
    _fault()
    data = request.body
    if len(data) > MAX_BLOB_BYTES:
        raise XrpcError(
            400, "BlobTooLarge", f"This file is too large. It is {len(data)} bytes, maximum {MAX_BLOB_BYTES}."
        )
    mime = request.content_type or ""
    if not mime or mime in ("*/*", "application/octet-stream"):
        mime = next((m for magic, m in _IMAGE_MAGIC.items() if data.startswith(magic)), "application/octet-stream")
    return {"blob": {"$type": "blob", "ref": {"$link": cid_for(data, _CODEC_RAW)}, "mimeType": mime, "size": len(data)}}


def _validate_post(record: dict) -> None:
    def invalid(detail: str) -> XrpcError:
        return XrpcError(400, "InvalidRequest", f"Invalid {POST} record: {detail}")

    text = record.get("text")
    if not isinstance(text, str):
        raise invalid('Record must have the property "text"')
    if not isinstance(record.get("createdAt"), str):
        raise invalid('Record must have the property "createdAt"')
    if graphemes(text) > MAX_GRAPHEMES:
        raise invalid(f"Record/text must not be longer than {MAX_GRAPHEMES} graphemes")
    size = len(text.encode())
    if size > MAX_TEXT_BYTES:
        raise invalid(f"Record/text must not be longer than {MAX_TEXT_BYTES} characters")
    for i, facet in enumerate(record.get("facets") or []):
        index = facet.get("index") or {}
        start, end = index.get("byteStart"), index.get("byteEnd")
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= size):
            raise invalid(f"Record/facets/{i}/index must address the text's bytes (0 to {size})")
        if not facet.get("features"):
            raise invalid(f'Record/facets/{i} must have the property "features"')
    embed = record.get("embed")
    if embed and embed.get("$type") == "app.bsky.embed.images":
        images = embed.get("images") or []
        if not 1 <= len(images) <= MAX_IMAGES:
            raise invalid(f"Record/embed/images must have between 1 and {MAX_IMAGES} items")
        for i, image in enumerate(images):
            if not isinstance(image.get("alt"), str):
                raise invalid(f'Record/embed/images/{i} must have the property "alt"')
            if ((image.get("image") or {}).get("ref") or {}).get("$link") is None:
                raise invalid(f"Record/embed/images/{i}/image should be a blob ref")


def create_record(request: HttpRequest) -> dict:
    claims = _bearer(request)
    _fault()
    data = _json(request)
    handle = settings.BLUESKY_HANDLE
    if str(data.get("repo", "")).lower() not in (handle.lower(), claims["sub"]):
        raise XrpcError(400, "InvalidRequest", f"Input/repo {data.get('repo')!r} is not the session's repo")
    if data.get("collection") != POST:
        raise XrpcError(
            400, "InvalidRequest", f"The sandbox stores {POST} records only, not {data.get('collection')!r}"
        )
    record = data.get("record")
    if not isinstance(record, dict):
        raise XrpcError(400, "InvalidRequest", 'Input must have the property "record"')
    _validate_post(record)
    now = timezone.now()
    uri = f"at://{claims['sub']}/{POST}/{data.get('rkey') or tid(now, engagement.seed(str(time.time_ns())))}"
    if SandboxMessage.objects.filter(provider=PROVIDER, provider_message_id=uri).exists():
        raise XrpcError(400, "InvalidSwap", f"Record already exists at {uri}")
    SandboxMessage.objects.create(
        provider=PROVIDER,
        provider_message_id=uri,
        to_address="public",
        from_address=handle,
        body=record["text"],
        request=data,
        outcome="public",
        created_at=now,
    )
    cid = record_cid(record)
    return {"uri": uri, "cid": cid, "commit": {"cid": cid, "rev": tid(now, 0)}, "validationStatus": "valid"}


# --- reading: profiles, posts, threads, notifications ----------------------------------------


def _profile(handle: str) -> dict:
    return {"did": did_for(handle), "handle": handle, "displayName": handle.split(".")[0], "labels": []}


def get_profile(request: HttpRequest) -> dict:
    _bearer(request)
    _fault()
    actor = request.GET.get("actor", "")
    handle = settings.BLUESKY_HANDLE if actor in (settings.BLUESKY_HANDLE, did_for(settings.BLUESKY_HANDLE)) else actor
    if not handle or handle.startswith("did:"):
        raise XrpcError(400, "InvalidRequest", "Profile not found")
    posts = SandboxMessage.objects.filter(provider=PROVIDER).count() if handle == settings.BLUESKY_HANDLE else 3
    return {**_profile(handle), "followersCount": 860, "followsCount": 40, "postsCount": posts, "description": ""}


def _replies(message: SandboxMessage, now: datetime, fans: list[str]) -> list[engagement.Reply]:
    return engagement.replies(
        message.provider_message_id, message.created_at, now, fans=fans, stranger=lambda n: f"reader{n}.bsky.social"
    )


def _post_view(message: SandboxMessage, now: datetime, fans: list[str]) -> dict:
    record = message.request["record"]
    likes, reposts = engagement.counts(message.provider_message_id, message.created_at, now)
    view = {
        "uri": message.provider_message_id,
        "cid": record_cid(record),
        "author": _profile(message.from_address),
        "record": record,
        "replyCount": sum(1 for r in _replies(message, now, fans) if r.kind == "reply"),
        "repostCount": reposts,
        "likeCount": likes,
        "quoteCount": 0,
        "indexedAt": _iso(message.created_at),
        "labels": [],
    }
    embed = record.get("embed") or {}
    if embed.get("$type") == "app.bsky.embed.images":
        did = message.provider_message_id.split("/")[2]
        view["embed"] = {
            "$type": "app.bsky.embed.images#view",
            "images": [
                {
                    "thumb": f"https://cdn.bsky.app/img/feed_thumbnail/plain/{did}/{image['image']['ref']['$link']}",
                    "fullsize": f"https://cdn.bsky.app/img/feed_fullsize/plain/{did}/{image['image']['ref']['$link']}",
                    "alt": image["alt"],
                }
                for image in embed["images"]
            ],
        }
    return view


def _reply_record(message: SandboxMessage, reply: engagement.Reply) -> tuple[str, dict]:
    """The made-up post of ``reply`` (its at:// URI and record): a reply in the post's thread, or a mention."""
    record = {"$type": POST, "text": reply.text, "createdAt": _iso(reply.at), "langs": ["en"]}
    if reply.kind == "reply":
        parent = {"uri": message.provider_message_id, "cid": record_cid(message.request["record"])}
        record["reply"] = {"root": parent, "parent": parent}
    else:
        mention = f"@{message.from_address}"
        record["text"] = f"{mention} {reply.text}"
        record["facets"] = [
            {
                "index": {"byteStart": 0, "byteEnd": len(mention.encode())},
                "features": [{"$type": "app.bsky.richtext.facet#mention", "did": did_for(message.from_address)}],
            }
        ]
    clock = engagement.seed(message.provider_message_id) + reply.index
    return f"at://{did_for(reply.author)}/{POST}/{tid(reply.at, clock)}", record


def _recorded(uri: str) -> SandboxMessage | None:
    return SandboxMessage.objects.filter(provider=PROVIDER, provider_message_id=uri).first()


def get_posts(request: HttpRequest) -> dict:
    _bearer(request)
    _fault()
    uris = request.GET.getlist("uris")
    if len(uris) > 25:
        raise XrpcError(400, "InvalidRequest", "Params/uris must not have more than 25 elements")
    now, fans = timezone.now(), engagement.fans("bluesky_handle")
    found = {
        m.provider_message_id: m for m in SandboxMessage.objects.filter(provider=PROVIDER, provider_message_id__in=uris)
    }
    return {"posts": [_post_view(found[uri], now, fans) for uri in uris if uri in found]}


def get_post_thread(request: HttpRequest) -> dict:
    _bearer(request)
    _fault()
    uri = request.GET.get("uri", "")
    message = _recorded(uri)
    if message is None:
        raise XrpcError(400, "NotFound", f"Post not found: {uri}")
    now, fans = timezone.now(), engagement.fans("bluesky_handle")
    replies = []
    for reply in _replies(message, now, fans):
        if reply.kind != "reply":
            continue
        reply_uri, record = _reply_record(message, reply)
        post = {
            "uri": reply_uri,
            "cid": record_cid(record),
            "author": _profile(reply.author),
            "record": record,
            "replyCount": 0,
            "repostCount": 0,
            "likeCount": 0,
            "quoteCount": 0,
            "indexedAt": record["createdAt"],
            "labels": [],
        }
        replies.append({"$type": "app.bsky.feed.defs#threadViewPost", "post": post, "replies": []})
    return {
        "thread": {
            "$type": "app.bsky.feed.defs#threadViewPost",
            "post": _post_view(message, now, fans),
            "replies": replies,
        }
    }


def list_notifications(request: HttpRequest) -> dict:
    """Replies to and mentions of the account's recent posts, newest first; the cursor is an offset."""
    _bearer(request)
    _fault()
    try:
        limit = min(max(int(request.GET.get("limit", 50)), 1), 100)
        offset = int(request.GET.get("cursor") or 0)
    except ValueError:
        raise XrpcError(400, "InvalidRequest", "Params/limit and cursor must be integers") from None
    reasons = set(request.GET.getlist("reasons")) or {"reply", "mention"}
    now, fans = timezone.now(), engagement.fans("bluesky_handle")
    items = []
    recorded = SandboxMessage.objects.filter(provider=PROVIDER, created_at__gte=engagement.recent_since(now))
    for message in recorded.order_by("-created_at", "-id")[:500]:
        for reply in _replies(message, now, fans):
            if reply.kind not in reasons:
                continue
            uri, record = _reply_record(message, reply)
            items.append(
                {
                    "uri": uri,
                    "cid": record_cid(record),
                    "author": _profile(reply.author),
                    "reason": reply.kind,
                    "reasonSubject": message.provider_message_id,
                    "record": record,
                    "isRead": False,
                    "indexedAt": record["createdAt"],
                    "labels": [],
                }
            )
    items.sort(key=lambda n: (n["indexedAt"], n["uri"]), reverse=True)
    page = items[offset : offset + limit]
    answer = {"notifications": page, "seenAt": _iso(now)}
    if offset + limit < len(items):
        answer["cursor"] = str(offset + limit)
    return answer


METHODS: dict[str, tuple[str, Callable[[HttpRequest], dict]]] = {
    "com.atproto.server.createSession": ("POST", create_session),
    "com.atproto.server.refreshSession": ("POST", refresh_session),
    "com.atproto.server.getSession": ("GET", get_session),
    "com.atproto.repo.uploadBlob": ("POST", upload_blob),
    "com.atproto.repo.createRecord": ("POST", create_record),
    "app.bsky.actor.getProfile": ("GET", get_profile),
    "app.bsky.feed.getPosts": ("GET", get_posts),
    "app.bsky.feed.getPostThread": ("GET", get_post_thread),
    "app.bsky.notification.listNotifications": ("GET", list_notifications),
}


@csrf_exempt
def bluesky_xrpc(request: HttpRequest, nsid: str) -> HttpResponse:
    """One XRPC method: queries are GETs, procedures POSTs; errors are ``{"error", "message"}``."""
    if nsid not in METHODS:
        return XrpcError(501, "MethodNotImplemented", f"Method Not Implemented: {nsid}").response()
    method, handler = METHODS[nsid]
    if request.method != method:
        return XrpcError(
            400, "InvalidRequest", f"Incorrect HTTP method ({request.method}) expected {method}"
        ).response()
    try:
        return JsonResponse(handler(request))
    except XrpcError as exc:
        return exc.response()
