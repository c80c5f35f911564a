from django.contrib import admin

from segments.models import Segment, SegmentMember
from segments.selectors import segment_count


@admin.register(Segment)
class SegmentAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "members_now", "updated_at")
    list_filter = ("kind",)
    search_fields = ("name",)

    @admin.display(description="Members now")
    def members_now(self, obj: Segment) -> int:
        return segment_count(obj)


@admin.register(SegmentMember)
class SegmentMemberAdmin(admin.ModelAdmin):
    list_display = ("segment", "customer", "added_at")
    raw_id_fields = ("customer",)
