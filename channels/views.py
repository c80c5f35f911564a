"""Channel pages: the sandbox outbox (what the provider emulator received) and the failed deliveries."""

from __future__ import annotations

import json

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.utils.http import urlencode
from django.views.decorators.http import require_POST

from campaigns.content.sms import sms_info
from channels import selectors
from channels.models import SandboxMessage
from channels.sandbox import TWILIO_REFUSED
from channels.sandbox.playback import playback_plan
from channels.services import messages_retry
from config.htmx import wants_fragment
from customers.models import Channel

OUTBOX_PER_PAGE = 50
FAILED_PER_PAGE = 50
QUERY_MAX = 200


def _render(request: HttpRequest, page: str, fragment: str, context: dict) -> HttpResponse:
    response = render(request, fragment if wants_fragment(request) else page, context)
    patch_vary_headers(response, ["HX-Request"])
    return response


def _require(request: HttpRequest, perm: str) -> None:
    if not request.user.has_perm(perm):
        raise PermissionDenied


# --- Sandbox outbox ------------------------------------------------------------


@login_required
def outbox_list(request: HttpRequest) -> HttpResponse:
    _require(request, "channels.view_sandboxmessage")
    channel = request.GET.get("channel", "")
    channel = channel if channel in selectors.OUTBOX_CHANNELS else ""
    query = request.GET.get("q", "").strip()[:QUERY_MAX]
    page = Paginator(selectors.outbox_messages(channel=channel, query=query), OUTBOX_PER_PAGE).get_page(
        request.GET.get("page")
    )
    texts = selectors.sandbox_texts(page.object_list)  # each as its recipient got it, for the excerpt
    for message in page.object_list:
        message.channel, message.text = selectors.sandbox_channel(message), texts[message.pk]
    counts = selectors.outbox_counts()
    context = {
        "page": page,
        "channel": channel,
        "query": query,
        # The tabs carry the search; a fragment (search, live refresh) brings them along out of band.
        "tabs": [
            {"value": key, "label": label, "count": counts[key]}
            for key, (label, _) in selectors.OUTBOX_CHANNELS.items()
        ],
        "total": sum(counts.values()),
        "oob": wants_fragment(request),
        "sandbox_enabled": settings.CHORUS_SANDBOX,
        "refused_numbers": sorted(TWILIO_REFUSED),
    }
    return _render(request, "channels/outbox.html", "channels/_outbox.html", context)


@login_required
def outbox_detail(request: HttpRequest, pk: int) -> HttpResponse:
    _require(request, "channels.view_sandboxmessage")
    message = SandboxMessage.objects.filter(pk=pk).first()
    if message is None:
        raise Http404("No such sandbox message.")
    channel = selectors.sandbox_channel(message)
    request_data = selectors.sandbox_request(message)
    chorus_message, events = selectors.outbox_webhooks(message, request_data)
    email = selectors.email_as_received(request_data, message.subject) if channel == "email" else {}
    text = selectors.sandbox_text(message, request_data)
    context = {
        "message": message,
        "channel": channel,
        "channel_label": selectors.OUTBOX_CHANNELS.get(channel, (channel.title(), None))[0],
        "subject": email.get("subject", message.subject),
        "html": email.get("html", ""),
        "text": text,
        "headers": sorted((request_data.get("headers") or {}).items()),
        "categories": request_data.get("categories") or [],
        "custom_args": sorted((request_data.get("custom_args") or {}).items()),
        "reply_to": (request_data.get("reply_to") or {}).get("email", ""),
        "sms": sms_info(text) if channel in (Channel.SMS, Channel.WHATSAPP) else None,
        "request_json": json.dumps(request_data, indent=2, ensure_ascii=False),
        "plan": playback_plan(message, request_data) if message.provider in ("sendgrid", "twilio") else None,
        "chorus_message_id": selectors.chorus_message_id(message, request_data),
        "chorus_message": chorus_message,
        "events": events,
        "sandbox_enabled": settings.CHORUS_SANDBOX,
    }
    return render(request, "channels/outbox_detail.html", context)


# --- Failed deliveries -----------------------------------------------------------


def _failed_filters(request: HttpRequest) -> dict:
    """The page's filters from GET (the list) or POST (retry all matching); unknown values filter nothing."""
    data = request.POST if request.method == "POST" else request.GET
    channel = data.get("channel", "")
    channel = channel if channel in Channel.values else ""
    campaign = data.get("campaign", "")
    return {
        "channel": channel,
        "campaign_id": int(campaign) if campaign.isdigit() else None,
        "query": data.get("q", "").strip()[:QUERY_MAX],
    }


@login_required
def failed_list(request: HttpRequest) -> HttpResponse:
    _require(request, "channels.view_message")
    filters = _failed_filters(request)
    page = Paginator(selectors.failed_messages(**filters), FAILED_PER_PAGE).get_page(request.GET.get("page"))
    context = {
        "page": page,
        **filters,
        "can_retry": request.user.has_perm("channels.change_message"),
        "channels": Channel.choices,
    }
    if not wants_fragment(request):
        context["campaigns"] = selectors.failed_campaigns()
        context["bounced"] = selectors.bounced_count()
    return _render(request, "channels/failed.html", "channels/_failed.html", context)


@login_required
@require_POST
def failed_retry(request: HttpRequest) -> HttpResponse:
    """Retry the selected messages, or every message matching the filters ("Retry all matching")."""
    _require(request, "channels.change_message")
    filters = _failed_filters(request)
    if request.POST.get("all"):
        ids = list(selectors.failed_messages(**filters).values_list("pk", flat=True))
    else:
        ids = [int(pk) for pk in request.POST.getlist("message") if pk.isdigit()]
    if not ids:
        messages.error(request, "Select at least one message to retry.")
    else:
        queued = messages_retry(message_ids=ids, by=request.user)
        left = len(set(ids)) - queued
        text = f"{queued} message{'' if queued == 1 else 's'} queued again"
        if left:
            was = "was" if left == 1 else "were"
            text += f"; {left} {was} no longer failed and {was} left alone"
        messages.success(request, text + ".")
    params = {"channel": filters["channel"], "campaign": filters["campaign_id"] or "", "q": filters["query"]}
    query_string = urlencode({key: value for key, value in params.items() if value})
    return redirect(reverse("deliveries:failed") + (f"?{query_string}" if query_string else ""))
