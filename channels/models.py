from __future__ import annotations

import hashlib

from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from campaigns.models import ContentChannel
from customers.models import Channel


class MessageContent(models.Model):
    """Content many messages share, stored once: a broadcast email's subject and text part.

    Its recipients got the very same text but for their own unsubscribe,
    preferences and view-in-browser links, which the provider wrote over the
    tags (``campaigns.content.render.RECIPIENT_TAGS``) per recipient;
    ``channels.selectors.message_as_sent`` puts them back. A thousand copies of
    the text, one per message, cost the send path more than anything it sends.
    """

    digest = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the subject and the text.")
    subject = models.CharField(max_length=300, blank=True)
    body = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.subject or self.digest[:12]

    @staticmethod
    def digest_for(subject: str, body: str) -> str:
        return hashlib.sha256(f"{subject}\n{body}".encode()).hexdigest()


class Message(models.Model):
    """One piece of content to one customer on one channel for one step of a run."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        DELIVERED = "delivered", "Delivered"
        OPENED = "opened", "Opened"
        CLICKED = "clicked", "Clicked"
        FAILED = "failed", "Failed"
        BOUNCED = "bounced", "Bounced"
        UNDELIVERED = "undelivered", "Undelivered"
        SKIPPED = "skipped", "Skipped"

    # Status only moves to a higher rank, so duplicate or out-of-order provider
    # events converge on the same end state. Skipped never changes.
    RANK = {
        Status.QUEUED: 0,
        Status.SENDING: 10,
        Status.SENT: 20,
        Status.FAILED: 30,
        Status.UNDELIVERED: 30,
        Status.BOUNCED: 30,
        Status.DELIVERED: 40,
        Status.OPENED: 50,
        Status.CLICKED: 60,
        Status.SKIPPED: 100,
    }

    class SkipReason(models.TextChoices):
        NO_CONSENT = "no_consent", "No consent for the channel"
        NO_ADDRESS = "no_address", "No address for the channel"
        SUPPRESSED = "suppressed", "Address is on the suppression list"
        ERASED = "erased", "Customer was erased"

    # No index of their own: (run, channel, status) and the (step, run, customer) constraint
    # lead with them, and every index costs each status change a write.
    run = models.ForeignKey("campaigns.CampaignRun", on_delete=models.CASCADE, related_name="messages", db_index=False)
    step = models.ForeignKey("campaigns.Step", on_delete=models.CASCADE, related_name="messages", db_index=False)
    customer = models.ForeignKey("customers.Customer", on_delete=models.CASCADE, related_name="messages")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    rank = models.PositiveSmallIntegerField(default=0)
    skip_reason = models.CharField(max_length=32, choices=SkipReason.choices, blank=True)
    error = models.TextField(blank=True)
    to_address = models.CharField(max_length=254, blank=True)
    subject = models.CharField(max_length=300, blank=True)
    body = models.TextField(blank=True)
    # Set instead of subject and body when the content was shared (a broadcast); never deleted, so
    # no index (each one costs every status change a write).
    content = models.ForeignKey(
        MessageContent, null=True, blank=True, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    provider = models.CharField(max_length=32, blank=True)
    # NULL until sent: unique per provider only when present.
    provider_message_id = models.CharField(max_length=128, null=True, blank=True)  # noqa: DJ001
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    clicked_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["step", "run", "customer"], name="message_once_per_step_run_customer"),
            models.UniqueConstraint(
                fields=["provider", "provider_message_id"],
                condition=models.Q(provider_message_id__isnull=False),
                name="message_provider_id_unique",
            ),
        ]
        indexes = [
            # Only failures are looked up across runs (Failed deliveries, the bounce count): a partial
            # index takes no entry when a message is claimed, sent, delivered, opened or clicked.
            models.Index(
                fields=["status"],
                condition=models.Q(status__in=["failed", "undelivered", "bounced"]),
                name="message_failure_idx",
            ),
            models.Index(fields=["run", "channel", "status"]),
        ]

    def __str__(self) -> str:
        return f"{self.channel} to {self.to_address or self.customer_id} ({self.status})"


class ProviderEvent(models.Model):
    """A verified inbound webhook event, stored raw before it is processed."""

    # What a stored event about an erased customer keeps: nothing personal.
    ERASED_PAYLOAD = {"erased": True}

    class Provider(models.TextChoices):
        SENDGRID = "sendgrid", "SendGrid"
        TWILIO = "twilio", "Twilio"
        MASTODON = "mastodon", "Mastodon"
        BLUESKY = "bluesky", "Bluesky"

    provider = models.CharField(max_length=16, choices=Provider.choices)
    kind = models.CharField(max_length=16, help_text="status, inbound, reply or mention")
    dedupe_key = models.CharField(max_length=200)
    payload = models.JSONField()
    received_at = models.DateTimeField(default=timezone.now)
    processed_at = models.DateTimeField(null=True, blank=True)
    # No database constraint: the raw log names the message it was matched to, and a check per stored
    # event cost webhook ingestion 8%. Django still sets it NULL when the message is deleted.
    message = models.ForeignKey(
        Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="events", db_constraint=False
    )
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["provider", "dedupe_key"], name="provider_event_dedupe")]

    def __str__(self) -> str:
        return f"{self.provider}:{self.dedupe_key}"


class SandboxMessage(models.Model):
    """What the sandbox provider emulator received: the 'Sandbox outbox'."""

    # Not a provider's field: in ``request``, the ``provider_message_id`` of the row that keeps
    # the content of a request sent to many recipients (``channels.sandbox.sendgrid``).
    CONTENT_OF = "sandbox_content_of"

    provider = models.CharField(max_length=16, choices=ProviderEvent.Provider.choices)
    provider_message_id = models.CharField(max_length=128, unique=True)
    to_address = models.CharField(max_length=254)
    from_address = models.CharField(max_length=254, blank=True)
    subject = models.CharField(max_length=300, blank=True)
    body = models.TextField(blank=True)
    callback_url = models.URLField(max_length=500, blank=True)
    request = models.JSONField(default=dict)
    outcome = models.CharField(max_length=16, default="delivered")
    events_sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.provider} to {self.to_address}"


class Suppression(models.Model):
    """An address Chorus must never message again, stored only as a hash.

    Added on erasure (GDPR), hard bounce and spam report; checked at dispatch and
    again at send. The hash is of the normalised address (``address_hash_for``), so
    an erased customer re-imported later is still suppressed.
    """

    class Reason(models.TextChoices):
        ERASURE = "erasure", "Erased (GDPR)"
        HARD_BOUNCE = "hard_bounce", "Hard bounce"
        SPAM_REPORT = "spam_report", "Spam report"
        MANUAL = "manual", "Added by hand"

    address_hash = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the normalised address.")
    reason = models.CharField(max_length=16, choices=Reason.choices)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.address_hash[:12]}… ({self.reason})"

    @staticmethod
    def address_hash_for(address: str) -> str:
        """Hash of an already-normalised address (email, E.164 phone or social handle)."""
        return hashlib.sha256(address.strip().lower().encode()).hexdigest()


class WebhookDelivery(models.Model):
    """One verified webhook request, stored whole before it is answered.

    A SendGrid batch of thousands of events is acknowledged after one INSERT;
    a task splits it into ``ProviderEvent`` rows (deduplicated) and applies them.
    """

    provider = models.CharField(max_length=16, choices=ProviderEvent.Provider.choices)
    kind = models.CharField(max_length=16)
    body = models.TextField()
    received_at = models.DateTimeField(default=timezone.now)
    processed_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.provider} {self.kind} at {self.received_at:%Y-%m-%d %H:%M:%S}"


class SenderRateLimit(models.Model):
    """How many messages per second one sender may send, across all workers.

    A Twilio long code takes 1 per second, a short code 100; a sender with no
    row here is not throttled by Chorus.
    """

    channel = models.CharField(max_length=16, choices=ContentChannel.choices)
    sender = models.CharField(
        max_length=254, help_text="The from number, Messaging Service SID, from address or account handle."
    )
    per_second = models.PositiveIntegerField(validators=[MinValueValidator(1)], help_text="Messages per second.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["channel", "sender"]
        constraints = [models.UniqueConstraint(fields=["channel", "sender"], name="sender_rate_limit_unique")]

    def __str__(self) -> str:
        return f"{self.get_channel_display()} {self.sender}: {self.per_second}/s"


class RateLimitSlot(models.Model):
    """The database rate limiter's state (the embedded default; Redis keeps it otherwise):
    the earliest Unix time the next message of ``key`` may go."""

    key = models.CharField(max_length=300, primary_key=True)
    next_at = models.FloatField(default=0.0)

    def __str__(self) -> str:
        return f"{self.key} at {self.next_at}"


class SocialPost(models.Model):
    """A social step of a campaign run, published once on the brand's account.

    Engagement (likes, reposts, replies) is polled from the network and kept
    here; replies and mentions from customers land on their timelines.
    """

    class Status(models.TextChoices):
        PUBLISHING = "publishing", "Publishing"
        PUBLISHED = "published", "Published"
        FAILED = "failed", "Failed"

    run = models.ForeignKey("campaigns.CampaignRun", on_delete=models.CASCADE, related_name="social_posts")
    step = models.ForeignKey("campaigns.Step", on_delete=models.CASCADE, related_name="social_posts")
    network = models.CharField(max_length=16, choices=ContentChannel.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PUBLISHING)
    account = models.CharField(max_length=254, blank=True, help_text="The brand account posted as.")
    text = models.TextField(blank=True)
    # Mastodon status id, or Bluesky at:// URI (with its CID).
    provider_post_id = models.CharField(max_length=300, blank=True)
    provider_cid = models.CharField(max_length=100, blank=True)
    url = models.URLField(max_length=500, blank=True)
    error = models.TextField(blank=True)
    likes = models.PositiveIntegerField(default=0)
    reposts = models.PositiveIntegerField(default=0)
    replies = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    published_at = models.DateTimeField(null=True, blank=True)
    engagement_checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["step", "run"], name="social_post_once_per_step_run")]

    def __str__(self) -> str:
        return f"{self.get_network_display()} post for {self.step} ({self.status})"
