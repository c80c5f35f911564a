from __future__ import annotations

import re
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from customers.models import Channel

hex_colour = RegexValidator(r"^#[0-9A-Fa-f]{6}$", "Use a hex colour such as #1F6FEB.")


class ContentChannel(models.TextChoices):
    """Where a piece of content goes. Mastodon and Bluesky share the ``social`` consent."""

    EMAIL = "email", "Email"
    SMS = "sms", "SMS"
    WHATSAPP = "whatsapp", "WhatsApp"
    MASTODON = "mastodon", "Mastodon"
    BLUESKY = "bluesky", "Bluesky"


CONSENT_CHANNEL = {
    ContentChannel.EMAIL: Channel.EMAIL,
    ContentChannel.SMS: Channel.SMS,
    ContentChannel.WHATSAPP: Channel.WHATSAPP,
    ContentChannel.MASTODON: Channel.SOCIAL,
    ContentChannel.BLUESKY: Channel.SOCIAL,
}


def _lines(text: str) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


class Brand(models.Model):
    """The guidelines every piece of a campaign's content wears; kept by brand managers in the admin."""

    name = models.CharField(max_length=200, unique=True)
    logo = models.ImageField(upload_to="brands/", blank=True)
    primary_colour = models.CharField(max_length=7, default="#1F6FEB", validators=[hex_colour])
    secondary_colour = models.CharField(max_length=7, default="#0B1F33", validators=[hex_colour])
    text_colour = models.CharField(max_length=7, default="#1F2933", validators=[hex_colour])
    background_colour = models.CharField(max_length=7, default="#F4F5F7", validators=[hex_colour])
    font_stack = models.CharField(
        max_length=200,
        default="Helvetica, Arial, sans-serif",
        validators=[RegexValidator(r"^[A-Za-z0-9 ,'\"-]+$", "Font names, separated by commas.")],
    )
    voice_and_tone = models.TextField(blank=True, help_text="How the brand speaks; shown to writers in the editor.")
    legal_company_name = models.CharField(max_length=200, help_text="Shown in every email footer.")
    postal_address = models.TextField(help_text="Required in commercial email (CAN-SPAM, GDPR).")
    email_from_name = models.CharField(max_length=100, blank=True)
    email_from_address = models.EmailField(blank=True)
    email_reply_to = models.EmailField(blank=True)
    sms_sender = models.CharField(max_length=32, blank=True, help_text="E.164 number or alphanumeric sender ID.")
    sms_messaging_service = models.CharField(
        max_length=34, blank=True, help_text="Twilio Messaging Service SID (MG...), used instead of the number."
    )
    whatsapp_sender = models.CharField(max_length=32, blank=True, help_text="WhatsApp-enabled E.164 number.")
    mastodon_account = models.CharField(max_length=200, blank=True, help_text="@user@instance")
    bluesky_account = models.CharField(max_length=253, blank=True, help_text="handle.bsky.social")
    banned_phrases = models.TextField(
        blank=True, help_text="One per line. Matched case-insensitively as whole words in every channel."
    )
    link_domains = models.TextField(
        blank=True,
        help_text="Allowed link domains, one per line (subdomains included). Empty: links to any domain pass.",
    )
    email_subject_max_chars = models.PositiveSmallIntegerField(default=78)
    sms_max_segments = models.PositiveSmallIntegerField(default=3)
    whatsapp_max_chars = models.PositiveSmallIntegerField(default=1024)
    mastodon_max_chars = models.PositiveSmallIntegerField(default=500)
    bluesky_max_graphemes = models.PositiveSmallIntegerField(default=300)
    utm_parameters = models.TextField(
        blank=True,
        default="utm_source=chorus",
        help_text="key=value per line, added to every link (utm_medium is the channel, utm_campaign the campaign).",
    )
    seed_list = models.TextField(
        blank=True, help_text="Test recipients, one per line: email addresses, phone numbers, social handles."
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def legal_footer(self) -> str:
        """Company and postal address on one line, the address's lines joined by commas."""
        lines = (" ".join(line.split()).strip(", ") for line in self.postal_address.splitlines())
        return ", ".join([self.legal_company_name, *filter(None, lines)])

    @property
    def banned_phrase_list(self) -> list[str]:
        return _lines(self.banned_phrases)

    @property
    def link_domain_list(self) -> list[str]:
        return [domain.lower().lstrip(".") for domain in _lines(self.link_domains)]

    @property
    def utm_defaults(self) -> dict[str, str]:
        pairs = (line.split("=", 1) for line in _lines(self.utm_parameters) if "=" in line)
        return {key.strip(): value.strip() for key, value in pairs if key.strip()}

    @property
    def seeds(self) -> list[str]:
        return _lines(self.seed_list)

    def sender_for(self, channel: str) -> str:
        return {
            ContentChannel.EMAIL: self.email_from_address,
            ContentChannel.SMS: self.sms_messaging_service or self.sms_sender,
            ContentChannel.WHATSAPP: self.whatsapp_sender,
            ContentChannel.MASTODON: self.mastodon_account,
            ContentChannel.BLUESKY: self.bluesky_account,
        }.get(channel, "")

    def required_phrases_for(self, channel: str) -> list[str]:
        return [rp.phrase for rp in self.required_phrases.all() if rp.channel == channel]

    def clean(self) -> None:
        for line in _lines(self.utm_parameters):
            if "=" not in line or not line.split("=", 1)[0].strip():
                raise ValidationError({"utm_parameters": f"{line!r} is not key=value."})
        for domain in self.link_domain_list:
            if not re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)+", domain):
                raise ValidationError({"link_domains": f"{domain!r} is not a domain name such as example.com."})


class RequiredPhrase(models.Model):
    """Text that must appear in every piece of content for a channel, e.g. "Reply STOP to opt out" in SMS."""

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="required_phrases")
    channel = models.CharField(max_length=16, choices=ContentChannel.choices)
    phrase = models.CharField(max_length=200)

    class Meta:
        ordering = ["brand", "channel", "phrase"]
        constraints = [
            models.UniqueConstraint(fields=["brand", "channel", "phrase"], name="required_phrase_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.get_channel_display()}: {self.phrase}"


class BrandChange(models.Model):
    """Audit of a brand edit: who changed which fields from what to what."""

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="changes")
    changed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    changed_at = models.DateTimeField(default=timezone.now)
    changes = models.JSONField(default=dict, help_text="field -> [old, new]")

    class Meta:
        ordering = ["-changed_at", "-id"]

    def __str__(self) -> str:
        return f"{self.brand} changed by {self.changed_by} at {self.changed_at:%Y-%m-%d %H:%M}"


class SmsPrice(models.Model):
    """What one SMS segment costs to a country, for the estimate shown in the editor."""

    country = models.CharField(max_length=2, unique=True, help_text="ISO 3166-1 alpha-2, e.g. PL.")
    price_per_segment = models.DecimalField(max_digits=8, decimal_places=4)
    currency = models.CharField(max_length=3, default="USD")

    class Meta:
        ordering = ["country"]
        verbose_name = "SMS price"

    def __str__(self) -> str:
        return f"{self.country}: {self.price_per_segment} {self.currency} per segment"


class Template(models.Model):
    """Reusable content for one channel, written in Liquid.

    Email uses ``subject``, ``preheader`` and ``blocks`` (a list of
    ``{"type": "heading"|"text"|"image"|"button"|"divider"|"offer"|"html", ...}``,
    see ``campaigns.content.blocks``); SMS, WhatsApp, Mastodon and Bluesky use
    ``body``, the social channels also ``image`` and ``image_alt``.
    """

    name = models.CharField(max_length=200)
    brand = models.ForeignKey(Brand, on_delete=models.PROTECT, related_name="templates")
    channel = models.CharField(max_length=16, choices=ContentChannel.choices)
    subject = models.CharField(max_length=300, blank=True)
    preheader = models.CharField(max_length=200, blank=True)
    blocks = models.JSONField(default=list, blank=True)
    body = models.TextField(blank=True)
    image = models.ImageField(upload_to="templates/", blank=True)
    image_alt = models.CharField(max_length=1000, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    # The fields a persona variant may override.
    CONTENT_FIELDS = ("subject", "preheader", "blocks", "body", "image_alt")

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_channel_display()})"


class TemplateVariant(models.Model):
    """A persona's version of a template: each field left NULL falls back to the template's."""

    template = models.ForeignKey(Template, on_delete=models.CASCADE, related_name="variants")
    persona = models.ForeignKey("customers.Persona", on_delete=models.CASCADE, related_name="template_variants")
    subject = models.CharField(max_length=300, null=True, blank=True)  # noqa: DJ001 - NULL means "inherit"
    preheader = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    blocks = models.JSONField(null=True, blank=True)
    body = models.TextField(null=True, blank=True)  # noqa: DJ001
    image_alt = models.CharField(max_length=1000, null=True, blank=True)  # noqa: DJ001

    class Meta:
        ordering = ["template", "persona__priority"]
        constraints = [models.UniqueConstraint(fields=["template", "persona"], name="template_variant_unique")]

    def __str__(self) -> str:
        return f"{self.template} for {self.persona}"


class ShortLink(models.Model):
    """A link in SMS, WhatsApp or social content, served as ``/l/<code>`` so clicks are counted."""

    code = models.CharField(max_length=16, unique=True)
    url = models.URLField(max_length=2000)
    step = models.ForeignKey("Step", null=True, blank=True, on_delete=models.CASCADE, related_name="links")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["step", "url"], name="short_link_step_url_unique"),
            models.UniqueConstraint(
                fields=["url"], condition=models.Q(step__isnull=True), name="short_link_url_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"/l/{self.code} -> {self.url}"


class Campaign(models.Model):
    class State(models.TextChoices):
        DRAFT = "draft", "Draft"
        IN_REVIEW = "in_review", "In review"
        APPROVED = "approved", "Approved"
        SCHEDULED = "scheduled", "Scheduled"
        RUNNING = "running", "Running"
        PAUSED = "paused", "Paused"
        COMPLETED = "completed", "Completed"
        CANCELLED = "cancelled", "Cancelled"

    name = models.CharField(max_length=200)
    goal = models.TextField(blank=True)
    brand = models.ForeignKey(Brand, on_delete=models.PROTECT, related_name="campaigns")
    segment = models.ForeignKey("segments.Segment", on_delete=models.PROTECT, related_name="campaigns")
    state = models.CharField(max_length=16, choices=State.choices, default=State.DRAFT)
    scheduled_at = models.DateTimeField(null=True, blank=True)
    launched_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["state", "scheduled_at"])]
        permissions = [
            ("approve_campaign", "Can approve or reject a campaign in review"),
            ("override_finding", "Can override a brand-check finding with a reason"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def channels(self) -> list[str]:
        return sorted({step.channel for step in self.steps.all()})


class Step(models.Model):
    """One message of a campaign, sent ``delay`` after the previous step, with a template's content."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField(default=0)
    channel = models.CharField(max_length=16, choices=ContentChannel.choices)
    template = models.ForeignKey(Template, on_delete=models.PROTECT, related_name="steps")
    delay = models.DurationField(default=timedelta(0), help_text="Wait after the previous step.")

    class Meta:
        ordering = ["campaign", "position"]
        constraints = [models.UniqueConstraint(fields=["campaign", "position"], name="step_position_unique")]

    def __str__(self) -> str:
        return f"{self.campaign} · step {self.position + 1} ({self.get_channel_display()})"

    def clean(self) -> None:
        if self.template_id and self.template.channel != self.channel:
            raise ValidationError({"template": f"Pick a {self.get_channel_display()} template for this step."})


class CampaignEvent(models.Model):
    """The campaign's audit trail: submissions, approvals, overrides of brand-check findings, scheduling."""

    class Action(models.TextChoices):
        SUBMITTED = "submitted", "Submitted for review"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Sent back to draft"
        SCHEDULED = "scheduled", "Scheduled"
        UNSCHEDULED = "unscheduled", "Unscheduled"
        FINDING_OVERRIDDEN = "finding_overridden", "Brand-check finding overridden"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="events")
    action = models.CharField(max_length=32, choices=Action.choices)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    occurred_at = models.DateTimeField(default=timezone.now)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["-occurred_at", "-id"]

    def __str__(self) -> str:
        return f"{self.campaign}: {self.get_action_display()}"


class FindingOverride(models.Model):
    """A brand manager's written decision to let one brand-check finding of a campaign pass.

    ``fingerprint`` identifies the finding (rule, step, persona, where) as
    ``campaigns.content.checks.Finding.fingerprint`` computes it; the override
    stops applying as soon as the content no longer produces that finding.
    """

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="overrides")
    fingerprint = models.CharField(max_length=64)
    rule = models.CharField(max_length=32)
    message = models.TextField()
    reason = models.TextField()
    overridden_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "fingerprint"], name="finding_override_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.campaign}: {self.rule} overridden"


class CampaignRun(models.Model):
    """One execution of a campaign: a broadcast has one, a recurring campaign many."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="runs")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["campaign", "number"]
        constraints = [models.UniqueConstraint(fields=["campaign", "number"], name="run_number_unique")]

    def __str__(self) -> str:
        return f"{self.campaign} · run {self.number}"


class Enrollment(models.Model):
    """A customer's way through one run: which step is next, and when."""

    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        COMPLETED = "completed", "Completed"
        EXITED = "exited", "Exited"

    run = models.ForeignKey(CampaignRun, on_delete=models.CASCADE, related_name="enrollments")
    customer = models.ForeignKey("customers.Customer", on_delete=models.CASCADE, related_name="enrollments")
    step_position = models.PositiveSmallIntegerField(default=0)
    next_action_at = models.DateTimeField(null=True, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.ACTIVE)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "customer"], name="enrollment_unique")]
        indexes = [models.Index(fields=["state", "next_action_at"], name="enrollment_due_idx")]

    def __str__(self) -> str:
        return f"customer {self.customer_id} in {self.run} ({self.state})"
