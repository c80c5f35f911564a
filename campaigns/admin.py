from django.contrib import admin
from django.utils.html import format_html

from campaigns.models import Brand, Campaign, CampaignRun, Step


@admin.register(Brand)
class BrandAdmin(admin.ModelAdmin):
    list_display = ("name", "swatches", "email_from_address", "sms_sender", "updated_at")
    search_fields = ("name",)
    readonly_fields = ("logo_preview",)
    fieldsets = (
        (None, {"fields": ("name", "logo", "logo_preview")}),
        ("Colours", {"fields": ("primary_colour", "secondary_colour")}),
        ("Legal footer", {"fields": ("legal_company_name", "postal_address")}),
        ("Sender identities", {"fields": ("email_from_name", "email_from_address", "email_reply_to", "sms_sender")}),
    )

    @admin.display(description="Colours")
    def swatches(self, obj: Brand) -> str:
        return format_html(
            '<span style="display:inline-block;width:1.2em;height:1.2em;background:{};border:1px solid #ccc"></span> '
            '<span style="display:inline-block;width:1.2em;height:1.2em;background:{};border:1px solid #ccc"></span>',
            obj.primary_colour,
            obj.secondary_colour,
        )

    @admin.display(description="Logo preview")
    def logo_preview(self, obj: Brand) -> str:
        if not obj.logo:
            return "No logo uploaded."
        return format_html('<img src="{}" alt="{} logo" style="max-height:64px">', obj.logo.url, obj.name)


class StepInline(admin.StackedInline):
    model = Step
    extra = 0
    fields = ("position", "channel", "delay", "subject", "body")


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = ("name", "brand", "segment", "state", "scheduled_at", "launched_at", "completed_at")
    list_filter = ("state", "brand")
    search_fields = ("name",)
    readonly_fields = ("state", "launched_at", "completed_at")
    inlines = [StepInline]


@admin.register(CampaignRun)
class CampaignRunAdmin(admin.ModelAdmin):
    list_display = ("campaign", "number", "started_at", "finished_at")
    readonly_fields = ("campaign", "number", "started_at", "finished_at")
