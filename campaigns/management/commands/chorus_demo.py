"""Demo data: a brand, ~200 customers with consents and history, three segments,
and a scheduled email + SMS campaign. Running it again reuses what exists."""

from __future__ import annotations

import random
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from campaigns.models import Brand, Campaign, Step
from config.roles import ADMIN
from customers.models import Activity, Consent, Customer
from segments.models import Segment

DEMO_USER, DEMO_PASSWORD = "demo", "chorus-demo"
BRAND_NAME = "Northwind Outfitters"
FIRST = ["Ana", "Bartek", "Chloé", "Dawid", "Emma", "Felix", "Greta", "Hugo", "Iga", "Jonas", "Kasia", "Liam",
         "Maja", "Noah", "Ola", "Paul", "Rosa", "Szymon", "Tara", "Zofia"]  # fmt: skip
LAST = ["Nowak", "Kowalska", "Müller", "Schmidt", "Dubois", "Martin", "Smith", "Jones", "Wiśniewski", "Fischer"]
PLACES = [  # country, city, time zone, phone prefix, weight
    ("PL", "Kraków", "Europe/Warsaw", "+48600", 40),
    ("PL", "Warszawa", "Europe/Warsaw", "+48601", 25),
    ("DE", "Berlin", "Europe/Berlin", "+49151", 15),
    ("FR", "Lyon", "Europe/Paris", "+33612", 10),
    ("GB", "London", "Europe/London", "+44770", 10),
]
TIERS = ["bronze", "bronze", "bronze", "silver", "silver", "gold", "platinum"]


class Command(BaseCommand):
    help = "Load demo data (idempotent) and create the demo login."

    def add_arguments(self, parser):
        parser.add_argument("--customers", type=int, default=200)

    @transaction.atomic
    def handle(self, *args, customers: int, **options):
        self._user()
        if Brand.objects.filter(name=BRAND_NAME).exists():
            self.stdout.write("Demo data already present; reusing it.")
        else:
            self._load(customers)
        self.stdout.write(self.style.SUCCESS(f"Log in at http://127.0.0.1:8000/ as {DEMO_USER} / {DEMO_PASSWORD}"))

    def _user(self):
        User = get_user_model()
        user, created = User.objects.get_or_create(
            username=DEMO_USER, defaults={"is_staff": True, "is_superuser": True}
        )
        if created:
            user.set_password(DEMO_PASSWORD)
            user.save()
        user.groups.add(Group.objects.get(name=ADMIN))

    def _load(self, count: int):
        rng = random.Random(2026)  # noqa: S311 - demo data, not security
        now = timezone.now()
        brand = Brand.objects.create(
            name=BRAND_NAME,
            primary_colour="#0F766E",
            secondary_colour="#1F2937",
            legal_company_name="Northwind Outfitters Sp. z o.o.",
            postal_address="ul. Floriańska 12\n31-019 Kraków\nPoland",
            email_from_name="Northwind Outfitters",
            email_from_address="hello@northwind.example",
            email_reply_to="care@northwind.example",
            sms_sender="+15005550006",
        )
        places = [p for p in PLACES for _ in range(p[4])]
        people = []
        for n in range(count):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            country, city, tz, prefix, _ = rng.choice(places)
            # A few addresses the sandbox bounces, so the outbox shows failures too.
            local = f"bounce.{n}" if n % 40 == 39 else f"{first.lower()}.{last.lower()}.{n}"
            people.append(
                Customer(
                    email=local.encode("ascii", "ignore").decode() + "@example.com",
                    phone=f"{prefix}{n:06d}",
                    external_id=f"shop-{10000 + n}",
                    first_name=first,
                    last_name=last,
                    locale={"PL": "pl-PL", "DE": "de-DE", "FR": "fr-FR"}.get(country, "en-GB"),
                    timezone=tz,
                    country=country,
                    city=city,
                    attributes={
                        "tier": rng.choice(TIERS),
                        "newsletter_topics": rng.sample(["hiking", "running", "travel"], 2),
                    },
                    created_at=now - timedelta(days=rng.randint(30, 700)),
                )
            )
        people = Customer.objects.bulk_create(people)
        consents, activities = [], []
        for person in people:
            joined = person.created_at
            for channel, p_in, p_out in (("email", 0.8, 0.1), ("sms", 0.55, 0.15)):
                roll = rng.random()
                if roll < p_in + p_out:
                    status = "opted_in" if roll < p_in else "opted_out"
                    consents.append(
                        Consent(customer=person, channel=channel, status=status, source="import", occurred_at=joined)
                    )
            for _ in range(rng.randint(1, 6)):
                at = now - timedelta(days=rng.randint(0, 365), minutes=rng.randint(0, 1440))
                if rng.random() < 0.4:
                    amount = round(rng.uniform(15, 250), 2)
                    activities.append(
                        Activity(
                            customer=person,
                            kind="purchase",
                            occurred_at=at,
                            properties={"amount": amount, "currency": "EUR"},
                        )
                    )
                else:
                    kind = rng.choice(["message.opened", "message.clicked", "message.delivered"])
                    activities.append(
                        Activity(
                            customer=person,
                            kind=kind,
                            channel="email",
                            occurred_at=at,
                            properties={"source": "history import"},
                        )
                    )
        Consent.objects.bulk_create(consents)
        Activity.objects.bulk_create(activities)

        Segment.objects.create(
            name="Poland",
            description="Everyone in Poland.",
            rules={"all": [{"field": "country", "op": "eq", "value": "PL"}]},
        )
        subscribers = Segment.objects.create(
            name="Email subscribers",
            description="Opted in to email.",
            rules={"all": [{"consent": "email", "op": "eq", "value": "opted_in"}]},
        )
        Segment.objects.create(
            name="VIP customers",
            description="Gold and platinum tier.",
            rules={"any": [{"attribute": "tier", "op": "in", "value": ["gold", "platinum"]}]},
        )
        campaign = Campaign.objects.create(
            name="Spring sale",
            goal="Drive spring collection purchases: 20% off for a week.",
            brand=brand,
            segment=subscribers,
            state=Campaign.State.SCHEDULED,
            scheduled_at=now + timedelta(minutes=2),
        )
        Step.objects.create(
            campaign=campaign,
            position=0,
            channel="email",
            subject="{{ first_name | default: 'Hello' }}, spring is here: 20% off",
            body="Hi {{ first_name | default: 'there' }},\n\nOur spring collection is in, and for one week "
            "everything is 20% off with code SPRING20.\n\nSee you outdoors,\nThe Northwind team",
        )
        Step.objects.create(
            campaign=campaign,
            position=1,
            channel="sms",
            delay=timedelta(minutes=1),
            body="Northwind: {{ first_name }}, 20% off spring gear with code SPRING20. Reply STOP to opt out",
        )
        self.stdout.write(
            f"Loaded {len(people)} customers, {len(consents)} consents, {len(activities)} activities, "
            f"3 segments and the 'Spring sale' campaign (launches at {campaign.scheduled_at:%H:%M} UTC)."
        )
