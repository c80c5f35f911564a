"""The review flow: draft -> in review -> approved -> scheduled, with brand-check findings and overrides audited."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.utils import timezone

from campaigns.content.checks import BANNED_PHRASE, check_campaign
from campaigns.models import Campaign, CampaignEvent, FindingOverride, Template
from campaigns.services import (
    campaign_approve,
    campaign_reject,
    campaign_schedule,
    campaign_submit,
    campaign_unschedule,
    finding_override,
)
from config.roles import ADMIN, BRAND_MANAGER, MARKETER
from tests.factories import BrandFactory, CampaignFactory, UserFactory, two_channel_campaign

REASON = "Legal approved this wording for the spring campaign."


@pytest.fixture
def marketer(roles):
    return UserFactory(username="mia", role=MARKETER)


@pytest.fixture
def brand_manager(roles):
    return UserFactory(username="bea", role=BRAND_MANAGER)


@pytest.fixture
def banned_campaign():
    """A campaign whose SMS step says a phrase the brand bans."""
    return two_channel_campaign(brand=BrandFactory(banned_phrases="today"))


def _banned_finding(campaign: Campaign):
    return next(f for f in check_campaign(campaign) if f.rule == BANNED_PHRASE)


def _actions(campaign: Campaign) -> list[str]:
    return list(campaign.events.order_by("occurred_at", "id").values_list("action", flat=True))


@pytest.mark.django_db
def test_submit_is_refused_while_a_check_fails_and_the_error_names_the_finding(banned_campaign, marketer):
    with pytest.raises(ValidationError) as refused:
        campaign_submit(campaign=banned_campaign, by=marketer)

    assert refused.value.messages == [
        "Step 2 (SMS): Banned phrase “today” in the SMS text: Northwind does not use it; reword that part."
    ]
    banned_campaign.refresh_from_db()
    assert banned_campaign.state == Campaign.State.DRAFT
    assert not banned_campaign.events.exists()


@pytest.mark.django_db
def test_submit_lists_structural_problems_too(marketer):
    campaign = CampaignFactory()
    with pytest.raises(ValidationError, match="Add at least one step"):
        campaign_submit(campaign=campaign, by=marketer)


@pytest.mark.django_db
def test_brand_manager_override_lets_the_campaign_through_and_is_in_the_audit_trail(
    banned_campaign, marketer, brand_manager
):
    finding = _banned_finding(banned_campaign)

    override = finding_override(
        campaign=banned_campaign, fingerprint=finding.fingerprint, reason=f"  {REASON} ", by=brand_manager
    )
    campaign_submit(campaign=banned_campaign, by=marketer)

    assert (override.rule, override.reason, override.overridden_by) == (BANNED_PHRASE, REASON, brand_manager)
    assert override.message.startswith("Step 2 (SMS): Banned phrase “today”")
    banned_campaign.refresh_from_db()
    assert banned_campaign.state == Campaign.State.IN_REVIEW
    event = banned_campaign.events.get(action=CampaignEvent.Action.FINDING_OVERRIDDEN)
    assert event.actor == brand_manager
    assert "Banned phrase “today”" in event.note
    assert f"Reason: {REASON}" in event.note
    assert _actions(banned_campaign) == ["finding_overridden", "submitted"]


@pytest.mark.django_db
def test_an_override_stops_applying_when_the_content_produces_a_different_finding(
    banned_campaign, marketer, brand_manager
):
    finding = _banned_finding(banned_campaign)
    finding_override(campaign=banned_campaign, fingerprint=finding.fingerprint, reason=REASON, by=brand_manager)
    banned_campaign.brand.banned_phrases = "today\nstop"
    banned_campaign.brand.save()

    with pytest.raises(ValidationError) as refused:
        campaign_submit(campaign=banned_campaign, by=marketer)

    assert len(refused.value.messages) == 1
    assert "Banned phrase “stop”" in refused.value.messages[0]


@pytest.mark.django_db
def test_marketer_cannot_override_or_approve_or_reject(banned_campaign, marketer):
    finding = _banned_finding(banned_campaign)

    with pytest.raises(PermissionDenied):
        finding_override(campaign=banned_campaign, fingerprint=finding.fingerprint, reason=REASON, by=marketer)
    Campaign.objects.filter(pk=banned_campaign.pk).update(state=Campaign.State.IN_REVIEW)
    banned_campaign.refresh_from_db()
    with pytest.raises(PermissionDenied):
        campaign_approve(campaign=banned_campaign, by=marketer)
    with pytest.raises(PermissionDenied):
        campaign_reject(campaign=banned_campaign, by=marketer, note="Not like this.")

    assert not FindingOverride.objects.exists()
    banned_campaign.refresh_from_db()
    assert banned_campaign.state == Campaign.State.IN_REVIEW


@pytest.mark.django_db
def test_brand_manager_reviews_but_cannot_submit(brand_manager):
    with pytest.raises(PermissionDenied):
        campaign_submit(campaign=two_channel_campaign(), by=brand_manager)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("reason", "fingerprint", "needle"),
    [
        ("ok", None, "Write the reason in a sentence"),
        ("fine by me", None, "Write the reason in a sentence"),
        (REASON, "0" * 64, "no such finding now"),
    ],
)
def test_override_needs_a_real_reason_and_a_current_finding(
    banned_campaign, brand_manager, reason, fingerprint, needle
):
    fingerprint = fingerprint or _banned_finding(banned_campaign).fingerprint
    with pytest.raises(ValidationError, match=needle):
        finding_override(campaign=banned_campaign, fingerprint=fingerprint, reason=reason, by=brand_manager)
    assert not FindingOverride.objects.exists()
    assert not banned_campaign.events.exists()


@pytest.mark.django_db
def test_a_finding_is_overridden_once_and_a_liquid_error_never(brand_manager):
    campaign = two_channel_campaign(brand=BrandFactory(banned_phrases="today"))
    Template.objects.filter(steps__campaign=campaign, channel="email").update(subject="Hi {{ customer.first_name ")
    findings = {f.rule: f for f in check_campaign(campaign)}
    finding_override(
        campaign=campaign, fingerprint=findings[BANNED_PHRASE].fingerprint, reason=REASON, by=brand_manager
    )

    with pytest.raises(ValidationError, match="already overrode"):
        finding_override(
            campaign=campaign, fingerprint=findings[BANNED_PHRASE].fingerprint, reason=REASON, by=brand_manager
        )
    with pytest.raises(ValidationError, match="cannot be overridden, only fixed"):
        finding_override(
            campaign=campaign, fingerprint=findings["liquid_error"].fingerprint, reason=REASON, by=brand_manager
        )
    assert FindingOverride.objects.count() == 1


@pytest.mark.django_db
def test_approve_and_reject_move_a_campaign_in_review_and_record_who_and_why(marketer, brand_manager):
    approved, rejected = two_channel_campaign(), two_channel_campaign()
    campaign_submit(campaign=approved, by=marketer)
    campaign_submit(campaign=rejected, by=marketer)

    campaign_approve(campaign=approved, by=brand_manager, note="Looks on brand.")
    with pytest.raises(ValidationError, match="a note is required"):
        campaign_reject(campaign=rejected, by=brand_manager, note="  ")
    campaign_reject(campaign=rejected, by=brand_manager, note="Use the spring photo in the header.")

    approved.refresh_from_db()
    rejected.refresh_from_db()
    assert (approved.state, rejected.state) == (Campaign.State.APPROVED, Campaign.State.DRAFT)
    assert _actions(approved) == ["submitted", "approved"]
    assert _actions(rejected) == ["submitted", "rejected"]
    event = rejected.events.get(action="rejected")
    assert (event.actor, event.note) == (brand_manager, "Use the spring photo in the header.")
    assert approved.events.get(action="submitted").actor == marketer
    with pytest.raises(ValidationError, match="Only a campaign in review can be approved; this is a draft"):
        campaign_approve(campaign=rejected, by=brand_manager)


@pytest.mark.django_db
def test_approval_checks_again_and_refuses_content_broken_since_submission(marketer, brand_manager):
    campaign = two_channel_campaign()
    campaign_submit(campaign=campaign, by=marketer)
    campaign.brand.banned_phrases = "today"
    campaign.brand.save()

    with pytest.raises(ValidationError, match="Banned phrase “today”"):
        campaign_approve(campaign=campaign, by=brand_manager)
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.IN_REVIEW


@pytest.mark.django_db
def test_only_an_approved_campaign_can_be_scheduled_and_unscheduling_keeps_the_approval(marketer, brand_manager):
    campaign = two_channel_campaign()
    with pytest.raises(ValidationError, match="Only an approved campaign can be scheduled; this is a draft"):
        campaign_schedule(campaign=campaign, at=timezone.now(), by=marketer)
    campaign_submit(campaign=campaign, by=marketer)
    with pytest.raises(ValidationError, match="this is a campaign in review"):
        campaign_schedule(campaign=campaign, at=timezone.now(), by=marketer)
    campaign_approve(campaign=campaign, by=brand_manager)

    at = timezone.now() + timedelta(days=1)
    campaign_schedule(campaign=campaign, at=at, by=marketer)
    campaign.refresh_from_db()
    assert (campaign.state, campaign.scheduled_at) == (Campaign.State.SCHEDULED, at)

    campaign_unschedule(campaign=campaign, by=marketer)
    campaign.refresh_from_db()
    assert (campaign.state, campaign.scheduled_at) == (Campaign.State.APPROVED, None)
    assert _actions(campaign) == ["submitted", "approved", "scheduled", "unscheduled"]
    assert campaign.events.get(action="scheduled").note == f"To launch at {at.isoformat()}."


@pytest.mark.django_db
def test_scheduling_checks_again_after_the_approval(marketer, brand_manager):
    campaign = two_channel_campaign()
    campaign_submit(campaign=campaign, by=marketer)
    campaign_approve(campaign=campaign, by=brand_manager)
    campaign.brand.sms_sender = ""
    campaign.brand.save()

    with pytest.raises(ValidationError, match=r"Step 2 \(SMS\): Northwind has no SMS sender identity"):
        campaign_schedule(campaign=campaign, at=timezone.now(), by=marketer)


@pytest.mark.django_db
def test_admin_can_do_every_review_step():
    admin = UserFactory(username="root", role=ADMIN)
    campaign = two_channel_campaign()
    campaign_submit(campaign=campaign, by=admin)
    campaign_approve(campaign=campaign, by=admin)
    campaign_schedule(campaign=campaign, at=timezone.now(), by=admin)
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.SCHEDULED


@pytest.mark.django_db(transaction=True)
def test_concurrent_double_submit_moves_the_campaign_once(roles):
    marketer = UserFactory(username="mia", role=MARKETER)
    campaign = two_channel_campaign()
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def submit():
        try:
            barrier.wait()
            campaign_submit(campaign=campaign, by=marketer)
            outcomes.append("submitted")
        except ValidationError as exc:
            outcomes.append(exc.messages[0])
        finally:
            connection.close()

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == [
        "Only a draft can be submitted for review; this is a campaign in review.",
        "submitted",
    ]
    assert _actions(campaign) == ["submitted"]
