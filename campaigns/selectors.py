"""Reads about campaigns used by views, the API and tasks."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Count, Exists, OuterRef, Q
from django.utils import timezone

from campaigns.models import Campaign, Enrollment
from channels.models import Message
from segments.selectors import segment_customers


def campaigns_due_for_launch(*, now: datetime | None = None) -> list[int]:
    now = now or timezone.now()
    return list(
        Campaign.objects.filter(state=Campaign.State.SCHEDULED, scheduled_at__lte=now).values_list("pk", flat=True)
    )


def enrollments_due_exist(*, now: datetime | None = None) -> bool:
    now = now or timezone.now()
    return Enrollment.objects.filter(state=Enrollment.State.ACTIVE, next_action_at__lte=now).exists()


def campaigns_finished() -> list[int]:
    """Running campaigns with nobody left to message and nothing left to send."""
    active = Enrollment.objects.filter(run__campaign=OuterRef("pk"), state=Enrollment.State.ACTIVE)
    pending = Message.objects.filter(
        run__campaign=OuterRef("pk"), status__in=[Message.Status.QUEUED, Message.Status.SENDING]
    )
    return list(
        Campaign.objects.filter(state=Campaign.State.RUNNING)
        .filter(~Exists(active), ~Exists(pending))
        .values_list("pk", flat=True)
    )


def campaign_audience(campaign: Campaign):
    return segment_customers(campaign.segment)


def campaign_channel_stats(campaign: Campaign) -> list[dict]:
    """Per channel: targeted, skipped, sent, delivered, failed (cumulative funnel)."""
    S, rank = Message.Status, Message.RANK
    rows = (
        Message.objects.filter(run__campaign=campaign)
        .values("channel")
        .annotate(
            targeted=Count("pk"),
            skipped=Count("pk", filter=Q(status=S.SKIPPED)),
            sent=Count("pk", filter=Q(sent_at__isnull=False)),
            delivered=Count("pk", filter=Q(rank__gte=rank[S.DELIVERED], rank__lt=rank[S.SKIPPED])),
            opened=Count("pk", filter=Q(rank__gte=rank[S.OPENED], rank__lt=rank[S.SKIPPED])),
            clicked=Count("pk", filter=Q(status=S.CLICKED)),
            failed=Count("pk", filter=Q(status__in=[S.FAILED, S.BOUNCED, S.UNDELIVERED])),
            pending=Count("pk", filter=Q(status__in=[S.QUEUED, S.SENDING])),
        )
        .order_by("channel")
    )
    return list(rows)


def campaign_audience_count(campaign: Campaign) -> int:
    return campaign_audience(campaign).count()
