"""Made-up, deterministic engagement for the posts and direct messages the social sandboxes recorded.

Counts grow with a post's age, seeded by its id, so the same question always
gets the same answer and a later poll never sees fewer likes. Replies come
from customers' handles when there are customers with one (so a demo, or a
test, sees replies land on a timeline) and from made-up strangers:

- a public post has two replies as soon as it is published: the first from a
  customer (picked by the seed) if any has a handle on that network, the
  second from a stranger; then one more every ``REPLY_EVERY`` seconds, up to
  2-5 in all, every third one a mention of the account rather than a reply;
- a direct message is answered by its recipient, for one DM in two (by seed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from customers.models import Customer

REPLY_EVERY = 600
FANS_MAX = 100
RECENT_DAYS = 30  # what the notification endpoints look back over
TEXTS = (
    "Love this! 😍",
    "Is this available in Kraków?",
    "Just ordered one, thanks!",
    "Great deal 👏",
    "When does the sale end?",
    "Can it ship to Zürich?",
)


@dataclass(frozen=True)
class Reply:
    index: int
    at: datetime
    author: str  # "@user@host" on Mastodon, "name.bsky.social" on Bluesky
    text: str
    kind: str  # "reply" or "mention"


def seed(key: str) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest()[:12], 16)


def counts(key: str, created_at: datetime, now: datetime) -> tuple[int, int]:
    """(likes, reposts) of the post ``key`` at ``now``."""
    s = seed(key)
    minutes = max(0, int((now - created_at).total_seconds() // 60))
    return min(s % 5 + minutes * (1 + s % 3), 100_000), min((s >> 4) % 3 + minutes // 4, 100_000)


def fans(field: str) -> list[str]:
    """Customers' handles on a network (``mastodon_handle`` or ``bluesky_handle``): who may reply."""
    handles = Customer.objects.live().exclude(**{f"{field}__isnull": True}).order_by("pk")
    return list(handles.values_list(field, flat=True)[:FANS_MAX])


def replies(
    key: str,
    created_at: datetime,
    now: datetime,
    *,
    fans: list[str],
    stranger: Callable[[int], str],
    direct_to: str = "",
) -> list[Reply]:
    """The replies to ``key`` visible at ``now``; ``direct_to``: the recipient, if ``key`` is a DM."""
    s = seed(key)
    if direct_to:
        return [] if s % 2 else [Reply(0, created_at, direct_to, TEXTS[s % len(TEXTS)], "reply")]
    found = []
    for index in range(2 + s % 4):
        at = created_at + timedelta(seconds=0 if index < 2 else index * REPLY_EVERY)
        if at > now:
            break
        from_fan = fans and index % 2 == 0
        author = fans[(s + index) % len(fans)] if from_fan else stranger(s % 9000 + 1000 + index)
        kind = "mention" if index % 3 == 2 else "reply"
        found.append(Reply(index, at, author, TEXTS[(s + index) % len(TEXTS)], kind))
    return found


def recent_since(now: datetime) -> datetime:
    return now - timedelta(days=RECENT_DAYS)
