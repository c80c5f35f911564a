"""Personas over REST: CRUD at /api/v1/personas/, looked up by id or slug.

Writes go through ``customers.services.personas`` (validation, then every
customer's persona is recomputed), so the API and the UI accept and reject the
same things with the same words. Rule errors are 400s naming the node's path,
e.g. ``{"rules": ["all[0].op: unknown operator 'bigger'; use one of ..."]}``.
"""

from __future__ import annotations

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.response import Response

from customers.api.customers import ErrorSerializer
from customers.models import Channel, Persona
from customers.selectors import personas_with_member_counts
from customers.services.personas import PERSONA_FIELDS, Recompute, persona_create, persona_delete, persona_update


class PersonaFieldErrorsSerializer(serializers.Serializer):
    """400: ``{field: [messages]}``; a rule error names the node path, e.g. ``all[1].value: ...``."""

    name = serializers.ListField(child=serializers.CharField(), required=False)
    slug = serializers.ListField(child=serializers.CharField(), required=False)
    rules = serializers.ListField(child=serializers.CharField(), required=False)
    preferred_channels = serializers.ListField(child=serializers.CharField(), required=False)
    non_field_errors = serializers.ListField(child=serializers.CharField(), required=False)


class PersonaSerializer(serializers.ModelSerializer):
    slug = serializers.SlugField(
        max_length=100,
        required=False,
        allow_blank=True,
        help_text='Referenced by segment rules ({"persona": slug}). Made from the name when left out.',
    )
    preferred_channels = serializers.ListField(
        child=serializers.ChoiceField(choices=Channel.choices),
        required=False,
        help_text="Channels to reach these customers on first, in order.",
    )
    rules = serializers.JSONField(
        help_text="A rule tree in the segment rule language; customers matching it (and no "
        "higher-priority persona) belong to this persona."
    )
    member_count = serializers.IntegerField(read_only=True, help_text="Customers in this persona now.")

    class Meta:
        model = Persona
        fields = [
            "id", "name", "slug", "description", "goals", "pain_points", "preferred_channels",
            "tone_of_voice", "rules", "priority", "member_count", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = ["id", "member_count", "created_at", "updated_at"]


class PersonaWriteSerializer(PersonaSerializer):
    recompute = serializers.ChoiceField(
        choices=[(r.value, r.value) for r in Recompute],
        read_only=True,
        help_text="'done': member counts are current; 'queued': every customer's persona is being "
        "recomputed in the background.",
    )

    class Meta(PersonaSerializer.Meta):
        fields = [*PersonaSerializer.Meta.fields, "recompute"]


_ID_OR_SLUG = OpenApiParameter(
    "id_or_slug",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    description="The persona's numeric id or its slug.",
    pattern="^[-a-zA-Z0-9_]+$",
)
_RULE_ERROR_EXAMPLE = OpenApiExample(
    "Bad rule",
    value={"rules": ["all[0].op: unknown operator 'bigger'"]},
    response_only=True,
    status_codes=["400"],
)
_READ_ERRORS = {403: ErrorSerializer, 404: ErrorSerializer}
_WRITE_ERRORS = {400: PersonaFieldErrorsSerializer, **_READ_ERRORS}


@extend_schema_view(
    list=extend_schema(responses={200: PersonaSerializer(many=True), 403: ErrorSerializer}),
    retrieve=extend_schema(parameters=[_ID_OR_SLUG], responses={200: PersonaSerializer, **_READ_ERRORS}),
    create=extend_schema(
        request=PersonaSerializer,
        responses={201: PersonaWriteSerializer, 400: PersonaFieldErrorsSerializer, 403: ErrorSerializer},
        examples=[_RULE_ERROR_EXAMPLE],
    ),
    update=extend_schema(
        parameters=[_ID_OR_SLUG],
        request=PersonaSerializer,
        responses={200: PersonaWriteSerializer, **_WRITE_ERRORS},
        examples=[_RULE_ERROR_EXAMPLE],
    ),
    partial_update=extend_schema(
        parameters=[_ID_OR_SLUG],
        request=PersonaSerializer,
        responses={200: PersonaWriteSerializer, **_WRITE_ERRORS},
        examples=[_RULE_ERROR_EXAMPLE],
    ),
    destroy=extend_schema(parameters=[_ID_OR_SLUG], responses={204: None, **_READ_ERRORS}),
)
@extend_schema(tags=["personas"])
class PersonaViewSet(viewsets.ModelViewSet):
    """Personas: archetypes customers fall into by rules; the highest priority match wins.

    Creating, changing or deleting a persona recomputes every customer's persona.
    Marketers write; Analysts read.
    """

    queryset = Persona.objects.all()
    serializer_class = PersonaSerializer
    lookup_url_kwarg = "id_or_slug"
    lookup_value_regex = "[-a-zA-Z0-9_]+"

    def get_queryset(self) -> QuerySet[Persona]:
        return personas_with_member_counts()

    def get_object(self) -> Persona:
        value = self.kwargs[self.lookup_url_kwarg]
        lookup = {"pk": int(value)} if value.isdigit() else {"slug": value}
        persona = get_object_or_404(self.get_queryset(), **lookup)
        self.check_object_permissions(self.request, persona)
        return persona

    def _written(self, persona: Persona, recompute: Recompute, code: int) -> Response:
        persona = self.get_queryset().get(pk=persona.pk)  # with its member count after the recompute
        persona.recompute = recompute.value
        return Response(PersonaWriteSerializer(persona, context=self.get_serializer_context()).data, status=code)

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        # A service ValidationError becomes a 400 naming the field (config.api.exception_handler).
        persona, recompute = persona_create(data=_persona_data(serializer.validated_data))
        return self._written(persona, recompute, status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        persona = self.get_object()
        serializer = self.get_serializer(persona, data=request.data, partial=kwargs.pop("partial", False))
        serializer.is_valid(raise_exception=True)
        persona, recompute = persona_update(persona=persona, data=_persona_data(serializer.validated_data))
        return self._written(persona, recompute, status.HTTP_200_OK)

    def destroy(self, request, *args, **kwargs):
        persona_delete(persona=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


def _persona_data(validated: dict) -> dict:
    return {key: value for key, value in validated.items() if key in PERSONA_FIELDS}
