"""The dashboard and the campaign pages: list, detail with live results, review and scheduling."""

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
from campaigns.models import Campaign, ContentChannel, Step
from campaigns.selectors import campaign_audience_count, campaign_channel_stats
from channels.models import Message
from config.htmx import wants_fragment
from customers.models import Channel
from customers.selectors import customers_total
from segments.models import Segment
from segments.rules import RuleError

CAMPAIGNS_PER_PAGE = 50
EVENTS_SHOWN = 100
RECENT_CAMPAIGNS = 8
# While a campaign can still change, its results table polls for updates.
LIVE_STATES = {Campaign.State.SCHEDULED, Campaign.State.RUNNING}
# Steps name a content channel (Mastodon, Bluesky); messages the consent channel (social).
_CHANNEL_LABELS = {**dict(Channel.choices), **dict(ContentChannel.choices)}
_CHANNEL_ORDER = {channel: index for index, channel in enumerate(_CHANNEL_LABELS)}
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
    for channel in sorted(set(channels) | set(stats), key=lambda c: _CHANNEL_ORDER.get(c, len(_CHANNEL_ORDER))):
        row = {metric: stats.get(channel, {}).get(metric, 0) for metric in METRICS}
        rows.append({"channel": channel, "label": _CHANNEL_LABELS.get(channel, channel), **row})
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


def _findings_context(campaign: Campaign, steps: list[Step]) -> dict:
    """The brand-check findings of every step, each with its override (or None) and the step it is about."""
    by_position = {step.position: step for step in steps}
    rows = [
        {"finding": finding, "override": override, "step": by_position.get(finding.step_position)}
        for finding, override in services.campaign_findings(campaign)
    ]
    return {
        "findings": rows,
        "blocking_count": sum(row["finding"].blocking and row["override"] is None for row in rows),
        "overridden_count": sum(row["override"] is not None for row in rows),
    }


def _render_detail(
    request: HttpRequest,
    campaign: Campaign,
    *,
    schedule_errors: list[str] | None = None,
    at_value: str = "",
    review_errors: list[str] | None = None,
    override_errors: dict[str, list[str]] | None = None,
    status: int = 200,
) -> HttpResponse:
    steps = list(campaign.steps.select_related("template"))
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
        "can_approve": request.user.has_perm("campaigns.approve_campaign"),
        "can_override": request.user.has_perm("campaigns.override_finding"),
        "overrides_open": campaign.state in (Campaign.State.DRAFT, Campaign.State.IN_REVIEW),
        "can_preview": request.user.has_perm("campaigns.view_template"),
        "schedule_errors": schedule_errors or [],
        "at_value": at_value,
        "review_errors": review_errors or [],
        "override_errors": override_errors or {},
        "events": campaign.events.select_related("actor")[:EVENTS_SHOWN],
        **_findings_context(campaign, steps),
    }
    response = render(request, "campaigns/detail.html", context, status=status)
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
        campaign = services.campaign_unschedule(campaign=campaign, by=request.user)
    except ValidationError as exc:
        campaign.refresh_from_db()
        return _render_detail(request, campaign, schedule_errors=exc.messages)
    messages.success(request, f"“{campaign.name}” is off the schedule and stays approved; nothing will be sent.")
    return redirect("campaigns:detail", pk=campaign.pk)


def _review(request: HttpRequest, pk: int, perm: str, act, done: str) -> HttpResponse:
    """Submit, approve or send back: the service checks state and permission; refusals are shown on the page."""
    campaign = _get_campaign_for_user(request, pk)
    if not request.user.has_perm(perm):
        raise PermissionDenied
    try:
        campaign = act(campaign)
    except ValidationError as exc:
        campaign.refresh_from_db()
        return _render_detail(request, campaign, review_errors=exc.messages, status=400)
    messages.success(request, done.format(name=campaign.name))
    return redirect("campaigns:detail", pk=campaign.pk)


@login_required
@require_POST
def campaign_submit(request: HttpRequest, pk: int) -> HttpResponse:
    return _review(
        request,
        pk,
        "campaigns.change_campaign",
        lambda campaign: services.campaign_submit(campaign=campaign, by=request.user),
        "“{name}” is in review: a brand manager approves it or sends it back.",
    )


@login_required
@require_POST
def campaign_approve(request: HttpRequest, pk: int) -> HttpResponse:
    note = request.POST.get("note", "")
    return _review(
        request,
        pk,
        "campaigns.approve_campaign",
        lambda campaign: services.campaign_approve(campaign=campaign, by=request.user, note=note),
        "Approved “{name}”: it can be scheduled now.",
    )


@login_required
@require_POST
def campaign_reject(request: HttpRequest, pk: int) -> HttpResponse:
    note = request.POST.get("note", "")
    return _review(
        request,
        pk,
        "campaigns.approve_campaign",
        lambda campaign: services.campaign_reject(campaign=campaign, by=request.user, note=note),
        "Sent “{name}” back to draft with your note.",
    )


@login_required
@require_POST
def campaign_override_finding(request: HttpRequest, pk: int) -> HttpResponse:
    campaign = _get_campaign_for_user(request, pk)
    if not request.user.has_perm("campaigns.override_finding"):
        raise PermissionDenied
    fingerprint = request.POST.get("fingerprint", "")
    try:
        services.finding_override(
            campaign=campaign, fingerprint=fingerprint, reason=request.POST.get("reason", ""), by=request.user
        )
    except ValidationError as exc:
        campaign.refresh_from_db()
        return _render_detail(request, campaign, override_errors={fingerprint: exc.messages}, status=400)
    messages.success(request, "Finding overridden; your reason is in the audit trail.")
    return redirect("campaigns:detail", pk=campaign.pk)
