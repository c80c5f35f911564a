"""htmx helpers shared by the apps' views."""

from __future__ import annotations

from django.http import HttpRequest


def wants_fragment(request: HttpRequest) -> bool:
    """True when htmx asks for a partial; a history restore after a cache miss needs the whole page."""
    return bool(request.htmx) and not request.htmx.history_restore_request
