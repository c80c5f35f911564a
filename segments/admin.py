from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from segments.models import Segment, SegmentMember
from segments.rules import RuleError
from segments.selectors import segment_count


@admin.register(Segment)
class SegmentAdmin(admin.ModelAdmin):
    """Raw access for administrators; marketers build segments in the UI builder (segments:new)."""

    list_display = ("name", "kind", "members_now", "updated_at", "builder_link")
    list_filter = ("kind",)
    search_fields = ("name",)

    @admin.display(description="Members now")
    def members_now(self, obj: Segment) -> int | str:
        try:
            return segment_count(obj)
        except RuleError as exc:
            return f"invalid rules ({exc})"

    @admin.display(description="")
    def builder_link(self, obj: Segment) -> str:
        return format_html('<a href="{}">Open in Chorus</a>', reverse("segments:detail", args=[obj.pk]))


@admin.register(SegmentMember)
class SegmentMemberAdmin(admin.ModelAdmin):
    list_display = ("segment", "customer", "added_at")
    list_filter = ("segment",)
    raw_id_fields = ("customer",)
