from django.contrib import admin

from channels.models import Message, ProviderEvent, SandboxMessage, SenderRateLimit


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("id", "channel", "to_address", "status", "skip_reason", "provider", "created_at")
    list_filter = ("channel", "status", "skip_reason", "provider")
    search_fields = ("to_address", "provider_message_id")
    raw_id_fields = ("run", "step", "customer")

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]  # written by the pipeline only


@admin.register(ProviderEvent)
class ProviderEventAdmin(admin.ModelAdmin):
    list_display = ("id", "provider", "kind", "dedupe_key", "received_at", "processed_at", "error")
    list_filter = ("provider", "kind")
    search_fields = ("dedupe_key",)
    raw_id_fields = ("message",)


@admin.register(SandboxMessage)
class SandboxMessageAdmin(admin.ModelAdmin):
    list_display = ("created_at", "provider", "to_address", "subject", "outcome", "events_sent_at")
    list_filter = ("provider", "outcome")


@admin.register(SenderRateLimit)
class SenderRateLimitAdmin(admin.ModelAdmin):
    """Messages per second per sender, enforced across all workers (senders without a row are not throttled).

    Workers re-read the limits every ``CHORUS_RATE_LIMIT_CACHE_SECONDS``, so a change applies within seconds.
    """

    list_display = ("channel", "sender", "per_second", "created_at")
    list_editable = ("per_second",)
    list_filter = ("channel",)
    search_fields = ("sender",)
    fields = ("channel", "sender", "per_second")
