"""Segment pages: the list with live counts and one segment's rules and members."""

from __future__ import annotations

import json

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from segments.models import Segment
from segments.rules import RuleError
from segments.selectors import segment_count, segment_customers

SAMPLE_SIZE = 25


def _get_segment_for_user(request: HttpRequest, pk: int) -> Segment:
    if not request.user.has_perm("segments.view_segment"):
        raise PermissionDenied
    return get_object_or_404(Segment, pk=pk)


@login_required
def segment_list(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("segments.view_segment"):
        raise PermissionDenied
    # Member counts are one query per segment (each has its own rules), so the
    # page renders at once and every row fetches its count through htmx.
    segments = Segment.objects.annotate(campaign_count=Count("campaigns"))
    return render(request, "segments/list.html", {"segments": segments})


@login_required
def segment_member_count(request: HttpRequest, pk: int) -> HttpResponse:
    segment = _get_segment_for_user(request, pk)
    try:
        count, error = segment_count(segment), ""
    except RuleError as exc:
        count, error = None, str(exc)
    return render(request, "segments/_count.html", {"segment": segment, "count": count, "error": error})


@login_required
def segment_detail(request: HttpRequest, pk: int) -> HttpResponse:
    segment = _get_segment_for_user(request, pk)
    count, sample, rule_error = None, [], ""
    try:
        members = segment_customers(segment)
        count = members.count()
        sample = list(members.order_by("-id")[:SAMPLE_SIZE])
    except RuleError as exc:
        rule_error = str(exc)
    context = {
        "segment": segment,
        "rules_json": json.dumps(segment.rules, indent=2, ensure_ascii=False),
        "count": count,
        "sample": sample,
        "rule_error": rule_error,
        "campaigns": segment.campaigns.select_related("brand"),
    }
    return render(request, "segments/detail.html", context)
