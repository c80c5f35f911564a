"""The channel adapter interface.

An adapter sends a batch of rendered messages through one provider and returns
one ``SendResult`` per message, in order. A failure of one message is reported
in its result; a failure of the whole call (provider down, bad credentials,
rate limited before anything went out) is raised as ``ChannelError``. Once some
messages of a batch have gone out, a later provider failure is reported in the
results of the messages not sent, never raised: raising would make the caller
retry messages that were already delivered.

``permanent`` says whether trying again can help: an invalid number is
permanent, a 429 or a timeout is not. ``retry_after`` is the wait in seconds the
provider asked for (``Retry-After`` / ``X-RateLimit-Reset``), if it said.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

# Longer waits than this are the provider's business, not a reason to park a message for hours.
MAX_RETRY_AFTER = 3600.0


class ChannelError(Exception):
    def __init__(self, message: str, *, permanent: bool = False, code: str = "", retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.code = code
        self.retry_after = retry_after


def retry_after_seconds(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """The wait a provider asked for, in seconds, or None when it did not say.

    ``Retry-After`` is either seconds or an HTTP date; ``X-RateLimit-Reset`` (SendGrid)
    is the Unix time at which the limit resets. Values are clamped to [0, MAX_RETRY_AFTER].
    """
    if not headers:
        return None
    lowered = {str(k).lower(): str(v).strip() for k, v in headers.items()}
    now = time.time() if now is None else now
    seconds = None
    if value := lowered.get("retry-after"):
        try:
            seconds = float(value)
        except ValueError:
            try:
                seconds = parsedate_to_datetime(value).timestamp() - now
            except (TypeError, ValueError, IndexError):
                seconds = None
    if seconds is None and (value := lowered.get("x-ratelimit-reset")):
        try:
            seconds = float(value) - now
        except ValueError:
            seconds = None
    if seconds is None:
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


@dataclass(frozen=True)
class Outbound:
    message_id: int
    to: str
    sender: str
    body: str
    subject: str = ""
    html: str = ""
    sender_name: str = ""
    reply_to: str = ""
    categories: tuple[str, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)
    # Tag -> this recipient's value, for adapters that substitute (``Adapter.substitutes``):
    # ``subject``, ``body`` and ``html`` then carry the tags, shared by every recipient.
    substitutions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SendResult:
    message_id: int
    provider_message_id: str | None = None
    error: ChannelError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Adapter(ABC):
    channel: str
    provider: str
    # True when the provider fills in ``Outbound.substitutions`` per recipient itself (SendGrid);
    # otherwise every message arrives with its own content written out.
    substitutes: bool = False

    def sender_of(self, msg: Outbound) -> str:
        """The sender the provider sees for ``msg`` (a rate limit is per this sender)."""
        return msg.sender

    @abstractmethod
    def send(self, batch: Sequence[Outbound]) -> list[SendResult]:
        """Send every message of ``batch``; one result per message, in order."""
