"""Campaign lifecycle and orchestration: review, schedule, launch, dispatch, complete.

A campaign goes draft -> in review -> approved -> scheduled -> running ->
completed. Submitting and approving re-run the structural checks and the brand
checks; an error finding blocks unless a brand manager overrode it with a
written reason. Every move is recorded as a ``CampaignEvent`` (who, when, what).

The beat tick only finds due work (see ``campaigns.tasks``); these services do
it. Sending happens in ``channels.services``; dispatch only creates ``Message``
rows and enqueues them after the transaction commits.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from campaigns.content.checks import SENDER, Finding, check_campaign
from campaigns.models import (
    CONSENT_CHANNEL,
    Brand,
    BrandChange,
    Campaign,
    CampaignEvent,
    CampaignRun,
    ContentChannel,
    Enrollment,
    FindingOverride,
    Step,
)
from campaigns.selectors import campaign_audience
from channels.models import Message
from channels.services import skip_reason
from channels.suppression import suppressed_addresses
from customers.models import Activity, Customer

logger = logging.getLogger(__name__)

TRANSITIONS = {
    Campaign.State.DRAFT: {Campaign.State.IN_REVIEW, Campaign.State.CANCELLED},
    Campaign.State.IN_REVIEW: {Campaign.State.APPROVED, Campaign.State.DRAFT, Campaign.State.CANCELLED},
    Campaign.State.APPROVED: {Campaign.State.SCHEDULED, Campaign.State.DRAFT, Campaign.State.CANCELLED},
    Campaign.State.SCHEDULED: {Campaign.State.RUNNING, Campaign.State.APPROVED, Campaign.State.CANCELLED},
    Campaign.State.RUNNING: {Campaign.State.COMPLETED},
}

# A reason an auditor can read later, not "ok".
OVERRIDE_REASON_MIN_CHARS = 15
OVERRIDE_REASON_MIN_WORDS = 3


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


def _locked(campaign: Campaign) -> Campaign:
    return Campaign.objects.select_for_update().select_related("brand").get(pk=campaign.pk)


_AS_NOUN = {
    Campaign.State.DRAFT: "a draft",
    Campaign.State.IN_REVIEW: "a campaign in review",
    Campaign.State.APPROVED: "an approved campaign",
    Campaign.State.SCHEDULED: "a scheduled campaign",
    Campaign.State.RUNNING: "a running campaign",
    Campaign.State.PAUSED: "a paused campaign",
    Campaign.State.COMPLETED: "a completed campaign",
    Campaign.State.CANCELLED: "a cancelled campaign",
}


def _require_state(campaign: Campaign, state: str, doing: str) -> None:
    if campaign.state != state:
        raise ValidationError(f"Only {_AS_NOUN[state]} can be {doing}; this is {_AS_NOUN[campaign.state]}.")


def _require_perm(by, perm: str, doing: str) -> None:
    if by is None or not by.has_perm(perm):
        raise PermissionDenied(f"Your role cannot {doing}.")


def _record(campaign: Campaign, action: str, by, note: str = "") -> CampaignEvent:
    return CampaignEvent.objects.create(campaign=campaign, action=action, actor=by, note=note)


def _step_label(step: Step) -> str:
    return f"Step {step.position + 1} ({step.get_channel_display()})"


def campaign_check(campaign: Campaign) -> list[str]:
    """What stops ``campaign`` from being sent at all, as readable sentences (brand findings aside)."""
    problems = []
    steps = list(campaign.steps.select_related("template", "template__brand"))
    if not steps:
        problems.append("Add at least one step.")
    brand = campaign.brand
    for step in steps:
        label, template = _step_label(step), step.template
        if step.channel not in settings.CHORUS_ADAPTERS:
            problems.append(f"{label}: no adapter is configured for this channel.")
        if template.channel != step.channel:
            problems.append(
                f"{label}: the template “{template.name}” is for {template.get_channel_display()}; "
                f"pick a {step.get_channel_display()} template."
            )
        if template.brand_id != brand.pk:
            problems.append(
                f"{label}: the template “{template.name}” belongs to {template.brand}, not {brand}; "
                f"pick one of {brand}'s templates."
            )
        if step.channel == "email":
            if not template.subject.strip():
                problems.append(f"{label}: an email needs a subject.")
            if not template.blocks:
                problems.append(f"{label}: the email has no content blocks.")
        elif not template.body.strip():
            problems.append(f"{label}: the message body is empty.")
        if not brand.sender_for(step.channel):
            problems.append(f"{label}: {brand} has no {step.get_channel_display()} sender identity.")
    return problems


def campaign_findings(campaign: Campaign) -> list[tuple[Finding, FindingOverride | None]]:
    """Every brand-check finding of ``campaign``'s steps, each with the override that lets it pass (or None)."""
    overrides = {o.fingerprint: o for o in campaign.overrides.select_related("overridden_by")}
    return [
        (finding, overrides.get(finding.fingerprint) if finding.overridable else None)
        for finding in check_campaign(campaign)
    ]


def _finding_sentence(finding: Finding, step: Step | None) -> str:
    """The finding's message prefixed with its step (and persona), as listed when a campaign is refused."""
    label = _step_label(step) if step is not None else "Content"
    persona = f", persona {finding.persona}" if finding.persona else ""
    return f"{label}{persona}: {finding.message}"


def _blocking_problems(campaign: Campaign) -> list[str]:
    """Structural problems, then the error findings nobody overrode (the sender is already a problem)."""
    problems = campaign_check(campaign)
    steps = {step.position: step for step in campaign.steps.all()}
    for finding, override in campaign_findings(campaign):
        if finding.blocking and override is None and finding.rule != SENDER:
            problems.append(_finding_sentence(finding, steps.get(finding.step_position)))
    return problems


@transaction.atomic
def campaign_submit(*, campaign: Campaign, by) -> Campaign:
    """Send a draft to review; refused, listing every problem, while checks fail without an override."""
    _require_perm(by, "campaigns.change_campaign", "submit campaigns for review")
    campaign = _locked(campaign)
    _require_state(campaign, Campaign.State.DRAFT, "submitted for review")
    problems = _blocking_problems(campaign)
    if problems:
        raise ValidationError(problems)
    _transition(campaign, Campaign.State.IN_REVIEW)
    _record(campaign, CampaignEvent.Action.SUBMITTED, by)
    return campaign


@transaction.atomic
def campaign_approve(*, campaign: Campaign, by, note: str = "") -> Campaign:
    """Approve a campaign in review (brand manager or admin); the checks run again first."""
    _require_perm(by, "campaigns.approve_campaign", "approve campaigns")
    campaign = _locked(campaign)
    _require_state(campaign, Campaign.State.IN_REVIEW, "approved")
    problems = _blocking_problems(campaign)
    if problems:
        raise ValidationError(problems)
    _transition(campaign, Campaign.State.APPROVED)
    _record(campaign, CampaignEvent.Action.APPROVED, by, note.strip())
    return campaign


@transaction.atomic
def campaign_reject(*, campaign: Campaign, by, note: str) -> Campaign:
    """Send a campaign in review back to draft with a note saying what to change."""
    _require_perm(by, "campaigns.approve_campaign", "send campaigns back to draft")
    if not (note or "").strip():
        raise ValidationError("Say what needs to change: a note is required to send a campaign back to draft.")
    campaign = _locked(campaign)
    _require_state(campaign, Campaign.State.IN_REVIEW, "sent back to draft")
    _transition(campaign, Campaign.State.DRAFT)
    _record(campaign, CampaignEvent.Action.REJECTED, by, note.strip())
    return campaign


@transaction.atomic
def finding_override(*, campaign: Campaign, fingerprint: str, reason: str, by) -> FindingOverride:
    """Let one current error finding of ``campaign`` pass, with a written reason kept in the audit trail.

    Only brand managers and admins may; only while the campaign is a draft or in
    review. Liquid errors and missing senders cannot be overridden (nothing could be sent).
    """
    _require_perm(by, "campaigns.override_finding", "override brand-check findings")
    reason = " ".join((reason or "").split())
    if len(reason) < OVERRIDE_REASON_MIN_CHARS or len(reason.split()) < OVERRIDE_REASON_MIN_WORDS:
        raise ValidationError(
            "Write the reason in a sentence (at least 15 characters and 3 words): it is kept in the audit trail."
        )
    campaign = _locked(campaign)
    if campaign.state not in (Campaign.State.DRAFT, Campaign.State.IN_REVIEW):
        raise ValidationError(
            f"Findings can be overridden while a campaign is a draft or in review; "
            f"this one is {campaign.get_state_display().lower()}."
        )
    finding = next((f for f in check_campaign(campaign) if f.fingerprint == fingerprint), None)
    if finding is None:
        raise ValidationError(
            "This campaign has no such finding now: the content may have changed. Run the checks again."
        )
    if not finding.overridable:
        raise ValidationError(f"This finding cannot be overridden, only fixed: {finding.message}")
    existing = campaign.overrides.filter(fingerprint=fingerprint).select_related("overridden_by").first()
    if existing is not None:
        raise ValidationError(
            f"{existing.overridden_by or 'Someone'} already overrode this finding on "
            f"{existing.created_at:%Y-%m-%d %H:%M}: “{existing.reason}”."
        )
    override = FindingOverride.objects.create(
        campaign=campaign,
        fingerprint=fingerprint,
        rule=finding.rule,
        message=_finding_sentence(finding, campaign.steps.filter(position=finding.step_position).first()),
        reason=reason,
        overridden_by=by,
    )
    _record(
        campaign,
        CampaignEvent.Action.FINDING_OVERRIDDEN,
        by,
        f"{finding.rule}: {override.message}\nReason: {reason}",
    )
    return override


@transaction.atomic
def campaign_schedule(*, campaign: Campaign, at: datetime, by=None) -> Campaign:
    """Schedule an approved campaign to launch at ``at`` (now or in the future); the checks run again first."""
    campaign = _locked(campaign)
    _require_state(campaign, Campaign.State.APPROVED, "scheduled")
    if timezone.is_naive(at):
        raise ValidationError("The schedule time needs a time zone.")
    # The templates may have been edited since the approval.
    problems = _blocking_problems(campaign)
    if problems:
        raise ValidationError(problems)
    _transition(campaign, Campaign.State.SCHEDULED, scheduled_at=max(at, timezone.now()))
    _record(campaign, CampaignEvent.Action.SCHEDULED, by, f"To launch at {campaign.scheduled_at.isoformat()}.")
    logger.info("Campaign %s scheduled for %s by %s", campaign.pk, campaign.scheduled_at, by)
    return campaign


@transaction.atomic
def campaign_unschedule(*, campaign: Campaign, by=None) -> Campaign:
    """Take a scheduled campaign off the schedule: it stays approved, ready to be scheduled again."""
    campaign = _locked(campaign)
    if campaign.state in (Campaign.State.RUNNING, Campaign.State.COMPLETED):
        raise ValidationError("The campaign started before it could be unscheduled.")
    _require_state(campaign, Campaign.State.SCHEDULED, "unscheduled")
    if not _transition(campaign, Campaign.State.APPROVED, scheduled_at=None):
        raise ValidationError("The campaign started before it could be unscheduled.")
    _record(campaign, CampaignEvent.Action.UNSCHEDULED, by)
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

    A Mastodon or Bluesky step also publishes one post per run on the brand's
    account (``social_posts_create``: the post is created here, published by a
    task). Mastodon steps direct-message the customers with a handle; Bluesky
    steps are the post alone, so their enrollments advance with no message.
    """
    from channels.services.social import social_posts_create
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
        # Keyed by the step's channel; Mastodon and Bluesky share the social consent.
        consented = {
            channel: set(
                Customer.objects.filter(pk__in=customer_ids)
                .consented(CONSENT_CHANNEL.get(channel, channel))
                .values_list("pk", flat=True)
            )
            for channel in {s.channel for campaign_steps in steps.values() for s in campaign_steps}
        }
        # One query for the whole batch: every address this dispatch would write to.
        suppressed = suppressed_addresses(
            e.customer.address_for(steps[e.run.campaign_id][e.step_position].channel) for e in due
        )

        messages = []
        posts = set()
        for enrollment in due:
            campaign_steps = steps[enrollment.run.campaign_id]
            step = campaign_steps[enrollment.step_position]
            if step.channel in (ContentChannel.MASTODON, ContentChannel.BLUESKY):
                posts.add((step.pk, enrollment.run_id, step.channel))
            if step.channel != ContentChannel.BLUESKY:  # a Bluesky step is its post alone
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
        social_posts_create(pairs=posts, now=now)
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


# --- brand audit -----------------------------------------------------------------


def brand_state(brand: Brand) -> dict:
    """What the brand audit compares: every guideline field (the logo by file name) and the required phrases."""
    state = {}
    for model_field in Brand._meta.concrete_fields:
        if model_field.name in ("id", "created_at", "updated_at"):
            continue
        value = getattr(brand, model_field.name)
        state[model_field.name] = (value.name or "") if model_field.name == "logo" else value
    state["required_phrases"] = (
        sorted(f"{rp.get_channel_display()}: {rp.phrase}" for rp in brand.required_phrases.all()) if brand.pk else []
    )
    return {
        name: value if value is None or isinstance(value, str | int | float | bool | list) else str(value)
        for name, value in state.items()
    }


def brand_change_record(*, brand: Brand, before: dict, by) -> BrandChange | None:
    """Audit an edit of ``brand``: ``before`` is ``brand_state`` from before it; unchanged fields are left out."""
    after = brand_state(brand)
    changes = {name: [before.get(name), value] for name, value in after.items() if before.get(name) != value}
    if not changes:
        return None
    return BrandChange.objects.create(brand=brand, changed_by=by, changes=changes)
