"""The Django admin, where brand managers keep the brand guidelines.

Permissions come from the role groups (``config.roles``): brand managers change
brands, required phrases and SMS prices; marketers and analysts only look.
Every brand save records a ``BrandChange`` (who changed which field from what
to what), shown on the brand's page.
"""

from __future__ import annotations

import re

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import validate_email
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from campaigns.models import (
    Brand,
    BrandChange,
    Campaign,
    CampaignEvent,
    CampaignRun,
    ContentChannel,
    FindingOverride,
    RequiredPhrase,
    SmsPrice,
    Step,
    Template,
    TemplateVariant,
)
from campaigns.services import brand_change_record, brand_state

COLOUR_FIELDS = ("primary_colour", "secondary_colour", "text_colour", "background_colour")
_HEX = re.compile(r"#[0-9A-Fa-f]{6}")
_PHONE = re.compile(r"\+[1-9]\d{6,14}")
_MASTODON = re.compile(r"@[\w.-]+@[\w-]+(\.[\w-]+)+")
_BLUESKY = re.compile(r"@?[a-z0-9-]+(\.[a-z0-9-]+)+", re.IGNORECASE)

# The sample email every brand preview renders: one block of each common kind.
PREVIEW_BLOCKS = [
    {"type": "heading", "text": "Spring is here, {{ customer.first_name }}"},
    {
        "type": "text",
        "text": "This is how {{ brand.name }} emails look: your logo, colours, fonts and legal footer.\n\n"
        "Body text, links and buttons take the palette below.",
    },
    {"type": "button", "text": "Shop the collection", "url": "https://example.com/spring"},
    {"type": "divider"},
    {"type": "text", "text": "Questions? Just reply to this email."},
]


class ColourInput(forms.TextInput):
    """A hex field with a colour picker beside it; the change form's script keeps the two in step."""

    def __init__(self, attrs: dict | None = None):
        super().__init__({"size": 8, "maxlength": 7, "spellcheck": "false", "class": "chorus-hex", **(attrs or {})})

    def render(self, name, value, attrs=None, renderer=None) -> str:
        field = super().render(name, value, attrs, renderer)
        swatch = value.lower() if isinstance(value, str) and _HEX.fullmatch(value) else "#000000"
        return format_html(
            '<span class="chorus-colour" style="display:inline-flex;gap:8px;align-items:center">{}'
            '<input type="color" class="chorus-swatch" value="{}" data-for="{}" aria-label="Pick the colour" '
            'style="width:2.4em;height:2em;padding:0;border:1px solid #ccc;border-radius:4px;cursor:pointer">'
            "</span>",
            field,
            swatch,
            (attrs or {}).get("id", f"id_{name}"),
        )


def _swatch(colour: str, label: str = "") -> str:
    return format_html(
        '<span title="{} {}" style="display:inline-block;width:1.2em;height:1.2em;vertical-align:middle;'
        'background:{};border:1px solid #ccc;border-radius:3px"></span>',
        label,
        colour,
        colour if _HEX.fullmatch(colour or "") else "transparent",
    )


class BrandForm(forms.ModelForm):
    class Meta:
        model = Brand
        fields = (
            "name", "logo", *COLOUR_FIELDS, "font_stack", "voice_and_tone", "legal_company_name", "postal_address",
            "email_from_name", "email_from_address", "email_reply_to", "sms_sender", "sms_messaging_service",
            "whatsapp_sender", "mastodon_account", "bluesky_account", "banned_phrases", "link_domains",
            "email_subject_max_chars", "sms_max_segments", "whatsapp_max_chars", "mastodon_max_chars",
            "bluesky_max_graphemes", "utm_parameters", "seed_list",
        )  # fmt: skip
        widgets = {
            **{name: ColourInput() for name in COLOUR_FIELDS},
            "postal_address": forms.Textarea(attrs={"rows": 3}),
            "voice_and_tone": forms.Textarea(attrs={"rows": 5}),
            "banned_phrases": forms.Textarea(attrs={"rows": 5, "placeholder": "risk-free\nguaranteed"}),
            "link_domains": forms.Textarea(attrs={"rows": 3, "placeholder": "northwind.example"}),
            "utm_parameters": forms.Textarea(attrs={"rows": 3}),
            "seed_list": forms.Textarea(attrs={"rows": 4, "placeholder": "qa@northwind.example\n+48600100200"}),
        }

    def clean_seed_list(self) -> str:
        text = self.cleaned_data["seed_list"]
        for line in (line.strip() for line in text.splitlines()):
            if not line or _PHONE.fullmatch(line) or _MASTODON.fullmatch(line) or _BLUESKY.fullmatch(line):
                continue
            try:
                validate_email(line)
            except ValidationError:
                raise ValidationError(
                    f"“{line}” is not an email address, an E.164 phone number (+48600100200) "
                    "or a social handle (@user@instance, name.bsky.social)."
                ) from None
        return text


class RequiredPhraseInline(admin.TabularInline):
    model = RequiredPhrase
    extra = 0
    fields = ("channel", "phrase")
    verbose_name_plural = "Required phrases (must appear in every message on that channel)"


class TemplateInline(admin.TabularInline):
    """The templates written in this brand, read-only, each linking to its page."""

    model = Template
    extra = 0
    fields = ("template_link", "channel", "updated_at")
    readonly_fields = fields
    can_delete = False
    verbose_name_plural = "Templates using this brand"

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="Template")
    def template_link(self, template: Template) -> str:
        return format_html(
            '<a href="{}">{}</a>', reverse("admin:campaigns_template_change", args=[template.pk]), template.name
        )


def _shown(value) -> str:
    if value in ("", None, []):
        return "(empty)"
    if isinstance(value, list):
        return "; ".join(map(str, value))
    return str(value)


class BrandChangeInline(admin.TabularInline):
    """The brand's audit trail, newest first."""

    model = BrandChange
    extra = 0
    fields = ("changed_at", "changed_by", "summary")
    readonly_fields = fields
    can_delete = False
    verbose_name_plural = "History of changes"

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="What changed")
    def summary(self, change: BrandChange) -> str:
        labels = {f.name: f.verbose_name for f in Brand._meta.fields}
        return format_html_join(
            "",
            '<div style="white-space:pre-wrap;margin-bottom:4px"><strong>{}</strong>: {} → {}</div>',
            (
                (labels.get(name, name.replace("_", " ")).capitalize(), _shown(old), _shown(new))
                for name, (old, new) in sorted(change.changes.items())
            ),
        )


def brand_preview_html(brand: Brand) -> str:
    """A sample email rendered in ``brand``'s layout (saved or not), for the admin's preview frame."""
    from campaigns.content.render import render_template

    sample = Template(
        name="Brand preview",
        brand=brand,
        channel=ContentChannel.EMAIL,
        subject="A preview of {{ brand.name }}",
        preheader="How emails from {{ brand.name }} look",
        blocks=PREVIEW_BLOCKS,
    )
    return render_template(sample, brand=brand).html


@admin.register(Brand)
class BrandAdmin(admin.ModelAdmin):
    form = BrandForm
    list_display = ("name", "swatches", "email_from_address", "sms_sender", "template_count", "updated_at")
    search_fields = ("name", "legal_company_name")
    readonly_fields = ("logo_preview", "palette", "email_preview")
    inlines = [RequiredPhraseInline, TemplateInline, BrandChangeInline]
    fieldsets = (
        ("Identity", {"fields": ("name", "logo", "logo_preview")}),
        ("Colours", {"fields": COLOUR_FIELDS, "description": "Hex colours such as #1F6FEB, or pick one."}),
        ("Typography", {"fields": ("font_stack",)}),
        ("Voice and tone", {"fields": ("voice_and_tone",)}),
        ("Legal footer", {"fields": ("legal_company_name", "postal_address")}),
        (
            "Sender identities",
            {
                "fields": (
                    ("email_from_name", "email_from_address"),
                    "email_reply_to",
                    ("sms_sender", "sms_messaging_service"),
                    "whatsapp_sender",
                    ("mastodon_account", "bluesky_account"),
                )
            },
        ),
        (
            "Guardrails",
            {
                "fields": (
                    "banned_phrases",
                    "link_domains",
                    ("email_subject_max_chars", "sms_max_segments", "whatsapp_max_chars"),
                    ("mastodon_max_chars", "bluesky_max_graphemes"),
                ),
                "description": "Brand checks run these on every rendered message; failing checks block review.",
            },
        ),
        ("Tracking", {"fields": ("utm_parameters",)}),
        ("Test recipients", {"fields": ("seed_list",)}),
        ("Email preview", {"fields": ("email_preview",), "description": "A sample email in this brand's layout."}),
    )

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(templates_total=Count("templates"))

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if self.has_change_permission(request, obj):
            return fieldsets
        # Read-only visitors see the palette as swatches instead of the pickers.
        return tuple(
            (name, {**options, "fields": ("palette", *options["fields"])}) if name == "Colours" else (name, options)
            for name, options in fieldsets
        )

    @admin.display(description="Colours")
    def swatches(self, obj: Brand) -> str:
        return format_html_join(" ", "{}", ((_swatch(getattr(obj, name), name),) for name in COLOUR_FIELDS))

    @admin.display(description="Palette")
    def palette(self, obj: Brand) -> str:
        return format_html_join(
            " ",
            '<span style="margin-right:12px">{} {} <code>{}</code></span>',
            (
                (_swatch(getattr(obj, name)), name.split("_")[0].capitalize(), getattr(obj, name))
                for name in COLOUR_FIELDS
            ),
        )

    @admin.display(description="Templates", ordering="templates_total")
    def template_count(self, obj: Brand) -> int:
        return obj.templates_total

    @admin.display(description="Logo preview")
    def logo_preview(self, obj: Brand) -> str:
        if not obj.logo:
            return "No logo uploaded."
        return format_html('<img src="{}" alt="{} logo" style="max-height:64px">', obj.logo.url, obj.name)

    @admin.display(description="Preview")
    def email_preview(self, obj: Brand) -> str:
        url = (
            reverse("admin:campaigns_brand_preview", args=[obj.pk])
            if obj.pk
            else reverse("admin:campaigns_brand_preview_new")
        )
        return format_html(
            '<iframe title="Email preview" data-preview-url="{}" srcdoc="{}" sandbox="" '
            'style="width:680px;max-width:100%;height:680px;border:1px solid #ccc;border-radius:4px;background:#fff">'
            "</iframe>",
            url,
            brand_preview_html(obj),
        )

    # --- the live preview --------------------------------------------------------------

    def get_urls(self):
        preview = self.admin_site.admin_view(self.preview_view)
        return [
            path("preview/", preview, name="campaigns_brand_preview_new"),
            path("<int:object_id>/preview/", preview, name="campaigns_brand_preview"),
            *super().get_urls(),
        ]

    def preview_view(self, request: HttpRequest, object_id: int | None = None) -> HttpResponse:
        """The sample email for the form as it is being edited, nothing saved: ``{"html": ...}``."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        brand = get_object_or_404(Brand, pk=object_id) if object_id is not None else Brand()
        if not self.has_view_permission(request, brand if object_id is not None else None):
            raise PermissionDenied
        logo = brand.logo.name if object_id is not None else ""
        form = self.get_form(request, brand if object_id is not None else None, change=object_id is not None)(
            request.POST, instance=brand
        )
        form.is_valid()  # copies every valid field onto the unsaved instance; invalid ones keep their old value
        brand.logo = logo  # an upload is not stored until the brand is saved
        return JsonResponse({"html": brand_preview_html(brand)})

    # --- the audit trail ---------------------------------------------------------------

    def save_model(self, request, obj, form, change) -> None:
        # The state before this save, read back from the database (the form already changed ``obj``).
        form._audit_before = brand_state(Brand.objects.get(pk=obj.pk)) if change else None
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change) -> None:
        super().save_related(request, form, formsets, change)
        if form._audit_before is not None:
            brand_change_record(brand=form.instance, before=form._audit_before, by=request.user)


@admin.register(SmsPrice)
class SmsPriceAdmin(admin.ModelAdmin):
    list_display = ("country", "price_per_segment", "currency")
    search_fields = ("country",)


class TemplateVariantInline(admin.StackedInline):
    model = TemplateVariant
    extra = 0
    fields = ("persona", "subject", "preheader", "blocks", "body", "image_alt")
    verbose_name_plural = "Persona variants (empty fields fall back to the template's)"


@admin.register(Template)
class TemplateAdmin(admin.ModelAdmin):
    list_display = ("name", "brand", "channel", "variant_count", "updated_at")
    list_filter = ("brand", "channel")
    search_fields = ("name", "subject", "body")
    readonly_fields = ("created_by", "created_at", "updated_at")
    inlines = [TemplateVariantInline]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("brand").annotate(variants_total=Count("variants"))

    @admin.display(description="Persona variants", ordering="variants_total")
    def variant_count(self, obj: Template) -> int:
        return obj.variants_total


class StepInline(admin.StackedInline):
    model = Step
    extra = 0
    fields = ("position", "channel", "template", "delay")
    raw_id_fields = ("template",)


class CampaignEventInline(admin.TabularInline):
    model = CampaignEvent
    extra = 0
    fields = ("occurred_at", "action", "actor", "note")
    readonly_fields = fields
    can_delete = False
    verbose_name_plural = "Audit trail"

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class FindingOverrideInline(admin.TabularInline):
    model = FindingOverride
    extra = 0
    fields = ("created_at", "rule", "message", "reason", "overridden_by")
    readonly_fields = fields
    can_delete = False
    verbose_name_plural = "Overridden brand-check findings"

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = ("name", "brand", "segment", "state", "scheduled_at", "launched_at", "completed_at")
    list_filter = ("state", "brand")
    search_fields = ("name",)
    readonly_fields = ("state", "launched_at", "completed_at")
    inlines = [StepInline, FindingOverrideInline, CampaignEventInline]


@admin.register(CampaignRun)
class CampaignRunAdmin(admin.ModelAdmin):
    list_display = ("campaign", "number", "started_at", "finished_at")
    readonly_fields = ("campaign", "number", "started_at", "finished_at")
