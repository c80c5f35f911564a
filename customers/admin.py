from django.contrib import admin
from django.db import transaction

from customers.identity import IDENTITY_FIELDS
from customers.models import Activity, Consent, Customer, Erasure, Persona
from customers.services.activities import STATS_FIELDS
from customers.services.customers import PROFILE_FIELDS
from customers.services.personas import persona_delete, persona_save, personas_assign, personas_recompute_schedule


class ConsentInline(admin.TabularInline):
    model = Consent
    extra = 0
    fields = ("channel", "status", "source", "occurred_at", "evidence")
    ordering = ("-occurred_at", "-id")

    def has_change_permission(self, request, obj=None):
        return False  # the ledger is append-only

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    """Identities, profile, persona and derived stats; stats and erasure are read-only here."""

    list_display = ("__str__", "email", "phone", "country", "persona", "orders_count", "lifetime_value", "created_at")
    list_filter = ("country", "persona", ("erased_at", admin.EmptyFieldListFilter))
    list_select_related = ("persona",)
    search_fields = ("email", "phone", "external_id", "mastodon_handle", "bluesky_handle", "first_name", "last_name")
    readonly_fields = ("persona", *STATS_FIELDS, "erased_at", "created_at", "updated_at")
    fieldsets = (
        ("Identity", {"fields": IDENTITY_FIELDS}),
        ("Profile", {"fields": PROFILE_FIELDS}),
        ("Attributes", {"fields": ("attributes",)}),
        ("Persona", {"fields": ("persona",), "description": "Assigned by the persona rules, never by hand."}),
        ("Derived from the timeline", {"fields": STATS_FIELDS}),
        ("Record", {"fields": ("erased_at", "created_at", "updated_at")}),
    )
    inlines = [ConsentInline]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        # The model's clean() has normalised the identities; the persona follows the new data.
        personas_assign(customer_ids=[obj.pk])

    def has_change_permission(self, request, obj=None):
        if obj is not None and obj.erased_at is not None:
            return False  # an erased record stays empty
        return super().has_change_permission(request, obj)


@admin.register(Consent)
class ConsentAdmin(admin.ModelAdmin):
    list_display = ("customer", "channel", "status", "source", "occurred_at")
    list_filter = ("channel", "status", "source")
    search_fields = ("customer__email", "customer__phone")
    raw_id_fields = ("customer",)

    def has_change_permission(self, request, obj=None):
        return False  # append a new row instead

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Activity)
class ActivityAdmin(admin.ModelAdmin):
    list_display = ("occurred_at", "customer", "kind", "channel", "campaign")
    list_filter = ("kind", "channel")
    search_fields = ("customer__email", "customer__phone", "kind")
    raw_id_fields = ("customer", "campaign", "message")
    date_hierarchy = "occurred_at"


@admin.register(Erasure)
class ErasureAdmin(admin.ModelAdmin):
    """The GDPR audit trail: readable, never edited or deleted here."""

    list_display = ("customer_id", "erased_at", "erased_by", "suppressed", "reason")
    list_filter = ("erased_at",)
    search_fields = ("=customer_id", "reason")
    date_hierarchy = "erased_at"

    def has_add_permission(self, request):
        return False  # erasing goes through the customer page or the API

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Persona)
class PersonaAdmin(admin.ModelAdmin):
    """Personas, saved through the persona service so every customer's persona is recomputed."""

    list_display = ("name", "slug", "priority", "updated_at")
    search_fields = ("name", "slug", "description")
    prepopulated_fields = {"slug": ("name",)}
    fields = (
        "name", "slug", "priority", "description", "goals", "pain_points",
        "tone_of_voice", "preferred_channels", "rules",
    )  # fmt: skip

    def save_model(self, request, obj, form, change):
        persona_save(persona=obj, data={})

    def delete_model(self, request, obj):
        persona_delete(persona=obj)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            super().delete_queryset(request, queryset)
            personas_recompute_schedule()
