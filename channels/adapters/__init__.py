"""channel -> adapter, from ``settings.CHORUS_ADAPTERS`` (imported lazily)."""

from __future__ import annotations

from functools import cache

from django.conf import settings
from django.utils.module_loading import import_string

from channels.adapters.base import Adapter, ChannelError, Outbound, SendResult

__all__ = ["Adapter", "ChannelError", "Outbound", "SendResult", "adapter_for", "adapter_substitutes"]


@cache
def _adapter_class(path: str) -> type[Adapter]:
    return import_string(path)


def adapter_for(channel: str) -> Adapter:
    try:
        path = settings.CHORUS_ADAPTERS[channel]
    except KeyError:
        raise ChannelError(f"No adapter is configured for the {channel!r} channel.", permanent=True) from None
    return _adapter_class(path)()


def adapter_substitutes(channel: str) -> bool:
    """Whether the channel's provider fills in ``Outbound.substitutions`` itself (no adapter: False)."""
    path = settings.CHORUS_ADAPTERS.get(channel)
    return bool(path) and _adapter_class(path).substitutes
