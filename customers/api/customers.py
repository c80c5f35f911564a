"""The customer record over REST: CRUD, bulk upsert, timeline and consents.

Validation lives in the services (``customers.services.customers``); the
serializers here describe shapes for the schema and convert types, so the API,
the bulk endpoint and CSV import reject the same input with the same words.
"""

from __future__ import annotations

from datetime import UTC

from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import generics, serializers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from customers.identity import IDENTITY_FIELDS, normalize_identities
from customers.models import Activity, Channel, Consent, Customer
from customers.querysets import consent_status_subquery
from customers.services.activities import STATS_FIELDS
from customers.services.consent import consent_current, consent_record
from customers.services.customers import (
    BULK_LIMIT,
    NUL_MESSAGE,
    PROFILE_FIELDS,
    IdentityConflict,
    contains_nul,
    customer_create,
    customer_update,
    customers_bulk_upsert,
)
from customers.services.privacy import customer_erase

CONSENT_SOURCES_VIA_API = (Consent.Source.API, Consent.Source.FORM, Consent.Source.ADMIN)


# --- serializers ---------------------------------------------------------------


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(required=False)


class FieldErrorsSerializer(serializers.Serializer):
    """400: ``{field: [messages]}``; errors not about one field are under ``non_field_errors``."""

    non_field_errors = serializers.ListField(child=serializers.CharField(), required=False)


class ConflictSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="Which identity matched which customer.")
    conflicts = serializers.DictField(
        child=serializers.IntegerField(),
        help_text='Identity field -> id of the customer holding it, e.g. {"email": 12}.',
    )


def _text(help_text: str = "", *, nullable: bool = False) -> serializers.CharField:
    return serializers.CharField(
        required=False, allow_blank=True, allow_null=nullable, trim_whitespace=False, help_text=help_text
    )


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": {"type": "string", "enum": [*Consent.Status.values, "unknown"]},
        "example": {"email": "opted_in", "sms": "unknown", "whatsapp": "unknown", "social": "opted_out"},
    }
)
class ConsentStateField(serializers.Field):
    """The current consent state per channel (from the latest ledger row), read-only."""

    def __init__(self, **kwargs):
        super().__init__(read_only=True, source="*", **kwargs)

    def to_representation(self, customer: Customer) -> dict[str, str]:
        state = {}
        for channel in Channel.values:
            # Querysets of the API annotate the state (one query for a whole page); anything else asks.
            name = f"consent_{channel}"
            value = (
                getattr(customer, name)
                if hasattr(customer, name)
                else consent_current(customer=customer, channel=channel)
            )
            state[channel] = value or "unknown"
        return state


class CustomerSerializer(serializers.ModelSerializer):
    email = _text("Normalised to lower case.", nullable=True)
    phone = _text("E.164 (+48600100200); a national number is read in `country`.", nullable=True)
    external_id = _text("Your system's id for this person.", nullable=True)
    mastodon_handle = _text("@user@host", nullable=True)
    bluesky_handle = _text("anna.bsky.social", nullable=True)
    first_name = _text(nullable=True)
    last_name = _text(nullable=True)
    locale = _text("For example pl or en-GB.", nullable=True)
    timezone = _text("IANA time zone, e.g. Europe/Warsaw.", nullable=True)
    country = _text("ISO 3166-1 alpha-2, e.g. PL.", nullable=True)
    city = _text(nullable=True)
    attributes = serializers.JSONField(
        required=False, help_text="A JSON object. On update keys are merged; a key set to null is removed."
    )
    persona = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    consent = ConsentStateField()
    consents = serializers.DictField(
        child=serializers.CharField(),
        write_only=True,
        required=False,
        help_text='Consent changes to record, per channel, e.g. {"email": "opted_in"} (source "api").',
    )

    class Meta:
        model = Customer
        fields = [
            "id", *IDENTITY_FIELDS, *PROFILE_FIELDS, "attributes", "persona", *STATS_FIELDS,
            "consent", "consents", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = ["id", *STATS_FIELDS, "created_at", "updated_at"]

    def validate_attributes(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError('Must be a JSON object, e.g. {"tier": "gold"}.')
        return value

    def validate(self, attrs):
        # A typo must not vanish silently; read-only fields sent back (a GET then PUT) are ignored.
        if isinstance(self.initial_data, dict):
            unknown = sorted(set(self.initial_data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({key: ["Unknown field."] for key in unknown})
        return attrs


class ActivitySerializer(serializers.ModelSerializer):
    class Meta:
        model = Activity
        fields = ["id", "occurred_at", "kind", "channel", "campaign", "message", "properties", "client_event_id"]


class ConsentRowSerializer(serializers.ModelSerializer):
    class Meta:
        model = Consent
        fields = ["id", "channel", "status", "source", "occurred_at", "evidence"]


class ConsentsSerializer(serializers.Serializer):
    current = serializers.DictField(
        child=serializers.CharField(), help_text="Per channel: opted_in, opted_out or unknown (never asked)."
    )
    history = ConsentRowSerializer(many=True, help_text="Every ledger row, newest first.")


class ConsentChangeSerializer(serializers.Serializer):
    channel = serializers.ChoiceField(choices=Channel.choices)
    status = serializers.ChoiceField(choices=Consent.Status.choices)
    source = serializers.ChoiceField(choices=[(s, s.label) for s in CONSENT_SOURCES_VIA_API], default="api")
    evidence = serializers.JSONField(
        required=False, help_text="A JSON object: IP address, form URL, wording shown, etc."
    )

    def validate_evidence(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError('Must be a JSON object, e.g. {"ip": "203.0.113.9"}.')
        if contains_nul(value):
            raise serializers.ValidationError(NUL_MESSAGE)
        return value


class BulkRequestSerializer(serializers.Serializer):
    customers = serializers.ListField(
        child=serializers.DictField(),
        help_text=f"Up to {BULK_LIMIT:,} customer objects (the fields of a customer, plus `consents`).",
    )


class RowResultSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="Position of the row in `customers`, from 0.")
    status = serializers.CharField(help_text="created, updated, unchanged, error or conflict.")
    id = serializers.IntegerField(allow_null=True)
    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))
    conflicts = serializers.DictField(child=serializers.IntegerField(), help_text="For conflicts: field -> id.")


class BulkResultSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    failed = serializers.IntegerField(help_text="Rows with status error or conflict; nothing of them was stored.")
    results = RowResultSerializer(many=True)


# --- helpers -------------------------------------------------------------------


def with_consent_state(queryset: QuerySet[Customer]) -> QuerySet[Customer]:
    """What ``CustomerSerializer`` reads, in the same query: persona and current consent per channel."""
    return queryset.select_related("persona").annotate(
        **{f"consent_{channel}": consent_status_subquery(channel) for channel in Channel.values}
    )


def _live_customer(pk) -> Customer:
    return get_object_or_404(Customer.objects.live(), pk=pk)


def _conflict_response(exc: IdentityConflict) -> Response:
    return Response({"detail": exc.messages[0], "conflicts": exc.matches}, status=status.HTTP_409_CONFLICT)


def _check_params(params) -> None:
    bad = {name: [NUL_MESSAGE] for name, value in params.items() if contains_nul(name) or contains_nul(value)}
    if bad:
        raise ValidationError(bad)


def _parse_time(params, name: str):
    raw = params.get(name)
    if not raw:
        return None
    try:
        value = parse_datetime(raw)
    except ValueError:
        value = None
    if value is None or value.year < 1900 or value.year > 9000:
        raise ValidationError(
            {name: [f"{raw!r} is not an ISO 8601 date-time in 1900-9000 (for example 2025-03-01T12:30:00Z)."]}
        )
    return value if timezone.is_aware(value) else value.replace(tzinfo=UTC)


_IDENTITY_PARAMS = [
    OpenApiParameter(name, str, description=f"Exact {name}, normalised like on write.") for name in IDENTITY_FIELDS
]
_CUSTOMER_ERRORS = {400: FieldErrorsSerializer, 403: ErrorSerializer, 404: ErrorSerializer}


# --- views ---------------------------------------------------------------------


@extend_schema(tags=["customers"])
class CustomerViewSet(viewsets.ModelViewSet):
    """The unified customer record.

    Erased customers are not listed and answer 404.
    """

    queryset = Customer.objects.live()
    serializer_class = CustomerSerializer

    def get_queryset(self) -> QuerySet[Customer]:
        return with_consent_state(super().get_queryset())

    def filter_queryset(self, queryset: QuerySet[Customer]) -> QuerySet[Customer]:
        if self.action != "list":
            return queryset
        params = self.request.query_params
        _check_params(params)
        # Normalised like on write; a bad value is a 400 naming the parameter.
        identities = {name: params[name] for name in IDENTITY_FIELDS if name in params}
        queryset = queryset.filter(**normalize_identities(identities, region=params.get("country")))
        if term := params.get("q"):
            queryset = queryset.search(term)
        if persona := params.get("persona"):
            queryset = queryset.filter(persona__slug=persona)
        if country := params.get("country"):
            queryset = queryset.filter(country=country.strip().upper())
        return queryset

    def _reload(self, customer: Customer) -> Customer:
        return with_consent_state(Customer.objects.all()).get(pk=customer.pk)

    @extend_schema(
        parameters=[
            *_IDENTITY_PARAMS,
            OpenApiParameter("q", str, description="Search in email, phone, names and external id."),
            OpenApiParameter("persona", str, description="Persona slug."),
            OpenApiParameter("country", str, description="ISO country code; also the region for a national phone."),
        ],
        responses={200: CustomerSerializer(many=True), 400: FieldErrorsSerializer, 403: ErrorSerializer},
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(responses={200: CustomerSerializer, 403: ErrorSerializer, 404: ErrorSerializer})
    def retrieve(self, request, *args, **kwargs):
        return super().retrieve(request, *args, **kwargs)

    @extend_schema(
        description=(
            "Create a customer. If any identity (email, phone, external_id, handles) already belongs to a "
            "customer, nothing is stored and the answer is 409 naming the customers; update them with PATCH "
            "or use POST /api/v1/customers/bulk/ for upserts."
        ),
        responses={
            201: CustomerSerializer,
            400: FieldErrorsSerializer,
            403: ErrorSerializer,
            409: OpenApiResponse(ConflictSerializer, description="An identity belongs to an existing customer."),
        },
    )
    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        consents = data.pop("consents", None)
        try:
            customer = customer_create(data=data, consents=consents, source=Consent.Source.API)
        except IdentityConflict as exc:
            return _conflict_response(exc)
        return Response(self.get_serializer(self._reload(customer)).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        description=(
            "Replace the writable fields: identities and profile fields left out are cleared and `attributes` "
            "is replaced. 409 when a new identity belongs to another customer."
        ),
        responses={
            200: CustomerSerializer,
            **_CUSTOMER_ERRORS,
            409: OpenApiResponse(ConflictSerializer, description="An identity belongs to another customer."),
        },
    )
    def update(self, request, *args, **kwargs):
        return self._write(request, partial=kwargs.get("partial", False))

    @extend_schema(
        description=(
            "Change the fields given; `attributes` are merged (a key set to null is removed). "
            "409 when a new identity belongs to another customer."
        ),
        responses={
            200: CustomerSerializer,
            **_CUSTOMER_ERRORS,
            409: OpenApiResponse(ConflictSerializer, description="An identity belongs to another customer."),
        },
    )
    def partial_update(self, request, *args, **kwargs):
        return self._write(request, partial=True)

    def _write(self, request: Request, *, partial: bool) -> Response:
        customer = self.get_object()
        serializer = self.get_serializer(customer, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        consents = data.pop("consents", None)
        if not partial:
            for name in IDENTITY_FIELDS:
                data.setdefault(name, None)
            for name in PROFILE_FIELDS:
                data.setdefault(name, "")
            new_attributes = data.get("attributes", {})
            data["attributes"] = {**dict.fromkeys(customer.attributes or {}), **new_attributes}
        try:
            customer = customer_update(customer=customer, data=data, consents=consents, source=Consent.Source.API)
        except IdentityConflict as exc:
            return _conflict_response(exc)
        return Response(self.get_serializer(self._reload(customer)).data)

    @extend_schema(
        description=(
            "GDPR erasure (Admin role only): personal data is removed from every table, the addresses are "
            "kept as hashes on the suppression list, and an audit record names who erased whom. "
            "The customer then answers 404."
        ),
        responses={204: None, 403: ErrorSerializer, 404: ErrorSerializer},
    )
    def destroy(self, request, *args, **kwargs):
        if not request.user.has_perm("customers.add_erasure"):
            raise PermissionDenied
        customer_erase(customer=self.get_object(), by=request.user, reason="API delete")
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(tags=["customers"])
class CustomerBulkView(APIView):
    """Upsert many customers by identity in one call."""

    queryset = Customer.objects.none()  # for RolePermissions: POST needs customers.add_customer

    @extend_schema(
        request=BulkRequestSerializer,
        description=(
            f"Upsert up to {BULK_LIMIT:,} customers. Each row resolves to a customer by any identity it holds: "
            "none -> created, one -> updated (attributes merged), several customers -> `conflict` (never merged). "
            "A row repeating an identity of an earlier row is an `error` naming that row. Bad rows never block "
            "good ones; nothing of a bad row is stored. The answer is 200 with one result per row "
            "(a 207-style body); 400 only when the body itself is wrong or holds too many rows."
        ),
        responses={200: BulkResultSerializer, 400: FieldErrorsSerializer, 403: ErrorSerializer},
        examples=[
            OpenApiExample(
                "Two rows",
                request_only=True,
                value={
                    "customers": [
                        {"email": "ana@example.com", "first_name": "Ana", "consents": {"email": "opted_in"}},
                        {"phone": "600100200", "country": "PL", "attributes": {"tier": "gold"}},
                    ]
                },
            )
        ],
    )
    def post(self, request: Request) -> Response:
        if not request.user.has_perm("customers.change_customer"):
            raise PermissionDenied  # an upsert updates as well as adds
        rows = request.data.get("customers") if isinstance(request.data, dict) else None
        if not isinstance(rows, list):
            raise ValidationError({"customers": ['Send {"customers": [ ... ]}, a list of customer objects.']})
        results = customers_bulk_upsert(rows=rows, source=Consent.Source.API)
        counts = {state: 0 for state in ("created", "updated", "unchanged")}
        failed = 0
        for result in results:
            if result.status in counts:
                counts[result.status] += 1
            else:
                failed += 1
        body = {**counts, "failed": failed, "results": [result.__dict__ for result in results]}
        return Response(body, status=status.HTTP_200_OK)


@extend_schema(tags=["customers"])
class CustomerTimelineView(generics.ListAPIView):
    """The customer's activities, newest first."""

    serializer_class = ActivitySerializer
    required_permission = "customers.view_activity"

    def get_queryset(self) -> QuerySet[Activity]:
        customer = _live_customer(self.kwargs["pk"])
        params = self.request.query_params
        _check_params(params)
        activities = Activity.objects.filter(customer=customer).order_by("-occurred_at", "-id")
        if kind := params.get("kind"):
            activities = activities.filter(kind__in=[k.strip() for k in kind.split(",") if k.strip()])
        if channel := params.get("channel"):
            if channel not in Channel.values:
                raise ValidationError(
                    {"channel": [f"Unknown channel {channel!r}; use one of {', '.join(Channel.values)}."]}
                )
            activities = activities.filter(channel=channel)
        if since := _parse_time(params, "since"):
            activities = activities.filter(occurred_at__gte=since)
        if until := _parse_time(params, "until"):
            activities = activities.filter(occurred_at__lt=until)
        return activities

    @extend_schema(
        parameters=[
            OpenApiParameter("kind", str, description="Activity kind, or several separated by commas."),
            OpenApiParameter("channel", str, enum=Channel.values),
            OpenApiParameter("since", OpenApiTypes.DATETIME, description="Only activities at or after this time."),
            OpenApiParameter("until", OpenApiTypes.DATETIME, description="Only activities before this time."),
        ],
        responses={
            200: ActivitySerializer(many=True),
            400: FieldErrorsSerializer,
            403: ErrorSerializer,
            404: ErrorSerializer,
        },
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


@extend_schema(tags=["customers"])
class CustomerConsentsView(APIView):
    """The consent ledger of one customer: current state per channel and every row."""

    queryset = Consent.objects.none()  # for RolePermissions: GET view_consent, POST add_consent

    def _body(self, customer: Customer) -> dict:
        history = list(customer.consents.order_by("-occurred_at", "-id"))
        current: dict[str, str] = {}
        for row in history:
            current.setdefault(row.channel, row.status)
        return {
            "current": {channel: current.get(channel, "unknown") for channel in Channel.values},
            "history": ConsentRowSerializer(history, many=True).data,
        }

    @extend_schema(responses={200: ConsentsSerializer, 403: ErrorSerializer, 404: ErrorSerializer})
    def get(self, request: Request, pk: int) -> Response:
        return Response(self._body(_live_customer(pk)))

    @extend_schema(
        request=ConsentChangeSerializer,
        description=(
            "Append a row to the ledger (it is never edited). A change of state also adds a `consent.changed` "
            "activity. The user recording it is added to the evidence."
        ),
        responses={201: ConsentsSerializer, 400: FieldErrorsSerializer, 403: ErrorSerializer, 404: ErrorSerializer},
    )
    def post(self, request: Request, pk: int) -> Response:
        customer = _live_customer(pk)
        serializer = ConsentChangeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        evidence = {**data.get("evidence", {}), "recorded_by": request.user.get_username()}
        consent_record(
            customer=customer, channel=data["channel"], status=data["status"], source=data["source"], evidence=evidence
        )
        return Response(self._body(customer), status=status.HTTP_201_CREATED)
