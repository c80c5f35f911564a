from __future__ import annotations

from rest_framework import serializers, viewsets

from campaigns.models import Campaign, Step
from campaigns.selectors import campaign_channel_stats


class StepSerializer(serializers.ModelSerializer):
    class Meta:
        model = Step
        fields = ["id", "position", "channel", "subject", "body", "delay"]


class ChannelStatsSerializer(serializers.Serializer):
    channel = serializers.CharField()
    targeted = serializers.IntegerField()
    skipped = serializers.IntegerField()
    sent = serializers.IntegerField()
    delivered = serializers.IntegerField()
    opened = serializers.IntegerField()
    clicked = serializers.IntegerField()
    failed = serializers.IntegerField()
    pending = serializers.IntegerField()


class CampaignSerializer(serializers.ModelSerializer):
    brand = serializers.StringRelatedField()
    steps = StepSerializer(many=True, read_only=True)
    stats = serializers.SerializerMethodField()

    class Meta:
        model = Campaign
        fields = [
            "id", "name", "goal", "brand", "segment", "state", "scheduled_at",
            "launched_at", "completed_at", "steps", "stats", "created_at",
        ]  # fmt: skip

    def get_stats(self, obj: Campaign) -> list[dict]:
        return ChannelStatsSerializer(campaign_channel_stats(obj), many=True).data


class CampaignViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Campaign.objects.select_related("brand").prefetch_related("steps")
    serializer_class = CampaignSerializer
