from __future__ import annotations

import re
import zoneinfo

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone as tz

from customers.querysets import CustomerQuerySet


class Channel(models.TextChoices):
    """The channels a customer can be reached on (and consent to)."""

    EMAIL = "email", "Email"
    SMS = "sms", "SMS"
    WHATSAPP = "whatsapp", "WhatsApp"
    SOCIAL = "social", "Social"


E164 = re.compile(r"^\+[1-9]\d{6,14}$")
ACTIVITY_KIND = re.compile(r"^[a-z0-9_.]{1,64}$")


def validate_timezone(value: str) -> None:
    if value and value not in zoneinfo.available_timezones():
        raise ValidationError(f"{value!r} is not an IANA time zone (for example Europe/Warsaw).")


def validate_e164(value: str) -> None:
    if value and not E164.match(value):
        raise ValidationError(f"{value!r} is not a phone number in E.164 form (for example +48600100200).")


class Customer(models.Model):
    """The single record of one person: identities, profile and attributes."""

    email = models.EmailField(max_length=254, unique=True, null=True, blank=True)
    phone = models.CharField(max_length=16, unique=True, null=True, blank=True, validators=[validate_e164])
    external_id = models.CharField(max_length=128, unique=True, null=True, blank=True)
    first_name = models.CharField(max_length=100, blank=True)
    last_name = models.CharField(max_length=100, blank=True)
    locale = models.CharField(max_length=16, blank=True)
    timezone = models.CharField(max_length=64, blank=True, validators=[validate_timezone])
    country = models.CharField(max_length=2, blank=True, help_text="ISO 3166-1 alpha-2, e.g. PL")
    city = models.CharField(max_length=100, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=tz.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = CustomerQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["country"]), models.Index(fields=["created_at"])]

    def __str__(self) -> str:
        return self.full_name or self.email or self.phone or f"Customer #{self.pk}"

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()

    def clean(self) -> None:
        # Identity keys are unique only when present: store absence as NULL.
        self.email = self.email.strip().lower() or None if self.email else None
        self.phone = self.phone.strip() or None if self.phone else None
        self.external_id = self.external_id.strip() or None if self.external_id else None
        self.country = self.country.upper()
        if not (self.email or self.phone or self.external_id):
            raise ValidationError("A customer needs at least one of email, phone or external_id.")

    def address_for(self, channel: str) -> str | None:
        """Where a message on ``channel`` goes, or None if we cannot reach them there."""
        if channel == Channel.EMAIL:
            return self.email
        if channel in (Channel.SMS, Channel.WHATSAPP):
            return self.phone
        return None


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

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="consents")
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
        MESSAGE_FAILED = "message.failed"
        MESSAGE_SKIPPED = "message.skipped"
        MESSAGE_REPLIED = "message.replied"
        MESSAGE_UNSUBSCRIBED = "message.unsubscribed"
        MESSAGE_COMPLAINED = "message.complained"
        CONSENT_CHANGED = "consent.changed"
        PURCHASE = "purchase"

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="activities")
    occurred_at = models.DateTimeField(default=tz.now)
    kind = models.CharField(max_length=64)
    channel = models.CharField(max_length=16, choices=Channel.choices, blank=True)
    campaign = models.ForeignKey("campaigns.Campaign", null=True, blank=True, on_delete=models.SET_NULL)
    message = models.ForeignKey("channels.Message", null=True, blank=True, on_delete=models.SET_NULL)
    properties = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-occurred_at", "-id"]
        verbose_name_plural = "activities"
        indexes = [
            models.Index(fields=["customer", "-occurred_at"], name="activity_timeline_idx"),
            models.Index(fields=["kind", "channel", "occurred_at"], name="activity_rule_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} @ {self.occurred_at:%Y-%m-%d %H:%M}"

    def clean(self) -> None:
        if not ACTIVITY_KIND.match(self.kind or ""):
            raise ValidationError(
                {"kind": "Use lower-case letters, digits, '_' and '.' only (for example order.refunded)."}
            )
