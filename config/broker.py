"""The embedded default's ``filesystem://`` broker, made safe for fast polling.

kombu's filesystem transport writes a message file in place while a consumer
may already be moving and reading it (its lock is advisory and the reader does
not take it), so a consumer can read a half-written file and crash the worker.
Here each message is written under a temporary name the consumers ignore and
renamed into place atomically, so a consumer only ever sees whole messages.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic

from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        temporary = os.path.join(self.data_folder_out, f".{name}.part")  # not "<queue>.msg": never picked up
        try:
            with open(temporary, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(temporary, final)
        except OSError as exc:
            raise filesystem.ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel


def register() -> None:
    """Make ``filesystem://`` URLs use this transport (producers and workers alike)."""
    TRANSPORT_ALIASES["filesystem"] = "config.broker:Transport"
