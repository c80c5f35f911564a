"""A development adapter: writes each message to the log instead of sending it.

Select it per channel, e.g. ``CHORUS_EMAIL_ADAPTER=channels.adapters.console.ConsoleAdapter``.
Nothing leaves the machine and no webhook ever comes back, so messages stay "sent".
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from channels.adapters.base import Adapter, Outbound, SendResult

logger = logging.getLogger(__name__)


class ConsoleAdapter(Adapter):
    channel = "any"
    provider = "console"

    def send(self, batch: Sequence[Outbound]) -> list[SendResult]:
        results = []
        for msg in batch:
            provider_message_id = f"console-{uuid.uuid4().hex}"
            lines = [
                f"To: {msg.to}",
                f"From: {msg.sender_name} <{msg.sender}>" if msg.sender_name else f"From: {msg.sender}",
            ]
            if msg.reply_to:
                lines.append(f"Reply-To: {msg.reply_to}")
            if msg.subject:
                lines.append(f"Subject: {msg.subject}")
            lines += [f"{name}: {value}" for name, value in msg.headers.items()]
            logger.info(
                "Message %s (%s), not sent (console adapter):\n%s\n\n%s",
                msg.message_id,
                provider_message_id,
                "\n".join(lines),
                msg.body,
            )
            results.append(SendResult(msg.message_id, provider_message_id=provider_message_id))
        return results
