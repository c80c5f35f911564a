"""Mastodon through its REST API, with the ``Mastodon.py`` SDK.

The brand's account publishes campaign posts (public, with an image and its
alt text) and sends direct messages: a status with ``visibility="direct"``
that mentions the customer (``@user@host``). Replies and mentions come back as
the account's "mention" notifications.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from datetime import UTC, datetime
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.utils.html import strip_tags
from mastodon import Mastodon
from mastodon.errors import (
    MastodonAPIError,
    MastodonIllegalArgumentError,
    MastodonNetworkError,
    MastodonNotFoundError,
    MastodonRatelimitError,
)

from channels.adapters.base import MAX_RETRY_AFTER, ChannelError, Outbound, SendResult, retry_after_seconds
from channels.adapters.social import Engagement, Mention, Post, Published, SocialAdapter

# Bad credentials, a revoked token or a suspended account: nothing of the batch can go.
ACCOUNT_STATUSES = {401, 403}
NOTIFICATIONS_PAGE = 40  # Mastodon's default page; its maximum is 80
NOTIFICATIONS_MAX_PAGES = 10


class _Session(requests.Session):
    """Keeps the last answer's headers: the SDK's rate-limit error drops them, and Retry-After lives there."""

    last_headers: dict = {}

    def request(self, *args, **kwargs):
        self.last_headers = {}
        response = super().request(*args, **kwargs)
        self.last_headers = dict(response.headers)
        return response


def _retry_after(headers: dict) -> float | None:
    """``Retry-After``, else ``X-RateLimit-Reset``, which Mastodon sends as an ISO 8601 time."""
    seconds = retry_after_seconds(headers)
    if seconds is not None:
        return seconds
    reset = {k.lower(): v for k, v in headers.items()}.get("x-ratelimit-reset")
    try:
        at = datetime.fromisoformat(str(reset).replace("Z", "+00:00"))
    except ValueError:
        return None
    return min(max((at - datetime.now(UTC)).total_seconds(), 0.0), MAX_RETRY_AFTER)


def mastodon_error(exc: Exception, headers: dict | None = None) -> ChannelError:
    """The ``ChannelError`` for a failed Mastodon call.

    422 (validation, e.g. over 500 characters), 401/403 (token), 404 and other
    4xx are permanent; 429, 5xx and network errors are transient.
    """
    if isinstance(exc, MastodonRatelimitError):
        return ChannelError("Mastodon 429: rate limited", code="429", retry_after=_retry_after(headers or {}))
    if isinstance(exc, MastodonNetworkError):
        return ChannelError(f"Mastodon unreachable: {exc}")
    if isinstance(exc, MastodonIllegalArgumentError):
        return ChannelError(f"Mastodon refused the request before sending: {exc}", permanent=True, code="invalid")
    status = exc.args[1] if isinstance(exc, MastodonAPIError) and len(exc.args) > 1 else None
    status = status if isinstance(status, int) else 0
    detail = (exc.args[3] if len(exc.args) > 3 else None) or (exc.args[2] if len(exc.args) > 2 else None) or str(exc)
    transient = status == 429 or status >= 500 or status == 0
    return ChannelError(
        f"Mastodon {status or 'error'}: {detail}",
        permanent=not transient,
        code=str(status),
        retry_after=_retry_after(headers or {}) if transient else None,
    )


def _text(content: str) -> str:
    """A status's HTML content as plain text (paragraphs and line breaks kept as newlines)."""
    content = content.replace("<br>", "\n").replace("<br />", "\n").replace("</p><p>", "\n\n")
    return html.unescape(strip_tags(content)).strip()


class MastodonAdapter(SocialAdapter):
    channel = "mastodon"
    provider = "mastodon"

    def __init__(self) -> None:
        self.session = _Session()
        self.client = Mastodon(
            access_token=settings.MASTODON_ACCESS_TOKEN,
            api_base_url=settings.MASTODON_API_BASE_URL,
            request_timeout=settings.CHORUS_PROVIDER_TIMEOUT,
            # Never sleep in a worker: a 429 becomes a retry with the provider's wait.
            ratelimit_method="throw",
            session=self.session,
        )

    def close(self) -> None:
        self.session.close()

    def _call(self, method, *args, **kwargs):
        try:
            return method(*args, **kwargs)
        except (MastodonAPIError, MastodonNetworkError, MastodonRatelimitError, MastodonIllegalArgumentError) as exc:
            raise mastodon_error(exc, self.session.last_headers) from exc

    def send(self, batch: Sequence[Outbound]) -> list[SendResult]:
        """Direct messages: each a status visible only to the customer it mentions."""
        results: list[SendResult] = []
        for msg in batch:
            try:
                status = self._call(
                    self.client.status_post,
                    f"{msg.to} {msg.body}",
                    visibility="direct",
                    # A retried task that already got through gets the same status back, not a second DM.
                    idempotency_key=f"chorus-message-{msg.message_id}",
                )
            except ChannelError as error:
                if error.permanent and error.code not in {str(s) for s in ACCOUNT_STATUSES}:
                    results.append(SendResult(msg.message_id, error=error))
                    continue
                if not results:
                    raise
                # Part of the batch went out: report the rest, never make the caller resend it all.
                results.extend(SendResult(rest.message_id, error=error) for rest in batch[len(results) :])
                break
            results.append(SendResult(msg.message_id, provider_message_id=str(status["id"])))
        return results

    def publish(self, post: Post) -> Published:
        media = None
        if post.image:
            # synchronous: a status cannot attach media the server is still processing.
            media = self._call(
                self.client.media_post,
                io.BytesIO(post.image),
                mime_type=post.image_type,
                description=post.image_alt or None,
                file_name=post.image_name or None,
                synchronous=True,
            )
        status = self._call(
            self.client.status_post,
            post.text,
            media_ids=[media] if media else None,
            visibility="public",
            idempotency_key=post.key,
        )
        return Published(post_id=str(status["id"]), url=status.get("url") or status.get("uri") or "")

    def engagement(self, post_ids: Sequence[str]) -> dict[str, Engagement]:
        counts = {}
        for post_id in post_ids:
            try:
                status = self.client.status(post_id)
            except MastodonNotFoundError:
                continue  # deleted on the network
            except (MastodonAPIError, MastodonNetworkError, MastodonRatelimitError) as exc:
                raise mastodon_error(exc, self.session.last_headers) from exc
            counts[post_id] = Engagement(
                likes=status.get("favourites_count") or 0,
                reposts=status.get("reblogs_count") or 0,
                replies=status.get("replies_count") or 0,
            )
        return counts

    def _handle(self, account: dict) -> str:
        """``@user@host`` for any account: local accounts' ``acct`` has no host."""
        acct = str(account.get("acct") or account.get("username") or "")
        if "@" not in acct:
            host = urlsplit(str(account.get("url") or "")).hostname or urlsplit(self.client.api_base_url).hostname
            acct = f"{acct}@{host}"
        return f"@{acct}"

    def mentions(self, *, since: datetime) -> list[Mention]:
        found: list[Mention] = []
        max_id = None
        for _ in range(NOTIFICATIONS_MAX_PAGES):
            page = self._call(self.client.notifications, types=["mention"], limit=NOTIFICATIONS_PAGE, max_id=max_id)
            for notification in page:
                status = notification.get("status")
                if notification.get("type") != "mention" or not status:
                    continue
                at = status.get("created_at") or notification.get("created_at")
                if at < since:
                    return found
                in_reply_to = str(status.get("in_reply_to_id") or "")
                found.append(
                    Mention(
                        id=str(status["id"]),
                        kind="reply" if in_reply_to else "mention",
                        author=self._handle(notification["account"]),
                        text=_text(status.get("content") or ""),
                        url=status.get("url") or status.get("uri") or "",
                        at=at,
                        in_reply_to=in_reply_to,
                        payload={
                            "notification_id": str(notification["id"]),
                            "status_id": str(status["id"]),
                            "account": notification["account"].get("acct"),
                            "in_reply_to_id": in_reply_to or None,
                            "content": status.get("content") or "",
                            "url": status.get("url") or "",
                            "created_at": at.isoformat(),
                        },
                    )
                )
            if len(page) < NOTIFICATIONS_PAGE:
                break
            max_id = page[-1]["id"]
        return found
