"""The segments API: CRUD, live counts, members (JSON or streamed CSV), preview, explain, list upload.

Marketers write, Analysts read (``config.api.RolePermissions``). Rule trees are
validated by ``segments.rules.validate``; a bad tree is a 400 naming the node:
``{"rules": ["all[1].op: unknown operator 'eqq'; use one of ..."]}``.
"""

from __future__ import annotations

from dataclasses import asdict

from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.renderers import BaseRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings

from customers.api.customers import CustomerSerializer, with_consent_state
from customers.exports import customers_csv_response
from customers.models import Customer
from segments.models import Segment, SegmentMember
from segments.rules import RuleError, validate
from segments.selectors import rules_customers, segment_count, segment_customers, segment_explanation
from segments.services import (
    SegmentUploadError,
    UploadMode,
    segment_create,
    segment_delete,
    segment_members_upload,
    segment_update,
)

PREVIEW_SAMPLE = 20


def _rule_error(exc: RuleError) -> serializers.ValidationError:
    return serializers.ValidationError({"rules": [f"{exc.path}: {exc.reason}"]})


class CSVRenderer(BaseRenderer):
    """Lets ``?format=csv``, ``.csv`` and ``Accept: text/csv`` reach the export.

    The export itself is a streamed response built by ``customers.exports``; this
    renderer only ever renders error payloads (401, 403, 404) as a one-column CSV.
    """

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        detail = data.get("detail", data) if isinstance(data, dict) else data
        text = str(detail).replace('"', '""')
        return f'detail\n"{text}"\n'.encode()


# --- Serializers ---------------------------------------------------------------------


class SegmentSerializer(serializers.ModelSerializer):
    rules = serializers.JSONField(
        required=False,
        help_text='The rule tree, e.g. {"all": [{"field": "country", "op": "eq", "value": "PL"}]}. '
        "Required for dynamic segments; static segments take none.",
    )

    class Meta:
        model = Segment
        fields = ["id", "name", "description", "kind", "rules", "created_at", "updated_at"]
        read_only_fields = ["id", "created_at", "updated_at"]

    def validate_kind(self, value: str) -> str:
        if self.instance is not None and value != self.instance.kind:
            raise serializers.ValidationError("The kind of a segment cannot change; create a new segment instead.")
        return value

    def validate_rules(self, value):
        if value in (None, {}):
            return {}
        try:
            validate(value, segment_id=self.instance.pk if self.instance else None)
        except RuleError as exc:
            raise serializers.ValidationError([f"{exc.path}: {exc.reason}"]) from None
        return value

    def validate(self, attrs: dict) -> dict:
        kind = attrs.get("kind") or (self.instance.kind if self.instance else Segment.Kind.DYNAMIC)
        rules = attrs.get("rules", self.instance.rules if self.instance else {})
        if kind == Segment.Kind.DYNAMIC and not rules:
            raise serializers.ValidationError({"rules": ["A dynamic segment needs a rule tree."]})
        if kind == Segment.Kind.STATIC and rules:
            raise serializers.ValidationError(
                {"rules": ["A static segment has no rules: upload its members to /members/upload."]}
            )
        return attrs


class SegmentDetailSerializer(SegmentSerializer):
    count = serializers.SerializerMethodField(help_text="Customers in the segment right now.")

    class Meta(SegmentSerializer.Meta):
        fields = [*SegmentSerializer.Meta.fields, "count"]

    def get_count(self, obj: Segment) -> int | None:
        try:
            return segment_count(obj)
        except RuleError:
            return None


class SegmentErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()


class RulesErrorSerializer(serializers.Serializer):
    rules = serializers.ListField(child=serializers.CharField(), help_text="'<node path>: <reason>' per problem.")


class CountSerializer(serializers.Serializer):
    count = serializers.IntegerField()


class PreviewRequestSerializer(serializers.Serializer):
    rules = serializers.JSONField(help_text="An unsaved rule tree.")
    segment = serializers.IntegerField(
        required=False,
        help_text="The segment being edited, if any: a reference back to it is reported as a cycle.",
    )


class PreviewSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    sample = CustomerSerializer(many=True, help_text=f"Up to {PREVIEW_SAMPLE} matching customers, newest first.")


class ExplainSerializer(serializers.Serializer):
    segment = serializers.IntegerField()
    customer = serializers.IntegerField()
    matched = serializers.BooleanField(help_text="Whether the customer is in the segment.")
    tree = serializers.JSONField(
        allow_null=True,
        help_text='The rule tree with "matched": true|false on every node '
        "(null for static segments and erased customers, who are in no segment).",
    )


class MemberSerializer(serializers.ModelSerializer):
    email = serializers.EmailField(source="customer.email", allow_null=True)
    phone = serializers.CharField(source="customer.phone", allow_null=True)
    external_id = serializers.CharField(source="customer.external_id", allow_null=True)

    class Meta:
        model = SegmentMember
        fields = ["customer", "email", "phone", "external_id", "added_at"]


class UploadRequestSerializer(serializers.Serializer):
    file = serializers.FileField(
        help_text="CSV whose first row names the columns: email, phone, external_id (any of them)."
    )
    mode = serializers.ChoiceField(
        choices=UploadMode.CHOICES,
        default=UploadMode.APPEND,
        help_text="append adds to the current members; replace makes the file the whole list.",
    )


class UnknownRowSerializer(serializers.Serializer):
    line = serializers.IntegerField()
    value = serializers.CharField()
    reason = serializers.CharField()


class UploadReportSerializer(serializers.Serializer):
    mode = serializers.CharField()
    identity_columns = serializers.ListField(child=serializers.CharField())
    rows = serializers.IntegerField(help_text="Data rows read (blank lines skipped).")
    matched = serializers.IntegerField(help_text="Distinct customers found.")
    duplicates = serializers.IntegerField(help_text="Rows naming a customer already found earlier in the file.")
    added = serializers.IntegerField()
    removed = serializers.IntegerField(help_text="Members not in the file (replace mode only).")
    already_members = serializers.IntegerField()
    unknown_count = serializers.IntegerField()
    unknown = UnknownRowSerializer(many=True, help_text="Rows that matched nobody (first 1,000), with line numbers.")
    members = serializers.IntegerField(help_text="Members after the upload.")


_NOT_FOUND = OpenApiResponse(SegmentErrorSerializer, description="No such segment.")
_FORBIDDEN = OpenApiResponse(SegmentErrorSerializer, description="Not logged in, or the role may not do this.")
_RULES_400 = OpenApiResponse(RulesErrorSerializer, description="The rule tree is invalid: node path and reason.")


# --- Viewset ------------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(
        summary="List segments",
        description="Counts are not included here (each is a query over all customers); use /{id}/count.",
        responses={200: SegmentSerializer(many=True), 403: _FORBIDDEN},
    ),
    retrieve=extend_schema(
        summary="Get a segment with its live count",
        responses={200: SegmentDetailSerializer, 403: _FORBIDDEN, 404: _NOT_FOUND},
    ),
    create=extend_schema(
        summary="Create a segment", responses={201: SegmentSerializer, 400: _RULES_400, 403: _FORBIDDEN}
    ),
    update=extend_schema(responses={200: SegmentSerializer, 400: _RULES_400, 403: _FORBIDDEN, 404: _NOT_FOUND}),
    partial_update=extend_schema(responses={200: SegmentSerializer, 400: _RULES_400, 403: _FORBIDDEN, 404: _NOT_FOUND}),
    destroy=extend_schema(
        summary="Delete a segment nobody uses",
        responses={
            204: None,
            403: _FORBIDDEN,
            404: _NOT_FOUND,
            409: OpenApiResponse(SegmentErrorSerializer, description="Still used by campaigns, segments or personas."),
        },
    ),
)
class SegmentViewSet(viewsets.ModelViewSet):
    """Audiences defined by rules (dynamic) or uploaded lists (static)."""

    queryset = Segment.objects.all()
    serializer_class = SegmentSerializer
    lookup_value_regex = r"\d+"

    @property
    def required_permission(self) -> str | None:
        # Actions whose HTTP method says nothing about what they do to the model.
        return {
            "preview": "segments.view_segment",
            "members_upload": "segments.change_segment",
        }.get(getattr(self, "action", None) or "")

    def get_serializer_class(self):
        if self.action == "retrieve":
            return SegmentDetailSerializer
        return super().get_serializer_class()

    def perform_create(self, serializer: SegmentSerializer) -> None:
        serializer.instance = segment_create(**serializer.validated_data)

    def perform_update(self, serializer: SegmentSerializer) -> None:
        data = dict(serializer.validated_data)
        data.pop("kind", None)
        serializer.instance = segment_update(segment=serializer.instance, **data)

    def destroy(self, request, *args, **kwargs):
        segment = self.get_object()
        try:
            segment_delete(segment=segment)
        except DjangoValidationError as exc:
            return Response({"detail": exc.messages[0]}, status=status.HTTP_409_CONFLICT)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _members_of(self, segment: Segment):
        try:
            return segment_customers(segment)
        except RuleError as exc:
            raise _rule_error(exc) from None

    @extend_schema(
        summary="Count the segment's customers now",
        responses={200: CountSerializer, 400: _RULES_400, 403: _FORBIDDEN, 404: _NOT_FOUND},
    )
    @action(detail=True, methods=["get"])
    def count(self, request, pk=None):
        return Response({"count": self._members_of(self.get_object()).count()})

    @extend_schema(
        summary="The segment's customers, paginated JSON or a streamed CSV of all of them",
        description="`?format=csv`, `/customers.csv` or `Accept: text/csv` stream every member as CSV.",
        parameters=[
            OpenApiParameter("format", str, enum=["json", "csv"], description="csv streams every member."),
        ],
        responses={
            (200, "application/json"): CustomerSerializer(many=True),
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="Header row, then one row per member."),
            400: _RULES_400,
            403: _FORBIDDEN,
            404: _NOT_FOUND,
        },
    )
    @action(detail=True, methods=["get"], renderer_classes=[*api_settings.DEFAULT_RENDERER_CLASSES, CSVRenderer])
    def customers(self, request, pk=None, format=None):
        segment = self.get_object()
        members = self._members_of(segment)
        if request.accepted_renderer.format == "csv":
            return customers_csv_response(members, filename=f"segment-{segment.pk}-{segment.name}.csv")
        page = self.paginate_queryset(with_consent_state(members).order_by("-pk"))
        return self.get_paginated_response(CustomerSerializer(page, many=True, context={"request": request}).data)

    @extend_schema(
        summary="Count and sample an unsaved rule tree",
        request=PreviewRequestSerializer,
        responses={200: PreviewSerializer, 400: _RULES_400, 403: _FORBIDDEN},
    )
    @action(detail=False, methods=["post"])
    def preview(self, request):
        body = PreviewRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        tree = body.validated_data["rules"]
        try:
            validate(tree, segment_id=body.validated_data.get("segment"))
            members = rules_customers(tree)
            count = members.count()
            sample = list(with_consent_state(members).order_by("-pk")[:PREVIEW_SAMPLE])
        except RuleError as exc:
            raise _rule_error(exc) from None
        return Response({"count": count, "sample": CustomerSerializer(sample, many=True).data})

    @extend_schema(
        summary="Why a customer is in or out: every rule node with matched true/false",
        responses={
            200: ExplainSerializer,
            400: _RULES_400,
            403: _FORBIDDEN,
            404: OpenApiResponse(SegmentErrorSerializer, description="No such segment or customer."),
        },
    )
    @action(detail=True, methods=["get"], url_path=r"explain/(?P<customer_id>\d+)")
    def explain(self, request, pk=None, customer_id=None):
        segment = self.get_object()
        customer = get_object_or_404(Customer, pk=customer_id)
        try:
            explanation = segment_explanation(segment=segment, customer=customer)
        except RuleError as exc:
            raise _rule_error(exc) from None
        return Response(
            {"segment": segment.pk, "customer": customer.pk, "matched": explanation.matched, "tree": explanation.tree}
        )

    @extend_schema(
        summary="Members of a static segment, with when they were added",
        responses={
            200: MemberSerializer(many=True),
            400: OpenApiResponse(SegmentErrorSerializer, description="A dynamic segment has no member list."),
            403: _FORBIDDEN,
            404: _NOT_FOUND,
        },
    )
    @action(detail=True, methods=["get"])
    def members(self, request, pk=None):
        segment = self.get_object()
        if segment.kind != Segment.Kind.STATIC:
            return Response(
                {"detail": "A dynamic segment's members follow its rules; list them at /customers."},
                status=status.HTTP_400_BAD_REQUEST,
            )
        members = SegmentMember.objects.filter(segment=segment).select_related("customer").order_by("-added_at", "-pk")
        page = self.paginate_queryset(members)
        return self.get_paginated_response(MemberSerializer(page, many=True).data)

    @extend_schema(
        summary="Upload a static segment's members from CSV",
        description=(
            "The first row names the columns (email, phone, external_id, mastodon_handle, bluesky_handle; an "
            "optional country column lets national phone numbers parse). Rows matching no customer are reported "
            "with their line numbers; repeated customers count once. Either the whole file applies or nothing."
        ),
        request={"multipart/form-data": UploadRequestSerializer},
        responses={
            200: UploadReportSerializer,
            400: OpenApiResponse(
                inline_serializer("UploadError", {"file": serializers.ListField(child=serializers.CharField())}),
                description="The file cannot be used (not CSV, no identity column) or the segment is dynamic.",
            ),
            403: _FORBIDDEN,
            404: _NOT_FOUND,
        },
    )
    @action(
        detail=True,
        methods=["post"],
        url_path="members/upload",
        parser_classes=[MultiPartParser, FormParser],
    )
    def members_upload(self, request, pk=None):
        segment = self.get_object()
        body = UploadRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            report = segment_members_upload(
                segment=segment, file=body.validated_data["file"], mode=body.validated_data["mode"]
            )
        except SegmentUploadError as exc:
            raise serializers.ValidationError({"file": [str(exc)]}) from None
        return Response(asdict(report))
