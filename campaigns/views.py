"""The dashboard and the campaign pages: list, detail with live results, scheduling."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, Prefetch, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.dateformat import format as date_format
from django.views.decorators.http import require_POST

from campaigns import services
from campaigns.models import Campaign, Step
from campaigns.selectors import campaign_audience_count, campaign_channel_stats
from channels.models import Message
from config.htmx import wants_fragment
from customers.models import Channel
from customers.selectors import customers_total
from segments.models import Segment
from segments.rules import RuleError

CAMPAIGNS_PER_PAGE = 50
RECENT_CAMPAIGNS = 8
# While a campaign can still change, its results table polls for updates.
LIVE_STATES = {Campaign.State.SCHEDULED, Campaign.State.RUNNING}
METRICS = ("targeted", "skipped", "sent", "delivered", "opened", "clicked", "failed", "pending")


def _percent(part: int, whole: int) -> str:
    return f"{part / whole:.0%}" if whole else "—"


def _delay_label(delay: timedelta) -> str:
    if not delay:
        return "Straight after the previous step"
    days, seconds = delay.days, delay.seconds
    parts = [f"{days} day{'s' if days != 1 else ''}"] if days else []
    if seconds >= 3600:
        parts.append(f"{seconds // 3600} h")
    if seconds % 3600 >= 60:
        parts.append(f"{seconds % 3600 // 60} min")
    return f"{' '.join(parts) or f'{seconds} s'} after the previous step"


def _get_campaign_for_user(request: HttpRequest, pk: int) -> Campaign:
    if not request.user.has_perm("campaigns.view_campaign"):
        raise PermissionDenied
    return get_object_or_404(Campaign.objects.select_related("brand", "segment", "created_by"), pk=pk)


def _counts_by_state() -> dict[str, int]:
    return dict(Campaign.objects.order_by().values_list("state").annotate(n=Count("pk")))


def _require_change(request: HttpRequest) -> None:
    if not request.user.has_perm("campaigns.change_campaign"):
        raise PermissionDenied


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    since = timezone.now() - timedelta(days=7)
    by_state = _counts_by_state()
    week = Message.objects.aggregate(
        sent=Count("pk", filter=Q(sent_at__gte=since)),
        delivered=Count("pk", filter=Q(delivered_at__gte=since)),
        failed=Count("pk", filter=Q(failed_at__gte=since)),
    )
    customer_total, customers_estimated = customers_total()
    context = {
        "customer_total": customer_total,
        "customers_estimated": customers_estimated,
        "segment_total": Segment.objects.count(),
        "campaign_total": sum(by_state.values()),
        "campaign_states": [
            {"value": value, "label": label, "count": by_state.get(value, 0)} for value, label in Campaign.State.choices
        ],
        "live_total": sum(by_state.get(state, 0) for state in LIVE_STATES),
        "week": week,
        "delivery_rate": _percent(week["delivered"], week["sent"]),
        "recent_campaigns": Campaign.objects.select_related("brand", "segment")[:RECENT_CAMPAIGNS],
    }
    return render(request, "campaigns/dashboard.html", context)


@login_required
def campaign_list(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("campaigns.view_campaign"):
        raise PermissionDenied
    state = request.GET.get("state", "")
    state = state if state in Campaign.State.values else ""
    by_state = _counts_by_state()
    campaigns = Campaign.objects.select_related("brand", "segment").prefetch_related(
        Prefetch("steps", queryset=Step.objects.only("pk", "campaign_id", "channel", "position"))
    )
    if state:
        campaigns = campaigns.filter(state=state)
    page = Paginator(campaigns, CAMPAIGNS_PER_PAGE).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "state": state,
        "total": sum(by_state.values()),
        "tabs": [
            {"value": value, "label": label, "count": by_state[value]}
            for value, label in Campaign.State.choices
            if by_state.get(value)
        ],
    }
    return render(request, "campaigns/list.html", context)


def _results_context(campaign: Campaign, channels: list[str]) -> dict:
    """Per-channel funnel rows (zeros for channels with no messages yet) and totals."""
    stats = {row["channel"]: row for row in campaign_channel_stats(campaign)}
    rows = []
    for channel in sorted(set(channels) | set(stats), key=lambda c: Channel.values.index(c)):
        row = {metric: stats.get(channel, {}).get(metric, 0) for metric in METRICS}
        rows.append({"channel": channel, "label": Channel(channel).label, **row})
    totals = {metric: sum(row[metric] for row in rows) for metric in METRICS}
    return {
        "campaign": campaign,
        "results": rows,
        "totals": totals,
        "rates": {
            "delivery": _percent(totals["delivered"], totals["sent"]),
            "open": _percent(totals["opened"], totals["delivered"]),
            "click": _percent(totals["clicked"], totals["delivered"]),
            "failure": _percent(totals["failed"], totals["sent"]),
        },
        "live": campaign.state in LIVE_STATES,
    }


def _render_detail(
    request: HttpRequest, campaign: Campaign, *, schedule_errors: list[str] | None = None, at_value: str = ""
) -> HttpResponse:
    steps = list(campaign.steps.all())
    for step in steps:
        step.delay_label = _delay_label(step.delay)
    try:
        audience_count, audience_error = campaign_audience_count(campaign), ""
    except RuleError as exc:
        audience_count, audience_error = None, str(exc)
    context = {
        **_results_context(campaign, [step.channel for step in steps]),
        "steps": steps,
        "audience_count": audience_count,
        "audience_error": audience_error,
        "can_change": request.user.has_perm("campaigns.change_campaign"),
        "schedule_errors": schedule_errors or [],
        "at_value": at_value,
    }
    response = render(request, "campaigns/detail.html", context)
    patch_vary_headers(response, ["HX-Request"])
    return response


@login_required
def campaign_detail(request: HttpRequest, pk: int) -> HttpResponse:
    campaign = _get_campaign_for_user(request, pk)
    if wants_fragment(request):
        channels = list(campaign.steps.values_list("channel", flat=True))
        response = render(request, "campaigns/_results.html", {**_results_context(campaign, channels), "oob": True})
        patch_vary_headers(response, ["HX-Request"])
        return response
    return _render_detail(request, campaign)


def _parse_schedule_time(raw: str) -> datetime:
    """A datetime-local value in the server's time zone; empty or "now" means now."""
    if not raw or raw.lower() == "now":
        return timezone.now()
    try:
        at = datetime.fromisoformat(raw)
    except ValueError:
        raise ValidationError(
            f"“{raw}” is not a date and time. Pick one, or leave the field empty to launch now."
        ) from None
    if timezone.is_naive(at):
        at = timezone.make_aware(at, timezone.get_current_timezone())
    return at


@login_required
@require_POST
def campaign_schedule(request: HttpRequest, pk: int) -> HttpResponse:
    campaign = _get_campaign_for_user(request, pk)
    _require_change(request)
    raw = request.POST.get("at", "").strip()
    try:
        campaign = services.campaign_schedule(campaign=campaign, at=_parse_schedule_time(raw), by=request.user)
    except ValidationError as exc:
        campaign.refresh_from_db()
        return _render_detail(request, campaign, schedule_errors=exc.messages, at_value=raw)
    when = timezone.localtime(campaign.scheduled_at)
    messages.success(request, f"“{campaign.name}” is scheduled for {date_format(when, 'M j, Y H:i T')}.")
    return redirect("campaigns:detail", pk=campaign.pk)


@login_required
@require_POST
def campaign_unschedule(request: HttpRequest, pk: int) -> HttpResponse:
    campaign = _get_campaign_for_user(request, pk)
    _require_change(request)
    try:
        campaign = services.campaign_unschedule(campaign=campaign)
    except ValidationError as exc:
        campaign.refresh_from_db()
        return _render_detail(request, campaign, schedule_errors=exc.messages)
    messages.success(request, f"“{campaign.name}” is back to draft; nothing will be sent.")
    return redirect("campaigns:detail", pk=campaign.pk)
