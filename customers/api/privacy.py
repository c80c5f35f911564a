"""API actions on one customer record: merge a duplicate in, GDPR export and erasure."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from customers.api.customers import CustomerSerializer, ErrorSerializer, FieldErrorsSerializer
from customers.models import Customer, Erasure
from customers.services.merge import customers_merge
from customers.services.privacy import customer_erase, customer_export

_NOT_FOUND = OpenApiResponse(ErrorSerializer, description="No customer with this id.")
_FORBIDDEN = OpenApiResponse(ErrorSerializer, description="Your role does not allow this.")
_UNAUTHENTICATED = OpenApiResponse(ErrorSerializer, description="No valid token or session.")


class MergeRequestSerializer(serializers.Serializer):
    duplicate = serializers.IntegerField(
        min_value=1, help_text="Id of the customer to fold into this one; it is deleted afterwards."
    )


class EraseRequestSerializer(serializers.Serializer):
    reason = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=Erasure._meta.get_field("reason").max_length,
        help_text="Why, for the audit record (for example the ticket of the person's request).",
    )


class ErasureSerializer(serializers.ModelSerializer):
    erased_by = serializers.SerializerMethodField()

    class Meta:
        model = Erasure
        fields = ["id", "customer_id", "erased_by", "erased_at", "reason", "suppressed"]

    def get_erased_by(self, obj: Erasure) -> str | None:
        return obj.erased_by.get_username() if obj.erased_by else None


class CustomerMergeView(APIView):
    """Merge another customer (the duplicate) into this one."""

    required_permission = "customers.change_customer"

    @extend_schema(
        operation_id="customers_merge",
        request=MergeRequestSerializer,
        responses={
            200: CustomerSerializer,
            400: OpenApiResponse(
                FieldErrorsSerializer, description="Unknown duplicate, the same customer, or an erased customer."
            ),
            401: _UNAUTHENTICATED,
            403: _FORBIDDEN,
            404: _NOT_FOUND,
        },
        description="Moves the duplicate's timeline, consents, messages, enrollments and static segment "
        "memberships to this customer, fills this customer's empty fields from it, records a "
        "`customer.merged` activity and deletes the duplicate. Returns the merged customer.",
    )
    def post(self, request, pk: int):
        survivor = get_object_or_404(Customer, pk=pk)
        serializer = MergeRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        duplicate_id = serializer.validated_data["duplicate"]
        duplicate = Customer.objects.filter(pk=duplicate_id).first()
        if duplicate is None:
            raise serializers.ValidationError({"duplicate": [f"There is no customer #{duplicate_id}."]})
        # A ValidationError from the service (self, erased) becomes a 400 (config.api.exception_handler).
        merged = customers_merge(survivor=survivor, duplicate=duplicate, by=request.user)
        return Response(CustomerSerializer(merged).data)


class CustomerExportView(APIView):
    """Everything Chorus holds about one person (GDPR access request)."""

    required_permission = "customers.view_customer"

    @extend_schema(
        operation_id="customers_export",
        responses={200: OpenApiTypes.OBJECT, 401: _UNAUTHENTICATED, 403: _FORBIDDEN, 404: _NOT_FOUND},
        description="Identities, profile, attributes, persona, stats, the consent ledger, every activity, every "
        "message with its provider events, enrollments, segments and erasure status, as one JSON document.",
    )
    def get(self, request, pk: int):
        customer = get_object_or_404(Customer, pk=pk)
        return Response(
            customer_export(customer=customer),
            headers={"Content-Disposition": f'attachment; filename="customer-{customer.pk}.json"'},
        )


class CustomerEraseView(APIView):
    """Erase a person's personal data everywhere (GDPR); Admins only."""

    required_permission = "customers.add_erasure"

    @extend_schema(
        operation_id="customers_erase",
        request=EraseRequestSerializer,
        responses={
            200: ErasureSerializer,
            400: OpenApiResponse(FieldErrorsSerializer, description="Already erased, or the reason is too long."),
            401: _UNAUTHENTICATED,
            403: _FORBIDDEN,
            404: _NOT_FOUND,
        },
        description="Removes personal data from every table (the customer row stays, anonymous, so reports keep "
        "their counts), puts the person's addresses on the suppression list as hashes and returns the audit "
        "record. Cannot be undone.",
    )
    def post(self, request, pk: int):
        customer = get_object_or_404(Customer, pk=pk)
        serializer = EraseRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        erasure = customer_erase(customer=customer, by=request.user, reason=serializer.validated_data.get("reason", ""))
        return Response(ErasureSerializer(erasure).data)
