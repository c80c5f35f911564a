from __future__ import annotations

import functools
import re
import zoneinfo
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone as tz

from customers.identity import IDENTITY_FIELDS, normalize_identities
from customers.querysets import CustomerQuerySet


class Channel(models.TextChoices):
    """The channels a customer can be reached on (and consent to)."""

    EMAIL = "email", "Email"
    SMS = "sms", "SMS"
    WHATSAPP = "whatsapp", "WhatsApp"
    SOCIAL = "social", "Social"


E164 = re.compile(r"^\+[1-9]\d{6,14}$")
ACTIVITY_KIND = re.compile(r"^[a-z0-9_.]{1,64}$")


@functools.cache
def iana_timezones() -> frozenset[str]:
    """Every IANA time zone name; ``zoneinfo.available_timezones()`` walks the tz database (~10 ms)."""
    return frozenset(zoneinfo.available_timezones())


def validate_timezone(value: str) -> None:
    if value and value not in iana_timezones():
        raise ValidationError(f"{value!r} is not an IANA time zone (for example Europe/Warsaw).")


def validate_e164(value: str) -> None:
    if value and not E164.match(value):
        raise ValidationError(f"{value!r} is not a phone number in E.164 form (for example +48600100200).")


class Customer(models.Model):
    """The single record of one person: identities, profile and attributes."""

    email = models.EmailField(max_length=254, null=True, blank=True)  # noqa: DJ001
    phone = models.CharField(max_length=16, null=True, blank=True, validators=[validate_e164])  # noqa: DJ001
    external_id = models.CharField(max_length=128, null=True, blank=True)  # noqa: DJ001
    first_name = models.CharField(max_length=100, blank=True)
    last_name = models.CharField(max_length=100, blank=True)
    locale = models.CharField(max_length=16, blank=True)
    timezone = models.CharField(max_length=64, blank=True, validators=[validate_timezone])
    country = models.CharField(max_length=2, blank=True, help_text="ISO 3166-1 alpha-2, e.g. PL")
    city = models.CharField(max_length=100, blank=True)
    mastodon_handle = models.CharField(max_length=100, null=True, blank=True, help_text="@user@host")  # noqa: DJ001
    bluesky_handle = models.CharField(max_length=253, null=True, blank=True, help_text="anna.bsky.social")  # noqa: DJ001
    attributes = models.JSONField(default=dict, blank=True)
    persona = models.ForeignKey(
        "customers.Persona", null=True, blank=True, on_delete=models.SET_NULL, related_name="customers"
    )
    # Derived from activities (customers.services.activities), never edited by hand.
    lifetime_value = models.DecimalField(max_digits=14, decimal_places=2, default=Decimal(0))
    orders_count = models.PositiveIntegerField(default=0)
    last_purchase_at = models.DateTimeField(null=True, blank=True)
    last_engaged_email_at = models.DateTimeField(null=True, blank=True)
    last_engaged_sms_at = models.DateTimeField(null=True, blank=True)
    last_engaged_whatsapp_at = models.DateTimeField(null=True, blank=True)
    last_engaged_social_at = models.DateTimeField(null=True, blank=True)
    erased_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=tz.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = CustomerQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        # Every audience excludes erased customers (segments.selectors), so the indexes
        # that segment counts lean on cover live customers only: counts stay index-only.
        indexes = [
            models.Index(fields=["id"], condition=Q(erased_at__isnull=True), name="customer_live_idx"),
            models.Index(fields=["country"], condition=Q(erased_at__isnull=True), name="customer_live_country_idx"),
            models.Index(fields=["created_at"], condition=Q(erased_at__isnull=True), name="customer_live_created_idx"),
        ]
        # Identity keys are unique when present. Partial indexes skip the NULLs (most
        # customers have no social handle) and, unlike unique=True on PostgreSQL, add
        # no second LIKE index per column: both keep imports fast.
        constraints = [
            models.UniqueConstraint(
                fields=[field],
                condition=Q(**{f"{field}__isnull": False}),
                name=f"customer_{field}_unique",
                violation_error_message=f"Another customer already has this {field.replace('_', ' ')}.",
            )
            for field in IDENTITY_FIELDS
        ]

    def __str__(self) -> str:
        return self.full_name or self.email or self.phone or f"Customer #{self.pk}"

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()

    def clean(self) -> None:
        # Identity keys are unique only when present: normalise, and store absence as NULL.
        for field, value in normalize_identities(
            {field: getattr(self, field) for field in IDENTITY_FIELDS}, region=self.country or None
        ).items():
            setattr(self, field, value)
        self.country = (self.country or "").strip().upper()
        if self.erased_at is None and not any(getattr(self, field) for field in IDENTITY_FIELDS):
            raise ValidationError(f"A customer needs at least one of {', '.join(IDENTITY_FIELDS)}.")

    def last_engaged_at(self, channel: str) -> datetime | None:
        return getattr(self, f"last_engaged_{channel}_at", None)

    def address_for(self, channel: str) -> str | None:
        """Where a message on ``channel`` goes, or None if we cannot reach them there."""
        if self.erased_at is not None:
            return None
        if channel == Channel.EMAIL:
            return self.email
        if channel in (Channel.SMS, Channel.WHATSAPP):
            return self.phone
        if channel == Channel.SOCIAL:
            return self.mastodon_handle or self.bluesky_handle
        # The social networks' content channels (campaigns.ContentChannel), which share the social consent.
        if channel == "mastodon":
            return self.mastodon_handle
        if channel == "bluesky":
            return self.bluesky_handle
        return None


class Persona(models.Model):
    """An archetype customers fall into by rules; the highest-priority match wins."""

    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    goals = models.TextField(blank=True)
    pain_points = models.TextField(blank=True)
    preferred_channels = models.JSONField(default=list, blank=True, help_text='For example ["email", "sms"]')
    tone_of_voice = models.TextField(blank=True)
    rules = models.JSONField(
        default=dict,
        help_text='Segment rule language, e.g. {"all": [{"field": "orders_count", "op": "gte", "value": 5}]}',
    )
    priority = models.IntegerField(default=0, help_text="When several personas match, the highest priority wins.")
    created_at = models.DateTimeField(default=tz.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-priority", "name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from segments.rules import RuleError, validate

        unknown = sorted(set(self.preferred_channels or []) - set(Channel.values))
        if not isinstance(self.preferred_channels, list) or unknown:
            raise ValidationError({"preferred_channels": f"Use a list of channels from {', '.join(Channel.values)}."})
        try:
            validate(self.rules, for_persona=True)
        except RuleError as exc:
            raise ValidationError({"rules": str(exc)}) from None


class Consent(models.Model):
    """Append-only consent ledger; the latest row per channel is the current state."""

    class Status(models.TextChoices):
        OPTED_IN = "opted_in", "Opted in"
        OPTED_OUT = "opted_out", "Opted out"

    class Source(models.TextChoices):
        IMPORT = "import", "Import"
        API = "api", "API"
        FORM = "form", "Form"
        SMS_KEYWORD = "sms_keyword", "SMS keyword"
        ONE_CLICK = "one_click", "One-click unsubscribe"
        PROVIDER_EVENT = "provider_event", "Provider event"
        ADMIN = "admin", "Admin"

    # Indexed by consent_latest_idx (customer first).
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="consents", db_index=False)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    status = models.CharField(max_length=16, choices=Status.choices)
    source = models.CharField(max_length=16, choices=Source.choices)
    occurred_at = models.DateTimeField(default=tz.now)
    evidence = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-occurred_at", "-id"]
        indexes = [models.Index(fields=["customer", "channel", "-occurred_at", "-id"], name="consent_latest_idx")]

    def __str__(self) -> str:
        return f"{self.customer_id} {self.channel} {self.status}"


class Activity(models.Model):
    """One thing that happened to or with a customer: the timeline."""

    class Kind(models.TextChoices):
        MESSAGE_SENT = "message.sent"
        MESSAGE_DELIVERED = "message.delivered"
        MESSAGE_OPENED = "message.opened"
        MESSAGE_CLICKED = "message.clicked"
        MESSAGE_BOUNCED = "message.bounced"
        MESSAGE_DEFERRED = "message.deferred"
        MESSAGE_DROPPED = "message.dropped"
        MESSAGE_FAILED = "message.failed"
        MESSAGE_SKIPPED = "message.skipped"
        MESSAGE_RETRIED = "message.retried"
        MESSAGE_REPLIED = "message.replied"
        MESSAGE_UNSUBSCRIBED = "message.unsubscribed"
        MESSAGE_COMPLAINED = "message.complained"
        SOCIAL_MENTIONED = "social.mentioned"
        CONSENT_CHANGED = "consent.changed"
        PURCHASE = "purchase"

    # Indexed by activity_timeline_idx (customer first); a separate FK index would only slow writes.
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="activities", db_index=False)
    occurred_at = models.DateTimeField(default=tz.now)
    kind = models.CharField(max_length=64)
    channel = models.CharField(max_length=16, choices=Channel.choices, blank=True)
    # Where the entry came from. No database constraint on these two: the timeline is the busiest
    # table (every send, every webhook event), a constraint costs each row a check and a row lock
    # at commit (10% of webhook ingestion), and Django still sets them NULL on delete.
    campaign = models.ForeignKey(
        "campaigns.Campaign", null=True, blank=True, on_delete=models.SET_NULL, db_index=False, db_constraint=False
    )
    message = models.ForeignKey(
        "channels.Message", null=True, blank=True, on_delete=models.SET_NULL, db_index=False, db_constraint=False
    )
    properties = models.JSONField(default=dict, blank=True)
    # Set by API clients so a retried event is recorded once.
    client_event_id = models.CharField(max_length=128, null=True, blank=True)  # noqa: DJ001

    class Meta:
        ordering = ["-occurred_at", "-id"]
        verbose_name_plural = "activities"
        indexes = [
            models.Index(fields=["customer", "-occurred_at"], name="activity_timeline_idx"),
            # Activity rules ("clicked an email in the last 30 days") read only this index
            # on PostgreSQL: customer and campaign ride along (INCLUDE), so no heap visits.
            models.Index(
                fields=["kind", "channel", "occurred_at"], include=["customer", "campaign"], name="activity_rule_idx"
            ),
            # Most activities have no campaign or message: index only the ones that do.
            models.Index(fields=["campaign"], condition=Q(campaign__isnull=False), name="activity_campaign_idx"),
            models.Index(fields=["message"], condition=Q(message__isnull=False), name="activity_message_idx"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["client_event_id"],
                condition=Q(client_event_id__isnull=False),
                name="activity_client_event_id_unique",
                violation_error_message="An event with this client_event_id was already recorded.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} @ {self.occurred_at:%Y-%m-%d %H:%M}"

    def clean(self) -> None:
        if not ACTIVITY_KIND.match(self.kind or ""):
            raise ValidationError(
                {"kind": "Use lower-case letters, digits, '_' and '.' only (for example order.refunded)."}
            )


class ImportJob(models.Model):
    """One CSV import: the uploaded file, its column mapping, progress and outcome."""

    class Status(models.TextChoices):
        MAPPING = "mapping", "Waiting for column mapping"
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    file = models.FileField(upload_to="imports/")
    original_name = models.CharField(max_length=255)
    # CSV column -> target ("email", "first_name", "attributes.tier", "consent.email", or "" to skip).
    mapping = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.MAPPING)
    total_rows = models.PositiveIntegerField(default=0)
    processed_rows = models.PositiveIntegerField(default=0)
    created_count = models.PositiveIntegerField(default=0)
    updated_count = models.PositiveIntegerField(default=0)
    rejected_count = models.PositiveIntegerField(default=0)
    errors_file = models.FileField(upload_to="imports/errors/", blank=True)
    error = models.TextField(blank=True, help_text="Why the whole file was rejected, if it was.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=tz.now, editable=False)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Import of {self.original_name} ({self.status})"


class Erasure(models.Model):
    """Audit record of a GDPR erasure: who erased which customer, and when. Holds no personal data."""

    customer_id = models.PositiveBigIntegerField(db_index=True)
    erased_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    erased_at = models.DateTimeField(default=tz.now)
    reason = models.CharField(max_length=200, blank=True)
    suppressed = models.PositiveSmallIntegerField(default=0, help_text="Hashes added to the suppression list.")

    class Meta:
        ordering = ["-erased_at"]

    def __str__(self) -> str:
        return f"Customer #{self.customer_id} erased {self.erased_at:%Y-%m-%d}"
