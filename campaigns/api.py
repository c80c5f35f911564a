"""Campaigns, brands and templates over REST.

* ``/api/v1/campaigns/``: read-only, with per-channel results.
* ``/api/v1/brands/``: every role reads; Brand managers and Admins write (each
  change is audited as a ``BrandChange``).
* ``/api/v1/templates/``: CRUD with persona variants nested; content is
  validated by ``campaigns.template_services`` exactly as the editor does, so a
  Liquid syntax error is a 400 naming the field, line and column, and a bad
  email block a 400 naming the block.
* ``POST /api/v1/templates/{id}/render``: the content rendered for a customer,
  a persona's sample customer or an ad-hoc context, with the brand-check findings.

Permissions are the role's model permissions (``config.api.RolePermissions``).
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import ProtectedError
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import serializers, status, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from campaigns.content.checks import check_content
from campaigns.content.render import RenderedContent, render_template
from campaigns.models import (
    Brand,
    Campaign,
    ContentChannel,
    RequiredPhrase,
    Step,
    Template,
    TemplateVariant,
)
from campaigns.selectors import campaign_channel_stats
from campaigns.services import brand_change_record, brand_state
from campaigns.template_services import (
    CHANNEL_FIELDS,
    IMAGE_CHANNELS,
    TemplateInvalid,
    template_save,
)
from customers.api.customers import ErrorSerializer, FieldErrorsSerializer
from customers.models import Customer, Persona

# --- Campaigns ---------------------------------------------------------------------------


class StepSerializer(serializers.ModelSerializer):
    template_name = serializers.CharField(source="template.name", read_only=True)

    class Meta:
        model = Step
        fields = ["id", "position", "channel", "template", "template_name", "delay"]


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

    @extend_schema_field(ChannelStatsSerializer(many=True))
    def get_stats(self, obj: Campaign) -> list[dict]:
        return ChannelStatsSerializer(campaign_channel_stats(obj), many=True).data


class CampaignViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Campaign.objects.select_related("brand").prefetch_related("steps__template")
    serializer_class = CampaignSerializer


# --- Errors ----------------------------------------------------------------------------------


_FORBIDDEN = OpenApiResponse(ErrorSerializer, description="Not logged in, or the role may not do this.")
_NOT_FOUND = OpenApiResponse(ErrorSerializer, description="No such object.")
_INVALID = OpenApiResponse(FieldErrorsSerializer, description="Invalid input: messages per field.")


# --- Brands ---------------------------------------------------------------------------------


class LinesField(serializers.ListField):
    """A newline-separated text field of the model, exchanged as a list of strings."""

    def __init__(self, **kwargs):
        kwargs.setdefault("child", serializers.CharField(max_length=500))
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def to_representation(self, value: str) -> list[str]:
        return [line.strip() for line in (value or "").splitlines() if line.strip()]

    def to_internal_value(self, data) -> str:
        lines = super().to_internal_value(data)
        for line in lines:
            if "\n" in line or "\r" in line:
                raise serializers.ValidationError("One entry per item: an entry cannot contain a line break.")
        return "\n".join(line.strip() for line in lines if line.strip())


@extend_schema_field(
    {"type": "object", "additionalProperties": {"type": "string"}, "example": {"utm_source": "chorus"}}
)
class UtmField(serializers.Field):
    """``key=value`` lines of the model, exchanged as an object."""

    def to_representation(self, value: str) -> dict[str, str]:
        pairs = (line.split("=", 1) for line in (value or "").splitlines() if "=" in line)
        return {key.strip(): val.strip() for key, val in pairs if key.strip()}

    def to_internal_value(self, data) -> str:
        if not isinstance(data, dict):
            raise serializers.ValidationError('Expected an object such as {"utm_source": "chorus"}.')
        lines = []
        for key, value in data.items():
            key, value = str(key).strip(), "" if value is None else str(value).strip()
            if not key or "=" in key or any(c in f"{key}{value}" for c in "\r\n"):
                raise serializers.ValidationError(f"{key!r} is not a parameter name.")
            lines.append(f"{key}={value}")
        return "\n".join(lines)


class RequiredPhraseSerializer(serializers.ModelSerializer):
    class Meta:
        model = RequiredPhrase
        fields = ["channel", "phrase"]


class BrandSerializer(serializers.ModelSerializer):
    logo = serializers.ImageField(read_only=True, help_text="Uploaded in the admin.")
    legal_footer = serializers.CharField(
        read_only=True, help_text="Company name and postal address, as emails show it."
    )
    banned_phrases = LinesField(help_text="Matched case-insensitively as whole words in every channel.")
    link_domains = LinesField(
        child=serializers.CharField(max_length=253),
        help_text="Allowed link domains (subdomains included). Empty: links to any domain pass.",
    )
    seed_list = LinesField(help_text="Test recipients: email addresses, phone numbers, social handles.")
    utm_parameters = UtmField(
        required=False, help_text="Added to every link; utm_medium is the channel, utm_campaign the campaign."
    )
    required_phrases = RequiredPhraseSerializer(
        many=True, required=False, help_text="Phrases every message of a channel must contain. Replaced as a whole."
    )

    class Meta:
        model = Brand
        fields = [
            "id", "name", "logo", "primary_colour", "secondary_colour", "text_colour", "background_colour",
            "font_stack", "voice_and_tone", "legal_company_name", "postal_address", "legal_footer",
            "email_from_name", "email_from_address", "email_reply_to", "sms_sender", "sms_messaging_service",
            "whatsapp_sender", "mastodon_account", "bluesky_account", "banned_phrases", "required_phrases",
            "link_domains", "email_subject_max_chars", "sms_max_segments", "whatsapp_max_chars",
            "mastodon_max_chars", "bluesky_max_graphemes", "utm_parameters", "seed_list",
            "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = ["id", "created_at", "updated_at"]

    def validate_required_phrases(self, value: list[dict]) -> list[dict]:
        seen = set()
        for item in value:
            key = (item["channel"], item["phrase"].strip().casefold())
            if key in seen:
                raise serializers.ValidationError(f"“{item['phrase']}” is listed twice for {item['channel']}.")
            seen.add(key)
        return value


@transaction.atomic
def _brand_write(*, brand: Brand, data: dict, by) -> Brand:
    """Create or change ``brand`` from validated API data; a change is audited field by field."""
    phrases = data.pop("required_phrases", None)
    before = brand_state(brand) if brand.pk else None
    for name, value in data.items():
        setattr(brand, name, value)
    brand.full_clean()
    brand.save()
    if phrases is not None:
        brand.required_phrases.all().delete()
        RequiredPhrase.objects.bulk_create(
            RequiredPhrase(brand=brand, channel=p["channel"], phrase=p["phrase"].strip()) for p in phrases
        )
    if before is not None:
        brand_change_record(brand=brand, before=before, by=by)
    return brand


_PROTECTED = OpenApiResponse(ErrorSerializer, description="Templates or campaigns still use the brand.")


@extend_schema_view(
    list=extend_schema(summary="List brands", responses={200: BrandSerializer(many=True), 403: _FORBIDDEN}),
    retrieve=extend_schema(summary="Get a brand", responses={200: BrandSerializer, 403: _FORBIDDEN, 404: _NOT_FOUND}),
    create=extend_schema(
        summary="Create a brand (Brand manager, Admin)",
        responses={201: BrandSerializer, 400: _INVALID, 403: _FORBIDDEN},
    ),
    update=extend_schema(
        summary="Replace a brand (Brand manager, Admin)",
        responses={200: BrandSerializer, 400: _INVALID, 403: _FORBIDDEN, 404: _NOT_FOUND},
    ),
    partial_update=extend_schema(
        summary="Change some of a brand's fields (Brand manager, Admin)",
        responses={200: BrandSerializer, 400: _INVALID, 403: _FORBIDDEN, 404: _NOT_FOUND},
    ),
    destroy=extend_schema(
        summary="Delete a brand nothing uses (Brand manager, Admin)",
        responses={204: None, 403: _FORBIDDEN, 404: _NOT_FOUND, 409: _PROTECTED},
    ),
)
@extend_schema(tags=["brands"])
class BrandViewSet(viewsets.ModelViewSet):
    """Brand guidelines: every role reads them; Brand managers and Admins change them (audited)."""

    queryset = Brand.objects.prefetch_related("required_phrases")
    serializer_class = BrandSerializer

    def perform_create(self, serializer: BrandSerializer) -> None:
        serializer.instance = _brand_write(brand=Brand(), data=dict(serializer.validated_data), by=self.request.user)

    def perform_update(self, serializer: BrandSerializer) -> None:
        serializer.instance = _brand_write(
            brand=serializer.instance, data=dict(serializer.validated_data), by=self.request.user
        )

    def destroy(self, request, *args, **kwargs):
        brand = self.get_object()
        try:
            brand.delete()
        except ProtectedError:
            return Response(
                {"detail": f"{brand.name} is used by templates or campaigns; it cannot be deleted."},
                status=status.HTTP_409_CONFLICT,
            )
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Templates ------------------------------------------------------------------------------

_BLOCKS_HELP = (
    'Email only: a list of blocks, each {"type": ..., fields}: heading {text}, text {text}, '
    "image {src, alt, href?}, button {text, url}, divider {}, offer {title, text, code?, url?, image?}, "
    "html {html}. Every text field is Liquid."
)


class TemplateVariantSerializer(serializers.ModelSerializer):
    persona = serializers.SlugRelatedField(
        slug_field="slug", queryset=Persona.objects.all(), help_text="The persona's slug."
    )
    subject = serializers.CharField(required=False, allow_null=True, allow_blank=True, trim_whitespace=False)
    preheader = serializers.CharField(required=False, allow_null=True, allow_blank=True, trim_whitespace=False)
    blocks = serializers.JSONField(required=False, allow_null=True, help_text=_BLOCKS_HELP)
    body = serializers.CharField(required=False, allow_null=True, allow_blank=True, trim_whitespace=False)
    image_alt = serializers.CharField(required=False, allow_null=True, allow_blank=True, trim_whitespace=False)

    class Meta:
        model = TemplateVariant
        fields = ["persona", "subject", "preheader", "blocks", "body", "image_alt"]


class TemplateSerializer(serializers.ModelSerializer):
    brand = serializers.PrimaryKeyRelatedField(queryset=Brand.objects.all(), help_text="The brand's id.")
    subject = serializers.CharField(
        required=False, allow_blank=True, max_length=300, trim_whitespace=False, help_text="Email only; Liquid."
    )
    preheader = serializers.CharField(
        required=False, allow_blank=True, max_length=200, trim_whitespace=False, help_text="Email only; Liquid."
    )
    blocks = serializers.JSONField(required=False, help_text=_BLOCKS_HELP)
    body = serializers.CharField(
        required=False, allow_blank=True, trim_whitespace=False, help_text="SMS, WhatsApp, Mastodon, Bluesky; Liquid."
    )
    image = serializers.ImageField(
        required=False, allow_null=True, help_text="Mastodon and Bluesky only; upload as multipart/form-data."
    )
    image_alt = serializers.CharField(
        required=False, allow_blank=True, max_length=1000, trim_whitespace=False, help_text="Mastodon, Bluesky; Liquid."
    )
    variants = TemplateVariantSerializer(
        many=True,
        required=False,
        help_text="Per-persona overrides; a field left null (or out) falls back to the template's. "
        "Writing the list replaces every variant.",
    )

    class Meta:
        model = Template
        fields = [
            "id", "name", "brand", "channel", "subject", "preheader", "blocks", "body", "image", "image_alt",
            "variants", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = ["id", "created_at", "updated_at"]

    def validate_channel(self, value: str) -> str:
        if self.instance is not None and value != self.instance.channel:
            raise serializers.ValidationError("The channel of a template cannot change; create a new template instead.")
        return value

    def validate_variants(self, value: list[dict]) -> list[dict]:
        slugs = [item["persona"].slug for item in value]
        if len(set(slugs)) != len(slugs):
            raise serializers.ValidationError("Each persona can have one variant; a persona is listed twice.")
        return value

    def validate(self, attrs: dict) -> dict:
        channel = attrs.get("channel") or (self.instance.channel if self.instance else None)
        if channel is None:
            raise serializers.ValidationError({"channel": ["This field is required."]})
        label = ContentChannel(channel).label
        used = CHANNEL_FIELDS[channel]
        errors: dict[str, list[str]] = {}
        for field in ("subject", "preheader", "blocks", "body", "image_alt"):
            if field not in used and attrs.get(field) not in (None, "", []):
                errors[field] = [f"{label} templates have no {field}; they use {', '.join(used)}."]
        if attrs.get("image") and channel not in IMAGE_CHANNELS:
            errors["image"] = [f"{label} templates have no image; only Mastodon and Bluesky posts do."]
        for item in attrs.get("variants", []):
            extra = [f for f in ("subject", "preheader", "blocks", "body", "image_alt") if f not in used]
            if any(item.get(f) not in (None, "", []) for f in extra):
                errors.setdefault("variants", []).append(
                    f"{item['persona'].slug}: {label} variants can only override {', '.join(used)}."
                )
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


def _invalid(exc: TemplateInvalid) -> serializers.ValidationError:
    """The service's problems as DRF field errors: a variant's under "variants", prefixed by its persona."""
    errors: dict[str, list[str]] = {}
    for problem in exc.problems:
        if problem.persona:
            errors.setdefault("variants", []).append(f"{problem.persona}: {problem.message}")
        else:
            errors.setdefault(problem.field, []).append(problem.message)
    return serializers.ValidationError(errors)


_LIQUID_ERROR_EXAMPLE = OpenApiExample(
    "Liquid syntax error",
    value={"subject": ["Subject, line 1, column 4: expected '}}', found end of file"]},
    response_only=True,
    status_codes=["400"],
)
_BLOCK_ERROR_EXAMPLE = OpenApiExample(
    "Bad block",
    value={"blocks": ["Block 2 (button), url: 'shop' is not an http(s), mailto: or tel: link."]},
    response_only=True,
    status_codes=["400"],
)


@extend_schema_view(
    list=extend_schema(
        summary="List templates",
        parameters=[
            OpenApiParameter("brand", int, description="Only this brand's templates."),
            OpenApiParameter("channel", str, enum=ContentChannel.values, description="Only this channel's."),
            OpenApiParameter("search", str, description="Part of the name, any case."),
        ],
        responses={200: TemplateSerializer(many=True), 403: _FORBIDDEN},
    ),
    retrieve=extend_schema(
        summary="Get a template with its persona variants",
        responses={200: TemplateSerializer, 403: _FORBIDDEN, 404: _NOT_FOUND},
    ),
    create=extend_schema(
        summary="Create a template",
        responses={201: TemplateSerializer, 400: _INVALID, 403: _FORBIDDEN},
        examples=[_LIQUID_ERROR_EXAMPLE, _BLOCK_ERROR_EXAMPLE],
    ),
    update=extend_schema(
        summary="Replace a template's content",
        responses={200: TemplateSerializer, 400: _INVALID, 403: _FORBIDDEN, 404: _NOT_FOUND},
        examples=[_LIQUID_ERROR_EXAMPLE, _BLOCK_ERROR_EXAMPLE],
    ),
    partial_update=extend_schema(
        summary="Change some of a template's fields",
        responses={200: TemplateSerializer, 400: _INVALID, 403: _FORBIDDEN, 404: _NOT_FOUND},
        examples=[_LIQUID_ERROR_EXAMPLE, _BLOCK_ERROR_EXAMPLE],
    ),
    destroy=extend_schema(
        summary="Delete a template no campaign step uses",
        responses={
            204: None,
            403: _FORBIDDEN,
            404: _NOT_FOUND,
            409: OpenApiResponse(ErrorSerializer, description="Campaign steps still use the template."),
        },
    ),
)
@extend_schema(tags=["templates"])
class TemplateViewSet(viewsets.ModelViewSet):
    """Reusable content for one channel, in Liquid, with per-persona variants. Marketers write; others read."""

    queryset = Template.objects.select_related("brand").prefetch_related("variants__persona")
    serializer_class = TemplateSerializer
    lookup_value_regex = r"\d+"

    def get_queryset(self):
        templates = super().get_queryset()
        params = self.request.query_params
        if (brand := params.get("brand", "")).isdigit():
            templates = templates.filter(brand_id=int(brand))
        if (channel := params.get("channel")) in ContentChannel.values:
            templates = templates.filter(channel=channel)
        if search := params.get("search", "").strip():
            templates = templates.filter(name__icontains=search)
        return templates

    def _save(self, serializer: TemplateSerializer, template: Template) -> None:
        data = dict(serializer.validated_data)
        variants = data.pop("variants", None)
        for field in ("name", "brand", "channel"):
            if field in data:
                setattr(template, field, data.pop(field))
        # Content the request leaves out stays as it is (a new template's starts empty).
        current = {
            f: getattr(template, f) if template.pk else ([] if f == "blocks" else "")
            for f in CHANNEL_FIELDS[template.channel]
        }
        data = {**current, **data}
        if variants is not None:
            overrides = {item.pop("persona"): item for item in variants}
            # Personas that had a variant and are not in the new list lose it.
            for variant in template.variants.select_related("persona") if template.pk else []:
                overrides.setdefault(variant.persona, {})
            variants = overrides
        if "image" in data and data["image"] is None:
            data["image"] = False
        try:
            serializer.instance = template_save(
                template=template, content=data, variants=variants, by=self.request.user
            )
        except TemplateInvalid as exc:
            raise _invalid(exc) from None

    def perform_create(self, serializer: TemplateSerializer) -> None:
        self._save(serializer, Template())

    def perform_update(self, serializer: TemplateSerializer) -> None:
        self._save(serializer, serializer.instance)
        # The response shows the variants as saved, not a stale prefetch.
        serializer.instance = self.get_queryset().get(pk=serializer.instance.pk)

    def destroy(self, request, *args, **kwargs):
        template = self.get_object()
        try:
            template.delete()
        except ProtectedError:
            return Response(
                {"detail": f"“{template.name}” is used by campaign steps; pick another template there first."},
                status=status.HTTP_409_CONFLICT,
            )
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Rendering -------------------------------------------------------------------------------


class RenderRequestSerializer(serializers.Serializer):
    customer = serializers.IntegerField(
        required=False, help_text="Render for this customer (their persona's variant unless `persona` is given)."
    )
    context = serializers.JSONField(
        required=False,
        help_text='An ad-hoc context laid over a sample customer\'s, e.g. {"customer": {"first_name": "Ana"}}.',
    )
    persona = serializers.SlugField(required=False, help_text="Render this persona's variant (and sample customer).")

    def validate_customer(self, value: int) -> Customer:
        customer = Customer.objects.live().select_related("persona").filter(pk=value).first()
        if customer is None:
            raise serializers.ValidationError(f"No customer with id {value}.")
        return customer

    def validate_context(self, value) -> dict:
        if not isinstance(value, dict):
            raise serializers.ValidationError('Expected an object such as {"customer": {"first_name": "Ana"}}.')
        return value

    def validate_persona(self, value: str) -> Persona:
        persona = Persona.objects.filter(slug=value).first()
        if persona is None:
            raise serializers.ValidationError(f"No persona with slug “{value}”.")
        return persona


class SmsInfoSerializer(serializers.Serializer):
    encoding = serializers.CharField(help_text="GSM-7 or UCS-2.")
    characters = serializers.IntegerField()
    segments = serializers.IntegerField()
    cost = serializers.CharField(help_text='e.g. "0.0450 USD"; "" when no price is known for the country.')
    non_gsm = serializers.ListField(child=serializers.CharField(), help_text="Characters that forced UCS-2.")


class ImageSerializer(serializers.Serializer):
    url = serializers.CharField()
    alt = serializers.CharField()


class ProblemSerializer(serializers.Serializer):
    part = serializers.CharField()
    message = serializers.CharField()
    line = serializers.IntegerField(allow_null=True)
    column = serializers.IntegerField(allow_null=True)


class FindingSerializer(serializers.Serializer):
    rule = serializers.CharField(help_text="banned_phrase, required_phrase, length, link_domain, alt_text, ...")
    severity = serializers.ChoiceField(choices=["error", "warning"])
    message = serializers.CharField()
    where = serializers.CharField(help_text='The part: "subject", "body, block 2 (text)", "SMS text", ...')
    persona = serializers.CharField(allow_null=True)


class RenderedSerializer(serializers.Serializer):
    subject = serializers.CharField()
    preheader = serializers.CharField()
    html = serializers.CharField(help_text="Email: the whole message in the brand's layout.")
    text = serializers.CharField(help_text="Email: the plain-text part; otherwise the message or post text.")
    sms = SmsInfoSerializer(allow_null=True, help_text="SMS and WhatsApp: encoding, segments, cost estimate.")
    image = ImageSerializer(allow_null=True, help_text="Mastodon and Bluesky: the post's image.")
    headers = serializers.DictField(child=serializers.CharField(), help_text="e.g. List-Unsubscribe.")
    links = serializers.ListField(child=serializers.CharField(), help_text="Destinations, with UTM parameters.")
    problems = ProblemSerializer(many=True, help_text="Liquid errors met while rendering.")
    findings = FindingSerializer(many=True, help_text="Brand-check findings for this rendering.")


def rendered_data(rendered: RenderedContent, findings) -> dict:
    return {
        "channel": rendered.channel,
        "subject": rendered.subject,
        "preheader": rendered.preheader,
        "html": rendered.html,
        "text": rendered.text,
        "sms": None
        if rendered.sms is None
        else {
            "encoding": rendered.sms.encoding,
            "characters": rendered.sms.characters,
            "segments": rendered.sms.segments,
            "cost": rendered.sms.cost,
            "non_gsm": list(rendered.sms.non_gsm),
        },
        "image": {"url": rendered.image_url, "alt": rendered.image_alt} if rendered.image_url else None,
        "headers": dict(rendered.headers),
        "links": list(rendered.links),
        "problems": [
            {"part": p.part, "message": p.message, "line": p.line, "column": p.column} for p in rendered.problems
        ],
        "findings": [
            {"rule": f.rule, "severity": f.severity, "message": f.message, "where": f.where, "persona": f.persona}
            for f in findings
        ],
    }


class TemplateRenderView(APIView):
    """Render a template for a customer, a persona or an ad-hoc context, with its brand-check findings."""

    required_permission = "campaigns.view_template"

    @extend_schema(
        tags=["templates"],
        summary="Render a template, with brand-check findings",
        description=(
            "Give `customer` (an id) to render for that customer, or `context` to lay values over a sample "
            "customer's (both may be combined; `context` wins). `persona` picks that persona's variant and, "
            "without a customer, its sample customer. With neither, a generic sample customer is used."
        ),
        request=RenderRequestSerializer,
        responses={
            200: RenderedSerializer,
            400: OpenApiResponse(FieldErrorsSerializer, description="Unknown customer or persona, or a bad context."),
            403: _FORBIDDEN,
            404: _NOT_FOUND,
        },
        examples=[
            OpenApiExample("For a customer", value={"customer": 42}, request_only=True),
            OpenApiExample(
                "Ad-hoc context",
                value={"context": {"customer": {"first_name": "Ana"}}, "persona": "bargain-hunters"},
                request_only=True,
            ),
        ],
    )
    def post(self, request, pk: int):
        template = get_object_or_404(Template.objects.select_related("brand"), pk=pk)
        body = RenderRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        rendered = render_template(
            template,
            brand=template.brand,
            customer=data.get("customer"),
            persona=data.get("persona"),
            context=data.get("context"),
        )
        findings = check_content(rendered, brand=template.brand, template=template)
        return Response(rendered_data(rendered, findings))
