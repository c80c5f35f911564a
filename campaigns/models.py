from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from customers.models import Channel

hex_colour = RegexValidator(r"^#[0-9A-Fa-f]{6}$", "Use a hex colour such as #1F6FEB.")


class Brand(models.Model):
    """The guidelines every piece of a campaign's content wears."""

    name = models.CharField(max_length=200, unique=True)
    logo = models.ImageField(upload_to="brands/", blank=True)
    primary_colour = models.CharField(max_length=7, default="#1F6FEB", validators=[hex_colour])
    secondary_colour = models.CharField(max_length=7, default="#0B1F33", validators=[hex_colour])
    legal_company_name = models.CharField(max_length=200, help_text="Shown in every email footer.")
    postal_address = models.TextField(help_text="Required in commercial email (CAN-SPAM, GDPR).")
    email_from_name = models.CharField(max_length=100, blank=True)
    email_from_address = models.EmailField(blank=True)
    email_reply_to = models.EmailField(blank=True)
    sms_sender = models.CharField(max_length=32, blank=True, help_text="E.164 number or alphanumeric sender ID.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def legal_footer(self) -> str:
        return f"{self.legal_company_name}, {' '.join(self.postal_address.split())}"

    def sender_for(self, channel: str) -> str:
        return {Channel.EMAIL: self.email_from_address, Channel.SMS: self.sms_sender}.get(channel, "")


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

    def __str__(self) -> str:
        return self.name

    @property
    def channels(self) -> list[str]:
        return sorted({step.channel for step in self.steps.all()})


class Step(models.Model):
    """One message of a campaign, sent ``delay`` after the previous step."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField(default=0)
    channel = models.CharField(max_length=16, choices=[(Channel.EMAIL, "Email"), (Channel.SMS, "SMS")])
    subject = models.CharField(max_length=200, blank=True, help_text="Email only. Liquid, e.g. {{ first_name }}.")
    body = models.TextField(help_text="Liquid, e.g. Hi {{ first_name | default: 'there' }}!")
    delay = models.DurationField(default=timedelta(0), help_text="Wait after the previous step.")

    class Meta:
        ordering = ["campaign", "position"]
        constraints = [models.UniqueConstraint(fields=["campaign", "position"], name="step_position_unique")]

    def __str__(self) -> str:
        return f"{self.campaign} · step {self.position + 1} ({self.get_channel_display()})"

    def clean(self) -> None:
        if self.channel == Channel.EMAIL and not self.subject.strip():
            raise ValidationError({"subject": "An email step needs a subject."})


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
