"""POST /api/v1/events: purchases and custom events onto customers' timelines."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, PolymorphicProxySerializer, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from customers.identity import IDENTITY_FIELDS
from customers.models import Channel, Consent
from customers.services.activities import EVENTS_LIMIT, EventStatus, events_record


class CustomerLookupSerializer(serializers.Serializer):
    id = serializers.IntegerField(required=False)
    email = serializers.CharField(required=False)
    phone = serializers.CharField(required=False, help_text="E.164, e.g. +48600100200.")
    external_id = serializers.CharField(required=False)
    mastodon_handle = serializers.CharField(required=False)
    bluesky_handle = serializers.CharField(required=False)


class EventSerializer(serializers.Serializer):
    """One event (documentation of the shape; ``events_record`` validates)."""

    customer = CustomerLookupSerializer(
        help_text=f"Who it happened to: one or more of id, {', '.join(IDENTITY_FIELDS)} (all must name one customer)."
    )
    kind = serializers.RegexField(
        r"^[a-z0-9_.]{1,64}$", help_text="`purchase` or a custom kind such as `order.refunded`."
    )
    occurred_at = serializers.DateTimeField(
        required=False, help_text="ISO 8601; default now; UTC without an offset; at most 5 minutes in the future."
    )
    channel = serializers.ChoiceField(choices=Channel.choices, required=False)
    campaign = serializers.IntegerField(required=False, allow_null=True, help_text="Campaign id.")
    properties = serializers.JSONField(
        required=False, help_text="A JSON object. A purchase needs `amount` (>= 0) and may give `currency`."
    )
    client_event_id = serializers.CharField(
        required=False, max_length=128, help_text="Your id for the event: a repeat is reported as a duplicate."
    )


class EventResultSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="Position of the event in the request, from 0.")
    status = serializers.CharField(help_text="recorded, duplicate or error.")
    id = serializers.IntegerField(allow_null=True, help_text="The activity's id (the original one for a duplicate).")
    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))


class EventsResultSerializer(serializers.Serializer):
    recorded = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    failed = serializers.IntegerField()
    results = EventResultSerializer(many=True)


_ONE_OR_MANY = PolymorphicProxySerializer(
    component_name="EventOrEvents",
    serializers=[EventSerializer, EventSerializer(many=True)],
    resource_type_field_name=None,
    many=False,
)


class EventsView(APIView):
    """Record purchases and custom events, one or up to 10,000 per call."""

    required_permission = "customers.add_activity"  # Marketer and Admin

    @extend_schema(
        tags=["events"],
        request=_ONE_OR_MANY,
        description=(
            f"Send one event object or a list of up to {EVENTS_LIMIT:,}. Idempotent on `client_event_id`: a "
            "repeat adds nothing and is reported as `duplicate` with the original activity id. "
            "Purchases keep the customer's lifetime value, orders count and last purchase current; engagement "
            "events with a channel keep last engaged at current.\n\n"
            "Status: **201** when every event was recorded or was a duplicate; **200** when a list was sent "
            "and at least one event failed (see `results`, the others were recorded); **400** when the body is "
            "not an event or a list of events, the list is too long, or a single event object failed."
        ),
        responses={
            201: EventsResultSerializer,
            200: OpenApiResponse(EventsResultSerializer, description="Some events of the list failed."),
            400: OpenApiResponse(description="Bad body, too many events, or the single event failed."),
            403: OpenApiResponse(description="Your role cannot record events."),
        },
        examples=[
            OpenApiExample(
                "A purchase",
                request_only=True,
                value={
                    "customer": {"email": "ana@example.com"},
                    "kind": "purchase",
                    "occurred_at": "2025-03-01T12:30:00Z",
                    "properties": {"amount": 49.9, "currency": "EUR", "order_id": "A-1001"},
                    "client_event_id": "order-A-1001",
                },
            )
        ],
    )
    def post(self, request: Request) -> Response:
        single = isinstance(request.data, dict)
        if not single and not isinstance(request.data, list):
            raise ValidationError({"events": ["Send one event object or a list of event objects."]})
        events = [request.data] if single else request.data
        if not events:
            raise ValidationError({"events": ["The list is empty."]})
        results = events_record(events=events, source=Consent.Source.API)
        counts = {"recorded": 0, "duplicates": 0, "failed": 0}
        for result in results:
            key = {EventStatus.RECORDED: "recorded", EventStatus.DUPLICATE: "duplicates"}.get(result.status, "failed")
            counts[key] += 1
        body = {**counts, "results": [result.__dict__ for result in results]}
        if single and counts["failed"]:
            return Response({**results[0].errors, **body}, status=status.HTTP_400_BAD_REQUEST)
        return Response(body, status=status.HTTP_200_OK if counts["failed"] else status.HTTP_201_CREATED)
