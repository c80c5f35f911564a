"""Factories for every model the tests build; one place, like cookiecutter-django."""

from __future__ import annotations

from datetime import timedelta

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from campaigns.models import Brand, Campaign, CampaignRun, Step, Template
from campaigns.services import campaign_launch, campaign_schedule
from customers.models import Consent, Customer
from customers.services import consent_record
from segments.models import Segment

PASSWORD = "correct horse battery"  # every factory-made user's; the browser tests sign in with it


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password(PASSWORD)

    @factory.post_generation
    def role(self, create, extracted, **kwargs):
        if extracted:
            self.groups.add(Group.objects.get(name=extracted))


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Customer
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"customer{n}@example.com")
    phone = factory.Sequence(lambda n: f"+4860010{n:04d}")
    first_name = factory.Iterator(["Ana", "Bo", "Cy", "Di", "Ed"])
    last_name = "Nowak"
    country = "PL"
    city = "Krakow"
    timezone = "Europe/Warsaw"

    @factory.post_generation
    def consents(self, create, extracted, **kwargs):
        for channel, status in (extracted or {}).items():
            consent_record(customer=self, channel=channel, status=status, source=Consent.Source.IMPORT)


class BrandFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Brand
        django_get_or_create = ("name",)

    name = "Northwind"
    legal_company_name = "Northwind Outfitters Sp. z o.o."
    postal_address = "ul. Floriańska 1, 31-019 Kraków, Poland"
    email_from_name = "Northwind"
    email_from_address = "hello@northwind.example"
    email_reply_to = "care@northwind.example"
    sms_sender = "+15005550006"


class SegmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Segment

    name = factory.Sequence(lambda n: f"Segment {n}")
    rules = {"all": [{"field": "country", "op": "eq", "value": "PL"}]}


class CampaignFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Campaign

    name = factory.Sequence(lambda n: f"Campaign {n}")
    brand = factory.SubFactory(BrandFactory)
    segment = factory.SubFactory(SegmentFactory)


class TemplateFactory(factory.django.DjangoModelFactory):
    """An email template by default; pass ``channel`` and ``body`` for the others."""

    class Meta:
        model = Template

    name = factory.Sequence(lambda n: f"Template {n}")
    brand = factory.SubFactory(BrandFactory)
    channel = "email"
    subject = factory.LazyAttribute(lambda t: "Spring sale, {{ customer.first_name }}" if t.channel == "email" else "")
    blocks = factory.LazyAttribute(
        lambda t: (
            [
                {"type": "heading", "text": "Spring sale"},
                {
                    "type": "text",
                    "text": "Hi {{ customer.first_name | default: 'there' }}, 20% off everything this week.",
                },
                {"type": "button", "text": "Shop now", "url": "https://northwind.example/sale"},
            ]
            if t.channel == "email"
            else []
        )
    )
    body = ""


class StepFactory(factory.django.DjangoModelFactory):
    """A step whose template matches its channel and the campaign's brand (``template__body=...`` for SMS)."""

    class Meta:
        model = Step

    campaign = factory.SubFactory(CampaignFactory)
    position = factory.Sequence(lambda n: n)
    channel = "email"
    template = factory.SubFactory(
        TemplateFactory,
        channel=factory.SelfAttribute("..channel"),
        brand=factory.SelfAttribute("..campaign.brand"),
    )
    delay = timedelta(0)


def two_channel_campaign(**kwargs) -> Campaign:
    """An email step, then an SMS step straight after (the classic pair)."""
    campaign = CampaignFactory(**kwargs)
    StepFactory(campaign=campaign, position=0, channel="email")
    StepFactory(
        campaign=campaign,
        position=1,
        channel="sms",
        template__body="{{ customer.first_name }}: 20% off today. Reply STOP to opt out",
    )
    return campaign


def api_client(role: str) -> APIClient:
    """An API client authenticated by token as a new user with ``role``."""
    client = APIClient()
    token = Token.objects.create(user=UserFactory(role=role))
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def email_only_campaign(**kwargs) -> Campaign:
    """``two_channel_campaign`` without its SMS step."""
    campaign = two_channel_campaign(**kwargs)
    campaign.steps.filter(channel="sms").delete()
    return campaign


def launch(campaign: Campaign) -> CampaignRun:
    """Take ``campaign`` through review (submit, approve), schedule it for now and launch it.

    An admin does every step. Returns the run, with one enrollment per audience member.
    """
    import django.apps

    from campaigns.services import campaign_approve, campaign_submit
    from config.roles import ADMIN, roles_ensure

    if not Group.objects.filter(name=ADMIN).exists():
        roles_ensure(django.apps.apps)  # transactional tests flush the groups migrations made
    admin = UserFactory(username="launcher", role=ADMIN)
    campaign_submit(campaign=campaign, by=admin)
    campaign_approve(campaign=campaign, by=admin)
    campaign_schedule(campaign=campaign, at=timezone.now(), by=admin)
    return campaign_launch(campaign_id=campaign.pk)
