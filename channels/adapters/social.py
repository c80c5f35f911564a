"""The social network adapter interface: a channel adapter that also publishes posts and reads engagement.

A campaign's Mastodon or Bluesky step publishes one post on the brand's
account (``publish``); a periodic task reads the post's counts (``engagement``)
and the replies and mentions the account received (``mentions``). Errors are
``ChannelError`` as for sending: permanent when trying again cannot help.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from channels.adapters.base import Adapter


@dataclass(frozen=True)
class Post:
    """What to publish. ``key`` identifies the post across retries (an idempotency key where the network has one)."""

    key: str
    text: str
    image: bytes | None = None
    image_type: str = ""
    image_name: str = ""
    image_alt: str = ""


@dataclass(frozen=True)
class Published:
    post_id: str  # Mastodon status id, Bluesky at:// URI
    url: str
    cid: str = ""  # Bluesky's content id of the record


@dataclass(frozen=True)
class Engagement:
    likes: int
    reposts: int
    replies: int


@dataclass(frozen=True)
class Mention:
    """A reply to, or a mention of, the brand's account.

    ``id`` is stable across polls (Mastodon status id, Bluesky post URI): it is
    the dedupe key. ``in_reply_to`` is the post or direct message replied to
    (a ``post_id`` / provider message id of ours, or of someone else).
    """

    id: str
    kind: str  # "reply" or "mention"
    author: str  # the handle as the customer record keeps it: @user@host, or name.bsky.social
    text: str
    url: str
    at: datetime
    in_reply_to: str = ""
    payload: dict = field(default_factory=dict)


class SocialAdapter(Adapter):
    @abstractmethod
    def publish(self, post: Post) -> Published:
        """Publish ``post`` on the configured account; raises ``ChannelError``."""

    @abstractmethod
    def engagement(self, post_ids: Sequence[str]) -> dict[str, Engagement]:
        """Current counts of the given posts (those the network no longer has are left out)."""

    @abstractmethod
    def mentions(self, *, since: datetime) -> list[Mention]:
        """Replies to and mentions of the account since ``since``, newest first."""

    @abstractmethod
    def close(self) -> None:
        """Let go of the HTTP connections: a worker runs many tasks, and kept-alive sockets would pile up."""
