from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.response import Response

from customers.models import Channel, Consent, Customer
from customers.services.customers import customer_create


class CustomerSerializer(serializers.ModelSerializer):
    consents = serializers.DictField(
        child=serializers.ChoiceField(choices=Consent.Status.choices),
        write_only=True,
        required=False,
        help_text='Initial consent per channel, e.g. {"email": "opted_in"}.',
    )

    class Meta:
        model = Customer
        fields = [
            "id", "email", "phone", "external_id", "first_name", "last_name", "locale",
            "timezone", "country", "city", "attributes", "consents", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = ["id", "created_at", "updated_at"]

    def validate_consents(self, value: dict) -> dict:
        unknown = sorted(set(value) - set(Channel.values))
        if unknown:
            raise serializers.ValidationError(f"Unknown channel(s): {', '.join(unknown)}.")
        return value

    def validate_attributes(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError("Attributes must be a JSON object.")
        return value


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(required=False)


class CustomerViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """The unified customer record."""

    queryset = Customer.objects.all()
    serializer_class = CustomerSerializer

    def get_queryset(self):
        queryset = super().get_queryset()
        for key in ("email", "phone", "external_id"):
            if value := self.request.query_params.get(key):
                queryset = queryset.filter(**{key: value.lower() if key == "email" else value})
        return queryset

    @extend_schema(responses={201: CustomerSerializer, 400: ErrorSerializer})
    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        consents = data.pop("consents", {})
        # A model ValidationError becomes a 400 naming the field (config.api.exception_handler).
        customer = customer_create(data=data, consents=consents, source=Consent.Source.API)
        return Response(self.get_serializer(customer).data, status=status.HTTP_201_CREATED)
