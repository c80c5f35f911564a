from django.contrib import admin

from customers.models import Activity, Consent, Customer


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
    list_display = ("__str__", "email", "phone", "country", "city", "created_at")
    list_filter = ("country",)
    search_fields = ("email", "phone", "external_id", "first_name", "last_name")
    fieldsets = (
        ("Identity", {"fields": ("email", "phone", "external_id")}),
        ("Profile", {"fields": ("first_name", "last_name", "locale", "timezone", "country", "city")}),
        ("Attributes", {"fields": ("attributes",)}),
    )
    inlines = [ConsentInline]


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
