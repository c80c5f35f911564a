from __future__ import annotations

from rest_framework import serializers, viewsets

from segments.models import Segment
from segments.selectors import segment_count


class SegmentSerializer(serializers.ModelSerializer):
    count = serializers.SerializerMethodField(help_text="Customers in the segment right now.")

    class Meta:
        model = Segment
        fields = ["id", "name", "description", "kind", "rules", "count", "created_at", "updated_at"]

    def get_count(self, obj: Segment) -> int:
        return segment_count(obj)


class SegmentViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Segment.objects.all()
    serializer_class = SegmentSerializer
