"""The sandbox outbox: what the provider emulator received, newest first."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.cache import patch_vary_headers

from channels.models import SandboxMessage
from channels.sandbox import TWILIO_REFUSED

OUTBOX_PER_PAGE = 50


@login_required
def outbox_list(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("channels.view_sandboxmessage"):
        raise PermissionDenied
    page = Paginator(SandboxMessage.objects.all(), OUTBOX_PER_PAGE).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "sandbox_enabled": settings.CHORUS_SANDBOX,
        "refused_numbers": sorted(TWILIO_REFUSED),
    }
    fragment = request.htmx and not request.htmx.history_restore_request
    response = render(request, "channels/_outbox.html" if fragment else "channels/outbox.html", context)
    patch_vary_headers(response, ["HX-Request"])
    return response
