"""Demo data: a brand with its guidelines, ~200 customers with consents, purchases,
events and a past campaign's messages, four personas, three segments, email and SMS
templates (with a persona variant), SMS prices, and a scheduled email + SMS campaign.
Running it again reuses what exists (personas and template variants are brought up
to date, stats and personas recomputed)."""

from __future__ import annotations

import random
import unicodedata
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from campaigns.content.render import render_template
from campaigns.models import (
    Brand,
    Campaign,
    CampaignEvent,
    CampaignRun,
    Enrollment,
    RequiredPhrase,
    SmsPrice,
    Step,
    Template,
    TemplateVariant,
)
from channels.models import Message, SenderRateLimit
from config.roles import ADMIN
from customers.models import Activity, Consent, Customer, Persona
from customers.services.activities import customer_stats_refresh
from customers.services.personas import persona_save, personas_assign
from segments.models import Segment

DEMO_USER, DEMO_PASSWORD = "demo", "chorus-demo"
BRAND_NAME = "Northwind Outfitters"
FIRST = ["Ana", "Bartek", "Chloé", "Dawid", "Emma", "Felix", "Greta", "Hugo", "Iga", "Jonas", "Kasia", "Liam",
         "Maja", "Noah", "Ola", "Paul", "Rosa", "Szymon", "Tara", "Zofia"]  # fmt: skip
LAST = ["Nowak", "Kowalska", "Müller", "Schmidt", "Dubois", "Martin", "Smith", "Jones", "Wiśniewski", "Fischer"]
PLACES = [  # country, city, time zone, mobile prefix (valid ranges for phonenumbers), weight
    ("PL", "Kraków", "Europe/Warsaw", "+48600", 40),
    ("PL", "Warszawa", "Europe/Warsaw", "+48601", 25),
    ("DE", "Berlin", "Europe/Berlin", "+4915123", 15),
    ("FR", "Lyon", "Europe/Paris", "+33612", 10),
    ("GB", "London", "Europe/London", "+447700", 10),
]
TIERS = ["bronze", "bronze", "bronze", "silver", "silver", "gold", "platinum"]
PRODUCTS = ["Trail runner 2", "Alpine shell jacket", "Merino base layer", "Day pack 24L", "Trekking poles",
            "Down vest", "Hiking socks (3-pack)", "Headlamp 400"]  # fmt: skip
# Shares of the demo audience, in order; the rest are occasional shoppers.
ARCHETYPES = [("loyal", 0.15), ("lapsed", 0.15), ("bargain", 0.2), ("new", 0.12)]

PERSONAS = [
    {
        "slug": "lapsed",
        "name": "Lapsed",
        "priority": 50,
        "description": "Bought from us before, but not in the last six months.",
        "goals": "A reason to come back: what is new since their last order, and whether it fits them.",
        "pain_points": "Forgot about us, or the last order disappointed. Guilt-tripping 'we miss you' mail.",
        "tone_of_voice": "Friendly and brief, no guilt. One clear reason to return and one clear offer.",
        "preferred_channels": ["email"],
        "rules": {
            "all": [
                {"field": "orders_count", "op": "gte", "value": 1},
                {"field": "last_purchase_at", "op": "before_last_days", "value": 180},
            ]
        },
    },
    {
        "slug": "loyal-regular",
        "name": "Loyal regular",
        "priority": 40,
        "description": "Five orders or more: our best customers.",
        "goals": "Gear that lasts; early access to new collections; being recognised as a regular.",
        "pain_points": "Discounts that reward newcomers more than them; emails about things they already own.",
        "tone_of_voice": "Warm, personal, insider. Thank them first; no hard sell.",
        "preferred_channels": ["email", "sms"],
        "rules": {"all": [{"field": "orders_count", "op": "gte", "value": 5}]},
    },
    {
        "slug": "bargain-hunter",
        "name": "Bargain hunter",
        "priority": 30,
        "description": "Shops on promotions and redeems coupons often.",
        "goals": "The best price for good-quality gear; hearing about sales first.",
        "pain_points": "Full-price messaging; missing a sale by a day.",
        "tone_of_voice": "Direct and concrete: the discount, the code and the deadline up front.",
        "preferred_channels": ["sms", "email"],
        "rules": {
            "any": [
                {"attribute": "coupon_uses", "op": "gte", "value": 3},
                {"activity": "coupon.redeemed", "min_count": 3, "within_days": 365, "performed": True},
            ]
        },
    },
    {
        "slug": "new-subscriber",
        "name": "New subscriber",
        "priority": 20,
        "description": "Joined in the last 30 days.",
        "goals": "Understand what Northwind stands for and make a confident first purchase.",
        "pain_points": "Too many choices; unsure about sizes, delivery and returns.",
        "tone_of_voice": "Welcoming and helpful: guides, size advice, free returns. Assume nothing.",
        "preferred_channels": ["email"],
        "rules": {"all": [{"field": "created_at", "op": "within_last_days", "value": 30}]},
    },
]


SHOP = "https://northwind.example"
SMS_OPT_OUT = "Reply STOP to opt out"
SMS_PRICES = [("PL", "0.0410", "USD"), ("DE", "0.0850", "USD"), ("GB", "0.0420", "USD"), ("US", "0.0079", "USD")]


def _email_blocks(*, heading: str, intro: str, title: str, offer: str, code: str, url: str, button: str) -> list:
    return [
        {"type": "heading", "text": heading},
        {"type": "text", "text": intro},
        {"type": "offer", "title": title, "text": offer, "code": code, "url": url},
        {"type": "button", "text": button, "url": url},
        {"type": "divider"},
        {"type": "text", "text": "Questions about sizes or delivery? Just reply to this email."},
    ]


SPRING_EMAIL = {
    "subject": "{{ customer.first_name | default: 'Hello' }}, spring is here: 20% off",
    "preheader": "One week only: 20% off the whole spring collection with code SPRING20.",
    "blocks": _email_blocks(
        heading="Spring is here, {{ customer.first_name | default: 'friend' }}",
        intro="Our spring collection is in: light shells, merino layers and trail shoes for long days outside.\n\n"
        "For one week everything is 20% off, in every store and online.",
        title="20% off everything",
        offer="Valid until Sunday midnight, on top of free returns within 30 days.",
        code="SPRING20",
        url=f"{SHOP}/spring",
        button="Shop the spring collection",
    ),
}
# What the bargain hunters get instead: the deal up front, nothing else changes.
SPRING_EMAIL_BARGAIN = {
    "subject": "Code SPRING20: 20% off everything until Sunday",
    "preheader": "The whole spring range, 20% off. Ends Sunday midnight.",
    "blocks": _email_blocks(
        heading="20% off everything, {{ customer.first_name | default: 'friend' }}",
        intro="You asked to hear about sales first: here it is. Code SPRING20 takes 20% off the whole spring "
        "range until Sunday midnight, sale items included.",
        title="SPRING20: 20% off",
        offer="Stacks with free delivery over 50 EUR. Ends Sunday midnight.",
        code="SPRING20",
        url=f"{SHOP}/spring?sort=price",
        button="See the deals",
    ),
}
SPRING_SMS = (
    f"Northwind: {{{{ customer.first_name }}}}, 20% off spring gear with code SPRING20 {SHOP}/spring {SMS_OPT_OUT}"
)
# The campaign's public post, and a direct message to customers who follow on Mastodon.
SPRING_POST = "Spring is here: 20% off the whole spring collection this week with code SPRING20. " + f"{SHOP}/spring"
WINTER_EMAIL = {
    "subject": "{{ customer.first_name | default: 'Hello' }}, winter clearance: up to 30% off",
    "preheader": "Up to 30% off outerwear while stocks last.",
    "blocks": _email_blocks(
        heading="Winter clearance",
        intro="Hi {{ customer.first_name | default: 'there' }},\n\nOur winter clearance is on: up to 30% off outerwear "
        "while stocks last.",
        title="Up to 30% off outerwear",
        offer="While stocks last.",
        code="WINTER30",
        url=f"{SHOP}/winter",
        button="Shop the clearance",
    ),
}
WINTER_SMS = f"Northwind: {{{{ customer.first_name }}}}, last day of winter clearance, code WINTER30. {SMS_OPT_OUT}"


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
        # Stats first: the personas' rules read them.
        customer_stats_refresh(customer_ids=Customer.objects.live().values_list("pk", flat=True))
        self._personas()
        self._variants()
        personas_assign()
        counts = dict(Persona.objects.annotate(n=Count("customers")).order_by("-priority").values_list("name", "n"))
        self.stdout.write("Personas: " + ", ".join(f"{name} {n}" for name, n in counts.items()))
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

    def _personas(self):
        """Create the demo personas or bring them back to their demo definition (by slug)."""
        for definition in PERSONAS:
            persona = Persona.objects.filter(slug=definition["slug"]).first() or Persona()
            persona_save(persona=persona, data=definition)

    def _variants(self):
        """The bargain hunters' version of the spring email (by template and persona slug)."""
        template = Template.objects.filter(brand__name=BRAND_NAME, name="Spring sale · email").first()
        persona = Persona.objects.filter(slug="bargain-hunter").first()
        if template and persona:
            TemplateVariant.objects.update_or_create(template=template, persona=persona, defaults=SPRING_EMAIL_BARGAIN)

    def _brand(self) -> Brand:
        brand = Brand.objects.create(
            name=BRAND_NAME,
            primary_colour="#0F766E",
            secondary_colour="#1F2937",
            text_colour="#1F2933",
            background_colour="#F3F4F6",
            font_stack="'Helvetica Neue', Helvetica, Arial, sans-serif",
            voice_and_tone="Outdoorsy and plain-spoken. Short sentences, concrete benefits, no hype: "
            "we never promise what the gear cannot do.",
            legal_company_name="Northwind Outfitters Sp. z o.o.",
            postal_address="ul. Floriańska 12\n31-019 Kraków\nPoland",
            email_from_name="Northwind Outfitters",
            email_from_address="hello@northwind.example",
            email_reply_to="care@northwind.example",
            sms_sender="+15005550006",
            mastodon_account="@northwind@mastodon.social",
            bluesky_account="northwind.bsky.social",
            banned_phrases="guaranteed\nrisk-free\nact now\nmiracle",
            link_domains="northwind.example",
            utm_parameters="utm_source=chorus",
            seed_list="marketing@northwind.example\n+48600999001",
        )
        RequiredPhrase.objects.create(brand=brand, channel="sms", phrase=SMS_OPT_OUT)
        # The demo SMS sender sends at most 10 per second, across all workers (see the admin).
        SenderRateLimit.objects.get_or_create(channel="sms", sender=brand.sms_sender, defaults={"per_second": 10})
        for country, price, currency in SMS_PRICES:
            SmsPrice.objects.get_or_create(country=country, defaults={"price_per_segment": price, "currency": currency})
        return brand

    @staticmethod
    def _template(brand: Brand, name: str, channel: str, content: dict | str) -> Template:
        fields = {"body": content} if isinstance(content, str) else content
        return Template.objects.create(name=name, brand=brand, channel=channel, **fields)

    def _load(self, count: int):
        rng = random.Random(2026)  # noqa: S311 - demo data, not security
        now = timezone.now()
        brand = self._brand()
        places = [p for p in PLACES for _ in range(p[4])]
        people, archetypes = [], []
        for n in range(count):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            country, city, tz, prefix, _ = rng.choice(places)
            archetype = self._archetype(rng.random())
            joined_days_ago = (
                rng.randint(1, 29) if archetype == "new" else rng.randint(260 if archetype == "lapsed" else 60, 700)
            )
            # A few addresses the sandbox bounces, so the outbox shows failures too.
            local = f"bounce.{n}" if n % 40 == 39 else f"{first.lower()}.{last.lower()}.{n}"
            attributes = {
                "tier": rng.choice(TIERS),
                "newsletter_topics": rng.sample(["hiking", "running", "travel"], 2),
            }
            if archetype == "bargain":
                attributes["coupon_uses"] = rng.randint(3, 8)
            elif rng.random() < 0.5:
                attributes["coupon_uses"] = rng.randint(0, 2)
            people.append(
                Customer(
                    email=unicodedata.normalize("NFKD", local).encode("ascii", "ignore").decode() + "@example.com",
                    phone=f"{prefix}{n:06d}",
                    external_id=f"shop-{10000 + n}",
                    first_name=first,
                    last_name=last,
                    locale={"PL": "pl-PL", "DE": "de-DE", "FR": "fr-FR"}.get(country, "en-GB"),
                    timezone=tz,
                    country=country,
                    city=city,
                    mastodon_handle=f"@{first.lower().encode('ascii', 'ignore').decode()}{n}@mastodon.social"
                    if n % 7 == 0
                    else None,
                    bluesky_handle=f"{last.lower().encode('ascii', 'ignore').decode()}{n}.bsky.social"
                    if n % 9 == 0
                    else None,
                    attributes=attributes,
                    created_at=now - timedelta(days=joined_days_ago, minutes=rng.randint(0, 1440)),
                )
            )
            archetypes.append(archetype)
        people = Customer.objects.bulk_create(people)

        consents, activities = [], []
        email_ok, sms_ok = set(), {}  # who may receive the past campaign; SMS: until when
        for person, archetype in zip(people, archetypes, strict=True):
            self._consents(rng, person, now, consents, activities, email_ok, sms_ok)
            self._purchases(rng, person, archetype, now, activities)
            self._events(rng, person, archetype, now, activities)
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
        sent = self._past_campaign(rng, brand, subscribers, people, now, email_ok, sms_ok)
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
            template=self._template(brand, "Spring sale · email", "email", SPRING_EMAIL),
        )
        Step.objects.create(
            campaign=campaign,
            position=1,
            channel="sms",
            delay=timedelta(minutes=1),
            template=self._template(brand, "Spring sale · SMS", "sms", SPRING_SMS),
        )
        Step.objects.create(
            campaign=campaign,
            position=2,
            channel="mastodon",
            delay=timedelta(minutes=1),
            template=self._template(brand, "Spring sale · Mastodon", "mastodon", SPRING_POST),
        )
        # The review it went through, as the audit trail shows it.
        reviewer = get_user_model().objects.get(username=DEMO_USER)
        for minutes, action in ((6, "submitted"), (4, "approved"), (2, "scheduled")):
            CampaignEvent.objects.create(
                campaign=campaign, action=action, actor=reviewer, occurred_at=now - timedelta(minutes=minutes)
            )
        self.stdout.write(
            f"Loaded {len(people)} customers, {len(consents)} consents, "
            f"{Activity.objects.filter(customer__in=people).count()} activities (purchases, shop events, consent "
            f"changes and {sent} messages of the completed 'Winter clearance' campaign), 3 segments and the "
            f"'Spring sale' campaign (launches at {campaign.scheduled_at:%H:%M} UTC)."
        )

    @staticmethod
    def _archetype(roll: float) -> str:
        for name, share in ARCHETYPES:
            if roll < share:
                return name
            roll -= share
        return "occasional"

    def _consents(self, rng, person, now, consents, activities, email_ok, sms_ok):
        """An import-time state per channel, and for some a later change with its evidence."""
        joined = person.created_at
        for channel, p_in, p_out in (("email", 0.8, 0.1), ("sms", 0.55, 0.15), ("social", 0.3, 0.05)):
            roll = rng.random()
            if roll >= p_in + p_out:
                continue  # never asked
            status = "opted_in" if roll < p_in else "opted_out"
            rows = [("import", status, joined, {"file": "shop-export-2024.csv"})]
            age = max((now - joined).days, 2)
            if channel == "email" and status == "opted_in" and rng.random() < 0.25:
                at = joined + timedelta(days=rng.randint(1, age - 1))
                rows.append(("form", "opted_in", at, {"ip": f"203.0.113.{rng.randint(2, 254)}", "form": "footer"}))
            if channel == "sms" and status == "opted_in" and rng.random() < 0.12:
                at = joined + timedelta(days=rng.randint(1, age - 1))
                rows.append(("sms_keyword", "opted_out", at, {"keyword": "STOP"}))
            previous = "unknown"
            for source, state, at, evidence in rows:
                consents.append(
                    Consent(
                        customer=person, channel=channel, status=state, source=source, occurred_at=at, evidence=evidence
                    )
                )
                if state != previous:
                    activities.append(
                        Activity(
                            customer=person,
                            kind="consent.changed",
                            channel=channel,
                            occurred_at=at,
                            properties={"from": previous, "to": state, "source": source},
                        )
                    )
                previous = state
            if channel == "email" and previous == "opted_in":
                email_ok.add(person.pk)
            if channel == "sms" and status == "opted_in":
                # Reachable by SMS until the STOP, if any.
                sms_ok[person.pk] = rows[-1][2] if previous == "opted_out" else now

    def _purchases(self, rng, person, archetype, now, activities):
        age = max((now - person.created_at).days, 1)
        if archetype == "loyal":
            days = [rng.randint(0, min(170, age)) for _ in range(rng.randint(5, 12))]
            amounts = (40, 250)
        elif archetype == "lapsed":
            days = [rng.randint(200, max(201, min(600, age))) for _ in range(rng.randint(1, 4))]
            amounts = (30, 180)
        elif archetype == "bargain":
            days = [rng.randint(0, min(150, age)) for _ in range(rng.randint(1, 4))]
            amounts = (10, 60)
        elif archetype == "new":
            days = [rng.randint(0, age - 1)] if rng.random() < 0.4 and age > 1 else []
            amounts = (20, 120)
        else:
            days = [rng.randint(0, min(170, age)) for _ in range(rng.choice([0, 0, 1, 2, 3]))]
            amounts = (20, 200)
        for n, day in enumerate(sorted(days, reverse=True)):
            properties = {
                "amount": round(rng.uniform(*amounts), 2),
                "currency": "EUR",
                "order_id": f"NW-{person.pk:05d}-{n + 1}",
                "product": rng.choice(PRODUCTS),
            }
            if archetype == "bargain":
                properties["coupon"] = rng.choice(["WELCOME10", "FLASH20", "WINTER30"])
            activities.append(
                Activity(
                    customer=person,
                    kind="purchase",
                    occurred_at=now - timedelta(days=day, minutes=rng.randint(0, 1440)),
                    properties=properties,
                )
            )

    def _events(self, rng, person, archetype, now, activities):
        """Custom events from the shop: product views, abandoned carts and coupon redemptions."""
        age = max((now - person.created_at).days, 1)
        for _ in range(rng.randint(0, 4)):
            activities.append(
                Activity(
                    customer=person,
                    kind="product.viewed",
                    occurred_at=now - timedelta(days=rng.randint(0, min(age, 90))),
                    properties={"product": rng.choice(PRODUCTS), "source": "web"},
                )
            )
        if rng.random() < 0.2:
            activities.append(
                Activity(
                    customer=person,
                    kind="cart.abandoned",
                    occurred_at=now - timedelta(days=rng.randint(0, min(age, 60))),
                    properties={"items": rng.randint(1, 4), "value": round(rng.uniform(30, 300), 2)},
                )
            )
        uses = person.attributes.get("coupon_uses", 0) if archetype == "bargain" else 0
        for _ in range(uses):
            activities.append(
                Activity(
                    customer=person,
                    kind="coupon.redeemed",
                    channel="email",
                    occurred_at=now - timedelta(days=rng.randint(0, min(age, 300))),
                    properties={"code": rng.choice(["WELCOME10", "FLASH20", "WINTER30"])},
                )
            )

    def _past_campaign(self, rng, brand, segment, people, now, email_ok, sms_ok) -> int:
        """A completed email + SMS campaign from 75 days ago, with its messages and their outcomes,
        so campaign reports, persona engagement and customers' engagement summaries have history."""
        started = now - timedelta(days=75)
        campaign = Campaign.objects.create(
            name="Winter clearance",
            goal="Clear winter stock: up to 30% off outerwear.",
            brand=brand,
            segment=segment,
            state=Campaign.State.COMPLETED,
            scheduled_at=started,
            launched_at=started,
            completed_at=started + timedelta(days=1, hours=1),
        )
        email = Step.objects.create(
            campaign=campaign,
            position=0,
            channel="email",
            template=self._template(brand, "Winter clearance · email", "email", WINTER_EMAIL),
        )
        sms = Step.objects.create(
            campaign=campaign,
            position=1,
            channel="sms",
            delay=timedelta(days=1),
            template=self._template(brand, "Winter clearance · SMS", "sms", WINTER_SMS),
        )
        run = CampaignRun.objects.create(
            campaign=campaign, number=1, started_at=started, finished_at=campaign.completed_at
        )
        messages, outcomes, enrolled = [], [], []
        for person in people:
            if person.created_at >= started:
                continue  # joined after the campaign
            for step, at, ok in (
                (email, started, person.pk in email_ok),
                (sms, started + timedelta(days=1), sms_ok.get(person.pk, started) > started + timedelta(days=1)),
            ):
                if not ok:
                    continue
                at = at + timedelta(minutes=rng.randint(0, 30))
                # What the customer got: the template rendered for them (preview links: no message existed yet).
                content = render_template(step.template, campaign=campaign, customer=person)
                steps = self._outcome(rng, step.channel, person.email or "")
                status = steps[-1][0] if steps else "sent"
                stamps = {
                    f"{name}_at": at + offset for name, offset in steps if name in {"delivered", "opened", "clicked"}
                }
                if status == Message.Status.BOUNCED:
                    stamps["failed_at"] = at + steps[-1][1]
                messages.append(
                    Message(
                        run=run,
                        step=step,
                        customer=person,
                        channel=step.channel,
                        status=status,
                        rank=Message.RANK[status],
                        to_address=person.address_for(step.channel) or "",
                        subject=content.subject,
                        body=content.text,
                        provider="sendgrid" if step.channel == "email" else "twilio",
                        attempts=1,
                        created_at=at,
                        sent_at=at,
                        **stamps,
                    )
                )
                outcomes.append((person, step, at, steps))
            if person.pk in email_ok or person.pk in sms_ok:
                enrolled.append(Enrollment(run=run, customer=person, step_position=2, state=Enrollment.State.COMPLETED))
        Enrollment.objects.bulk_create(enrolled)
        messages = Message.objects.bulk_create(messages)
        activities = []
        for message, (person, step, at, steps) in zip(messages, outcomes, strict=True):
            for name, offset in [("sent", timedelta(0)), *steps]:
                activities.append(
                    Activity(
                        customer=person,
                        kind=f"message.{name}",
                        channel=step.channel,
                        campaign=campaign,
                        message=message,
                        occurred_at=at + offset,
                        properties={"step": step.position + 1},
                    )
                )
        Activity.objects.bulk_create(activities)
        return len(messages)

    @staticmethod
    def _outcome(rng, channel: str, email: str) -> list[tuple[str, timedelta]]:
        """What happened after sending: (status, delay after the send) in order; the last is final."""
        if channel == "email" and email.startswith("bounce."):
            return [("bounced", timedelta(minutes=1))]
        if rng.random() > (0.95 if channel == "email" else 0.97):
            return []  # sent, but no delivery receipt came back
        steps = [("delivered", timedelta(minutes=1))]
        if channel == "email" and rng.random() < 0.48:
            steps.append(("opened", timedelta(hours=rng.randint(1, 30))))
            if rng.random() < 0.32:
                steps.append(("clicked", steps[-1][1] + timedelta(minutes=rng.randint(1, 20))))
        elif channel == "sms" and rng.random() < 0.09:
            steps.append(("clicked", timedelta(hours=rng.randint(1, 6))))
        return steps
