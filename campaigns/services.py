"""Campaign lifecycle and orchestration: schedule, launch, dispatch, complete.

The beat tick only finds due work (see ``campaigns.tasks``); these services do
it. Sending happens in ``channels.services``; dispatch only creates ``Message``
rows and enqueues them after the transaction commits.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from campaigns.models import Campaign, CampaignRun, Enrollment, Step
from campaigns.rendering import ContentError, check_liquid
from campaigns.selectors import campaign_audience
from channels.models import Message
from channels.services import skip_reason
from channels.suppression import suppressed_addresses
from customers.models import Activity, Customer

logger = logging.getLogger(__name__)

TRANSITIONS = {
    Campaign.State.DRAFT: {Campaign.State.SCHEDULED, Campaign.State.CANCELLED},
    Campaign.State.SCHEDULED: {Campaign.State.RUNNING, Campaign.State.DRAFT, Campaign.State.CANCELLED},
    Campaign.State.RUNNING: {Campaign.State.COMPLETED},
}


def _transition(campaign: Campaign, to: str, **fields) -> bool:
    """Move ``campaign`` to ``to`` if it is still in its current state (row-count checked)."""
    if to not in TRANSITIONS.get(campaign.state, set()):
        raise ValidationError(f"A {campaign.get_state_display().lower()} campaign cannot become {to}.")
    updated = Campaign.objects.filter(pk=campaign.pk, state=campaign.state).update(
        state=to, updated_at=timezone.now(), **fields
    )
    if updated:
        campaign.state = to
        for name, value in fields.items():
            setattr(campaign, name, value)
    return bool(updated)


def campaign_check(campaign: Campaign) -> list[str]:
    """Everything that stops ``campaign`` from being scheduled, as readable sentences."""
    problems = []
    steps = list(campaign.steps.all())
    if not steps:
        problems.append("Add at least one step.")
    for step in steps:
        label = f"Step {step.position + 1} ({step.get_channel_display()})"
        if step.channel not in settings.CHORUS_ADAPTERS:
            problems.append(f"{label}: no adapter is configured for this channel.")
        if step.channel == "email" and not step.subject.strip():
            problems.append(f"{label}: an email needs a subject.")
        if not step.body.strip():
            problems.append(f"{label}: the message body is empty.")
        if step.channel == "email" and not campaign.brand.email_from_address:
            problems.append(f"{label}: the brand has no email sender address.")
        for part in ("subject", "body"):
            try:
                check_liquid(getattr(step, part), f"{label} {part}")
            except ContentError as exc:
                problems.append(str(exc))
    return problems


@transaction.atomic
def campaign_schedule(*, campaign: Campaign, at: datetime, by=None) -> Campaign:
    """Schedule a draft campaign to launch at ``at`` (now or in the future)."""
    campaign = Campaign.objects.select_for_update().select_related("brand").get(pk=campaign.pk)
    if campaign.state != Campaign.State.DRAFT:
        raise ValidationError(
            f"Only a draft can be scheduled; this campaign is {campaign.get_state_display().lower()}."
        )
    if timezone.is_naive(at):
        raise ValidationError("The schedule time needs a time zone.")
    problems = campaign_check(campaign)
    if problems:
        raise ValidationError(problems)
    _transition(campaign, Campaign.State.SCHEDULED, scheduled_at=max(at, timezone.now()))
    logger.info("Campaign %s scheduled for %s by %s", campaign.pk, campaign.scheduled_at, by)
    return campaign


@transaction.atomic
def campaign_unschedule(*, campaign: Campaign) -> Campaign:
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    if not _transition(campaign, Campaign.State.DRAFT, scheduled_at=None):
        raise ValidationError("The campaign started before it could be unscheduled.")
    return campaign


def campaign_launch(*, campaign_id: int, now: datetime | None = None) -> CampaignRun | None:
    """Start a due scheduled campaign: one run, one enrollment per audience member.

    Safe to call twice (duplicate ticks): only the caller that moves the campaign
    from scheduled to running creates the run.
    """
    now = now or timezone.now()
    with transaction.atomic():
        campaign = Campaign.objects.select_for_update().filter(pk=campaign_id).first()
        if campaign is None or campaign.state != Campaign.State.SCHEDULED or campaign.scheduled_at > now:
            return None
        if not _transition(campaign, Campaign.State.RUNNING, launched_at=now):
            return None
        first_step = campaign.steps.order_by("position").first()
        number = (campaign.runs.aggregate(n=Max("number"))["n"] or 0) + 1
        run = CampaignRun.objects.create(campaign=campaign, number=number, started_at=now)
        first_at = now + first_step.delay
        audience = campaign_audience(campaign).order_by().values_list("pk", flat=True)
        batch: list[Enrollment] = []
        for customer_id in audience.iterator(chunk_size=5000):
            batch.append(Enrollment(run=run, customer_id=customer_id, step_position=0, next_action_at=first_at))
            if len(batch) >= 5000:
                Enrollment.objects.bulk_create(batch)
                batch = []
        Enrollment.objects.bulk_create(batch)
    logger.info("Campaign %s launched run %s", campaign_id, run.number)
    return run


def enrollments_dispatch(*, limit: int | None = None, now: datetime | None = None) -> int:
    """Claim up to ``limit`` due enrollments and create their step's messages.

    Erasure, suppression and consent are checked here and again at send time.
    Each (step, run, customer) gets at most one message: the unique constraint
    backs up the row locks. Send tasks are enqueued only after commit. Returns
    how many were claimed.
    """
    from channels.tasks import messages_enqueue

    limit = limit or settings.CHORUS_DISPATCH_BATCH
    now = now or timezone.now()
    with transaction.atomic():
        due = list(
            Enrollment.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(state=Enrollment.State.ACTIVE, next_action_at__lte=now)
            .select_related("run", "customer")
            .order_by("next_action_at", "pk")[:limit]
        )
        if not due:
            return 0
        campaign_ids = {e.run.campaign_id for e in due}
        steps: dict[int, list[Step]] = defaultdict(list)
        for step in Step.objects.filter(campaign_id__in=campaign_ids).order_by("position"):
            steps[step.campaign_id].append(step)
        customer_ids = [e.customer_id for e in due]
        consented = {
            channel: set(Customer.objects.filter(pk__in=customer_ids).consented(channel).values_list("pk", flat=True))
            for channel in {s.channel for campaign_steps in steps.values() for s in campaign_steps}
        }
        # One query for the whole batch: every address this dispatch would write to.
        suppressed = suppressed_addresses(
            e.customer.address_for(steps[e.run.campaign_id][e.step_position].channel) for e in due
        )

        messages = []
        for enrollment in due:
            campaign_steps = steps[enrollment.run.campaign_id]
            step = campaign_steps[enrollment.step_position]
            address = enrollment.customer.address_for(step.channel) or ""
            skip = skip_reason(enrollment.customer, address, consented[step.channel], suppressed)
            messages.append(
                Message(
                    run=enrollment.run,
                    step=step,
                    customer=enrollment.customer,
                    channel=step.channel,
                    to_address=address,
                    status=Message.Status.SKIPPED if skip else Message.Status.QUEUED,
                    rank=Message.RANK[Message.Status.SKIPPED if skip else Message.Status.QUEUED],
                    skip_reason=skip,
                    created_at=now,
                )
            )
            if enrollment.step_position + 1 < len(campaign_steps):
                enrollment.step_position += 1
                enrollment.next_action_at = now + campaign_steps[enrollment.step_position].delay
            else:
                enrollment.state = Enrollment.State.COMPLETED
                enrollment.next_action_at = None
        Message.objects.bulk_create(messages, ignore_conflicts=True)
        Enrollment.objects.bulk_update(due, ["step_position", "next_action_at", "state"])

        created = Message.objects.filter(
            created_at=now, run_id__in={m.run_id for m in messages}, customer_id__in=customer_ids
        ).values_list("pk", "channel", "status", "customer_id", "skip_reason", "run__campaign_id")
        queued: dict[str, list[int]] = defaultdict(list)
        skipped = []
        for pk, channel, status, customer_id, reason, campaign_id in created:
            if status == Message.Status.QUEUED:
                queued[channel].append(pk)
            elif status == Message.Status.SKIPPED:
                skipped.append(
                    Activity(
                        customer_id=customer_id,
                        kind=Activity.Kind.MESSAGE_SKIPPED,
                        channel=channel,
                        campaign_id=campaign_id,
                        message_id=pk,
                        occurred_at=now,
                        properties={"reason": reason},
                    )
                )
        Activity.objects.bulk_create(skipped)
        transaction.on_commit(lambda: messages_enqueue(queued))
    return len(due)


def campaigns_complete(*, campaign_ids: list[int], now: datetime | None = None) -> int:
    now = now or timezone.now()
    done = 0
    for campaign in Campaign.objects.filter(pk__in=campaign_ids, state=Campaign.State.RUNNING):
        with transaction.atomic():
            if _transition(campaign, Campaign.State.COMPLETED, completed_at=now):
                campaign.runs.filter(finished_at=None).update(finished_at=now)
                done += 1
    return done
