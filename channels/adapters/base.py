"""The channel adapter interface.

An adapter sends a batch of rendered messages through one provider and returns
one ``SendResult`` per message, in order. A failure of one message is reported
in its result; a failure of the whole call (provider down, bad credentials) is
raised as ``ChannelError``. ``permanent`` says whether trying again can help:
an invalid number is permanent, a 429 or a timeout is not.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field


class ChannelError(Exception):
    def __init__(self, message: str, *, permanent: bool = False, code: str = ""):
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.code = code


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

    @abstractmethod
    def send(self, batch: Sequence[Outbound]) -> list[SendResult]:
        """Send every message of ``batch``; one result per message, in order."""
