"""Bluesky through the AT Protocol (XRPC), with the ``atproto`` SDK.

The brand's account (handle + app password) publishes campaign posts: text of
at most 300 graphemes, an image with its alt text (an uploaded blob embedded
as ``app.bsky.embed.images``), and a link facet for every URL in the text, so
links are clickable (facets address the text by UTF-8 byte offsets).
Replies and mentions come back through ``app.bsky.notification.listNotifications``.
Bluesky steps have no per-customer messages: ``send`` refuses them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

from atproto import Client, Request, models
from atproto_client.exceptions import (
    BadRequestError,
    LoginRequiredError,
    ModelError,
    NetworkError,
    RateLimitExceededError,
    RequestErrorBase,
    UnauthorizedError,
)
from atproto_client.models.common import XrpcError
from django.conf import settings

from channels.adapters.base import MAX_RETRY_AFTER, ChannelError, Outbound, SendResult
from channels.adapters.social import Engagement, Mention, Post, Published, SocialAdapter

# Trailing punctuation belongs to the sentence, not the link (as Bluesky's own app decides).
_URL = re.compile(r"https?://[^\s<>\"'`]+", re.IGNORECASE)
_TRAILING = ".,;:!?)]}'\""
GET_POSTS_MAX = 25  # app.bsky.feed.getPosts takes at most 25 URIs
NOTIFICATIONS_PAGE = 50
NOTIFICATIONS_MAX_PAGES = 10


def link_facets(text: str) -> list[models.AppBskyRichtextFacet.Main]:
    """One link facet per URL in ``text``, indexed by UTF-8 byte offsets (not characters)."""
    facets = []
    for match in _URL.finditer(text):
        url = match.group().rstrip(_TRAILING)
        start = len(text[: match.start()].encode())
        facets.append(
            models.AppBskyRichtextFacet.Main(
                index=models.AppBskyRichtextFacet.ByteSlice(byte_start=start, byte_end=start + len(url.encode())),
                features=[models.AppBskyRichtextFacet.Link(uri=url)],
            )
        )
    return facets


def _status(exc: RequestErrorBase) -> int:
    return exc.response.status_code if exc.response is not None else 0


def _detail(exc: RequestErrorBase) -> str:
    content = exc.response.content if exc.response is not None else None
    if isinstance(content, XrpcError):
        return f"{content.error}: {content.message}" if content.message else content.error
    return str(exc) or type(exc).__name__


def _retry_after(exc: RateLimitExceededError) -> float | None:
    """``Retry-After``, else Bluesky's ``RateLimit-Reset`` (a Unix time)."""
    seconds = exc.retry_after
    if seconds is None and exc.reset_at is not None:
        seconds = (exc.reset_at - datetime.now(UTC)).total_seconds()
    return None if seconds is None else min(max(seconds, 0.0), MAX_RETRY_AFTER)


def bluesky_error(exc: Exception) -> ChannelError:
    """The ``ChannelError`` for a failed XRPC call.

    400 (InvalidRequest, e.g. over 300 graphemes) and 401/403 (bad handle or app
    password) are permanent, as are other 4xx; 429, 5xx and network errors are transient.
    """
    if isinstance(exc, LoginRequiredError):
        return ChannelError(f"Bluesky: {exc}", permanent=True, code="401")
    if isinstance(exc, RateLimitExceededError):
        return ChannelError(f"Bluesky 429: {_detail(exc)}", code="429", retry_after=_retry_after(exc))
    if isinstance(exc, ModelError):
        return ChannelError(f"Bluesky answered something the SDK cannot read: {exc}")
    status = _status(exc) if isinstance(exc, RequestErrorBase) else 0
    if isinstance(exc, NetworkError) and status != 413:
        # Transport failures, and the statuses the SDK files with them (409, 502).
        return ChannelError(f"Bluesky unreachable: {_detail(exc) if status else exc!r}", code=str(status or ""))
    detail = _detail(exc) if isinstance(exc, RequestErrorBase) else str(exc)
    if isinstance(exc, BadRequestError) and "ExpiredToken" in detail:
        return ChannelError(f"Bluesky {status}: {detail}", code=str(status))  # a new session will do
    permanent = isinstance(exc, BadRequestError | UnauthorizedError) or 400 <= status < 500
    return ChannelError(f"Bluesky {status or 'error'}: {detail}", permanent=permanent, code=str(status))


def post_url(handle: str, uri: str) -> str:
    """The bsky.app address of the post at ``uri`` (``at://did/app.bsky.feed.post/rkey``)."""
    return f"https://bsky.app/profile/{handle}/post/{uri.rsplit('/', 1)[-1]}"


def _datetime(value: str | None) -> datetime:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(UTC)


class BlueskyAdapter(SocialAdapter):
    channel = "bluesky"
    provider = "bluesky"

    def __init__(self) -> None:
        self.client = Client(
            base_url=settings.BLUESKY_PDS_URL, request=Request(timeout=settings.CHORUS_PROVIDER_TIMEOUT)
        )
        self.handle = settings.BLUESKY_HANDLE
        self.password = settings.BLUESKY_APP_PASSWORD
        self._logged_in = False

    def close(self) -> None:
        self.client.request.close()

    def _call(self, method, *args, **kwargs):
        try:
            if not self._logged_in:
                self.client.login(self.handle, self.password)
                self._logged_in = True
            return method(*args, **kwargs)
        except (RequestErrorBase, LoginRequiredError, ModelError) as exc:
            raise bluesky_error(exc) from exc

    def send(self, batch: Sequence[Outbound]) -> list[SendResult]:
        error = ChannelError(
            "Bluesky steps publish a post; Chorus sends no Bluesky direct messages.", permanent=True, code="unsupported"
        )
        return [SendResult(msg.message_id, error=error) for msg in batch]

    def publish(self, post: Post) -> Published:
        embed = None
        if post.image:
            upload = self._call(
                self.client.com.atproto.repo.upload_blob,
                post.image,
                headers={"Content-Type": post.image_type or "application/octet-stream"},
            )
            embed = models.AppBskyEmbedImages.Main(
                images=[models.AppBskyEmbedImages.Image(alt=post.image_alt, image=upload.blob)]
            )
        created = self._call(self.client.send_post, post.text, embed=embed, facets=link_facets(post.text) or None)
        return Published(post_id=created.uri, cid=created.cid, url=post_url(self.handle, created.uri))

    def engagement(self, post_ids: Sequence[str]) -> dict[str, Engagement]:
        counts = {}
        for start in range(0, len(post_ids), GET_POSTS_MAX):
            answer = self._call(self.client.get_posts, list(post_ids[start : start + GET_POSTS_MAX]))
            for view in answer.posts:
                counts[view.uri] = Engagement(
                    likes=view.like_count or 0, reposts=view.repost_count or 0, replies=view.reply_count or 0
                )
        return counts

    def mentions(self, *, since: datetime) -> list[Mention]:
        found: list[Mention] = []
        cursor = None
        for _ in range(NOTIFICATIONS_MAX_PAGES):
            page = self._call(
                self.client.app.bsky.notification.list_notifications,
                {"limit": NOTIFICATIONS_PAGE, "reasons": ["reply", "mention"], "cursor": cursor},
            )
            for item in page.notifications:
                if item.reason not in ("reply", "mention"):
                    continue
                record = item.record
                at = _datetime(getattr(record, "created_at", None) or item.indexed_at)
                if at < since:
                    return found
                reply = getattr(record, "reply", None)
                # A reply anywhere in the thread of our post belongs to that post: its root.
                root = reply.root.uri if reply is not None else ""
                found.append(
                    Mention(
                        id=item.uri,
                        kind=item.reason,
                        author=item.author.handle,
                        text=getattr(record, "text", "") or "",
                        url=post_url(item.author.handle, item.uri),
                        at=at,
                        in_reply_to=root,
                        payload={
                            "uri": item.uri,
                            "cid": item.cid,
                            "reason": item.reason,
                            "author": {"did": item.author.did, "handle": item.author.handle},
                            "text": getattr(record, "text", "") or "",
                            "reply_root": root or None,
                            "reply_parent": reply.parent.uri if reply is not None else None,
                            "reason_subject": item.reason_subject,
                            "indexed_at": item.indexed_at,
                        },
                    )
                )
            cursor = page.cursor
            if not cursor or len(page.notifications) < NOTIFICATIONS_PAGE:
                break
        return found
