"""The server-rendered pages, through Django's test client."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from campaigns.models import Campaign, CampaignRun
from channels.models import Message
from tests.factories import CampaignFactory, CustomerFactory, SegmentFactory, two_channel_campaign

pytestmark = pytest.mark.django_db


def _local_input(dt) -> str:
    """What a datetime-local input submits, in the server's time zone."""
    return timezone.localtime(dt).strftime("%Y-%m-%dT%H:%M")


@pytest.mark.parametrize(
    "url",
    [
        "/",
        "/customers/",
        "/segments/",
        "/campaigns/",
        "/outbox/",
        "/campaigns/1/",
        "/customers/1/",
        "/segments/1/",
        "/customers/count/",
        "/customers/personas/",
        "/customers/personas/new/",
        "/customers/personas/loyal/",
    ],
)
def test_every_page_sends_anonymous_visitors_to_login(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_analyst_sees_no_schedule_form_and_gets_403_when_posting(analyst_client):
    campaign = two_channel_campaign()

    page = analyst_client.get(reverse("campaigns:detail", args=[campaign.pk]))
    assert page.status_code == 200
    assert b'data-testid="schedule-form"' not in page.content
    assert reverse("campaigns:schedule", args=[campaign.pk]).encode() not in page.content

    response = analyst_client.post(reverse("campaigns:schedule", args=[campaign.pk]), {"at": ""})
    assert response.status_code == 403
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.DRAFT


def test_analyst_cannot_unschedule(analyst_client):
    campaign = two_channel_campaign(state=Campaign.State.SCHEDULED, scheduled_at=timezone.now() + timedelta(days=1))

    page = analyst_client.get(reverse("campaigns:detail", args=[campaign.pk]))
    assert b'data-testid="unschedule-form"' not in page.content
    response = analyst_client.post(reverse("campaigns:unschedule", args=[campaign.pk]))
    assert response.status_code == 403
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.SCHEDULED


def test_schedule_form_moves_an_approved_campaign_to_scheduled_at_the_local_time_entered(marketer_client):
    campaign = two_channel_campaign(state=Campaign.State.APPROVED)
    page = marketer_client.get(reverse("campaigns:detail", args=[campaign.pk]))
    assert b'data-testid="schedule-form"' in page.content

    at = (timezone.now() + timedelta(days=2)).replace(second=0, microsecond=0)
    response = marketer_client.post(
        reverse("campaigns:schedule", args=[campaign.pk]), {"at": _local_input(at)}, follow=True
    )

    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.SCHEDULED
    assert campaign.scheduled_at == at
    assert response.redirect_chain[-1][0] == reverse("campaigns:detail", args=[campaign.pk])
    assert "is scheduled for" in response.content.decode()
    assert b'data-testid="unschedule-form"' in response.content


def test_schedule_form_left_empty_schedules_now(marketer_client):
    campaign = two_channel_campaign(state=Campaign.State.APPROVED)
    before = timezone.now()

    marketer_client.post(reverse("campaigns:schedule", args=[campaign.pk]), {"at": ""})

    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.SCHEDULED
    assert before <= campaign.scheduled_at <= timezone.now()


def test_schedule_form_shows_why_a_campaign_without_steps_cannot_be_scheduled(marketer_client):
    campaign = CampaignFactory(state=Campaign.State.APPROVED)

    response = marketer_client.post(reverse("campaigns:schedule", args=[campaign.pk]), {"at": ""})

    assert response.status_code == 200
    body = response.content.decode()
    assert 'data-testid="schedule-errors"' in body
    assert "Add at least one step." in body
    assert 'data-testid="schedule-form"' in body  # the form is still there to try again
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.APPROVED


def test_schedule_form_rejects_an_unreadable_time(marketer_client):
    campaign = two_channel_campaign()

    response = marketer_client.post(reverse("campaigns:schedule", args=[campaign.pk]), {"at": "next tuesday"})

    assert "is not a date and time" in response.content.decode()
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.DRAFT


def test_unschedule_returns_a_scheduled_campaign_to_approved(marketer_client):
    campaign = two_channel_campaign(state=Campaign.State.SCHEDULED, scheduled_at=timezone.now() + timedelta(days=1))

    response = marketer_client.post(reverse("campaigns:unschedule", args=[campaign.pk]))

    assert response.status_code == 302
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.APPROVED
    assert campaign.scheduled_at is None


def test_unscheduling_a_campaign_that_already_started_says_so(marketer_client):
    campaign = two_channel_campaign(state=Campaign.State.RUNNING, launched_at=timezone.now())

    response = marketer_client.post(reverse("campaigns:unschedule", args=[campaign.pk]))

    assert response.status_code == 200
    assert 'data-testid="schedule-errors"' in response.content.decode()
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.RUNNING


def test_results_fragment_polls_only_while_the_campaign_can_change(marketer_client):
    campaign = two_channel_campaign(state=Campaign.State.RUNNING, launched_at=timezone.now())
    run = CampaignRun.objects.create(campaign=campaign, number=1)
    email_step = campaign.steps.get(channel="email")
    customer = CustomerFactory()
    Message.objects.create(
        run=run,
        step=email_step,
        customer=customer,
        channel="email",
        status=Message.Status.DELIVERED,
        rank=Message.RANK[Message.Status.DELIVERED],
        sent_at=timezone.now(),
        delivered_at=timezone.now(),
    )
    url = reverse("campaigns:detail", args=[campaign.pk])

    fragment = marketer_client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert fragment.lstrip().startswith('<section class="card" id="campaign-results"')
    assert 'hx-trigger="every 5s"' in fragment
    assert '<td class="num" data-metric="delivered">1</td>' in fragment
    assert 'hx-swap-oob="true"' in fragment  # the state badge follows along

    Campaign.objects.filter(pk=campaign.pk).update(state=Campaign.State.COMPLETED, completed_at=timezone.now())
    fragment = marketer_client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert "hx-trigger" not in fragment.split("</section>")[0]


def test_customer_search_fragment_lists_only_matches(marketer_client):
    CustomerFactory(first_name="Zofia", last_name="Wrona", email="zofia@example.com")
    CustomerFactory(first_name="Adam", last_name="Nowak", email="adam@example.com")

    response = marketer_client.get(reverse("customers:list"), {"q": "wrona"}, headers={"HX-Request": "true"})

    body = response.content.decode()
    assert body.lstrip().startswith('<div id="customer-results">')
    assert "Zofia Wrona" in body
    assert "Adam Nowak" not in body
    assert "HX-Request" in response["Vary"]


def test_list_pages_do_not_query_per_row(marketer_client, django_assert_max_num_queries):
    segment = SegmentFactory()
    for _ in range(12):
        two_channel_campaign(segment=segment)
        CustomerFactory(consents={"email": "opted_in", "sms": "opted_out"})

    for url in ("/", "/campaigns/", "/customers/", "/segments/", "/outbox/"):
        with django_assert_max_num_queries(12):
            assert marketer_client.get(url).status_code == 200


def test_segment_page_shows_rules_count_and_members(marketer_client):
    segment = SegmentFactory(name="Poland")
    inside = CustomerFactory(first_name="Ola", country="PL")
    CustomerFactory(first_name="Hans", last_name="Weber", country="DE")

    body = marketer_client.get(reverse("segments:detail", args=[segment.pk])).content.decode()

    assert "&quot;op&quot;: &quot;eq&quot;" in body  # rules rendered as indented JSON
    assert reverse("customers:detail", args=[inside.pk]) in body
    assert "Hans Weber" not in body
    count = marketer_client.get(reverse("segments:count", args=[segment.pk])).content.decode()
    assert ">1<" in count
