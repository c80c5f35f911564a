"""CSV import over the API: upload a file (202 with the job), follow its progress, fetch its errors CSV."""

from __future__ import annotations

import json

from django.core.files.uploadedfile import TemporaryUploadedFile
from django.http import FileResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import BaseParser, DataAndFiles, FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from customers.api.customers import ErrorSerializer
from customers.imports import ImportRejected, import_create
from customers.models import ImportJob

_FORBIDDEN = OpenApiResponse(ErrorSerializer, description="Your role does not allow this.")
_UNAUTHENTICATED = OpenApiResponse(ErrorSerializer, description="No valid token or session.")
_NOT_FOUND = OpenApiResponse(ErrorSerializer, description="No import with this id.")
_COPY_BLOCK = 1 << 20


class CsvBodyParser(BaseParser):
    """A ``text/csv`` request body, streamed to a temporary file and handed on as ``file``."""

    media_type = "text/csv"

    def parse(self, stream, media_type=None, parser_context=None) -> DataAndFiles:
        request = (parser_context or {}).get("request")
        name = (request.query_params.get("name") if request is not None else None) or "upload.csv"
        upload = TemporaryUploadedFile(name=name, content_type="text/csv", size=0, charset=None)
        size = 0
        if stream is not None:
            while block := stream.read(_COPY_BLOCK):
                upload.write(block)
                size += len(block)
        upload.size = size
        upload.seek(0)
        return DataAndFiles({}, {"file": upload})


class ImportJobSerializer(serializers.ModelSerializer):
    progress = serializers.SerializerMethodField(help_text="Processed rows as a percentage of the file's rows.")
    errors_url = serializers.SerializerMethodField(help_text="Where the rejected rows CSV is, once there is one.")

    class Meta:
        model = ImportJob
        fields = [
            "id", "status", "original_name", "mapping", "total_rows", "processed_rows", "progress",
            "created_count", "updated_count", "rejected_count", "error", "errors_url",
            "created_at", "started_at", "finished_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_progress(self, job: ImportJob) -> float:
        if job.status == ImportJob.Status.DONE:
            return 100.0
        return round(100 * job.processed_rows / job.total_rows, 1) if job.total_rows else 0.0

    def get_errors_url(self, job: ImportJob) -> str | None:
        if not job.errors_file:
            return None
        path = reverse("customer-import-errors", args=[job.pk])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path


class ImportUploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="The CSV: UTF-8, first line naming the columns.")
    mapping = serializers.CharField(
        required=False,
        help_text='JSON object of column name to target, e.g. {"E-mail": "email", "Tier": "attributes.tier", '
        '"Newsletter": "consent.email", "Notes": ""}. Columns left out keep the suggested mapping.',
    )


class FileErrorsSerializer(serializers.Serializer):
    """400: what is wrong with the upload, under ``file`` or ``mapping``."""

    file = serializers.ListField(child=serializers.CharField(), required=False)
    mapping = serializers.ListField(child=serializers.CharField(), required=False)


def _mapping_from(raw: str | None) -> dict | None:
    if raw in (None, ""):
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise serializers.ValidationError({"mapping": [f"Not valid JSON: {exc.msg} (position {exc.pos})."]}) from None
    if not isinstance(value, dict):
        raise serializers.ValidationError({"mapping": ['Must be a JSON object, e.g. {"E-mail": "email"}.']})
    return value


class ImportCollectionView(APIView):
    """Start a CSV import, or list the recent ones."""

    queryset = ImportJob.objects.all()  # POST needs customers.add_importjob, GET customers.view_importjob
    parser_classes = [MultiPartParser, FormParser, CsvBodyParser]

    @extend_schema(
        operation_id="customers_import_create",
        request={"multipart/form-data": ImportUploadSerializer, "text/csv": OpenApiTypes.BINARY},
        parameters=[
            OpenApiParameter(
                "mapping", str, description="With a text/csv body: the mapping as JSON (see the multipart field)."
            ),
            OpenApiParameter("name", str, description="With a text/csv body: the file name to show."),
        ],
        responses={
            202: ImportJobSerializer,
            400: OpenApiResponse(
                FileErrorsSerializer,
                description="Not a usable CSV (binary, not UTF-8, no header row, bad quoting, no rows) or a bad "
                "mapping (unknown column or target, a target used twice, no identity column). Nothing was stored.",
            ),
            401: _UNAUTHENTICATED,
            403: _FORBIDDEN,
            415: OpenApiResponse(ErrorSerializer, description="Send multipart/form-data or text/csv."),
        },
        description="Checks the whole file, stores it and queues the import; returns 202 with the job to poll at "
        "`/api/v1/customers/import/{id}`. Rows are matched to customers by any identity (email, phone, external "
        "id, social handles) and update them, or create new ones; bad rows are skipped and listed with their line "
        "numbers in the errors CSV.",
    )
    def post(self, request):
        upload = request.data.get("file")
        if upload is None or isinstance(upload, str):
            raise serializers.ValidationError(
                {"file": ["Send the CSV as a multipart field named file, or as a text/csv request body."]}
            )
        raw_mapping = request.data.get("mapping")
        if raw_mapping is None:
            raw_mapping = request.query_params.get("mapping")
        mapping = _mapping_from(raw_mapping)
        try:
            # Columns the mapping leaves out keep the suggested target.
            job = import_create(
                file=upload, name=upload.name or "upload.csv", user=request.user, mapping=mapping, start=True
            )
        except ImportRejected as exc:
            raise serializers.ValidationError({exc.field: [exc.message]}) from None
        return Response(ImportJobSerializer(job, context={"request": request}).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        operation_id="customers_import_list",
        parameters=[
            OpenApiParameter("limit", int, description="Page size (default 50)."),
            OpenApiParameter("offset", int, description="Where the page starts."),
        ],
        responses={200: ImportJobSerializer(many=True), 401: _UNAUTHENTICATED, 403: _FORBIDDEN},
        description="Recent imports, newest first (paginated: count, next, previous, results).",
    )
    def get(self, request):
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(ImportJob.objects.order_by("-created_at", "-id"), request, view=self)
        return paginator.get_paginated_response(ImportJobSerializer(page, many=True, context={"request": request}).data)


class ImportDetailView(APIView):
    """One import: its status, progress and counts."""

    queryset = ImportJob.objects.all()

    @extend_schema(
        operation_id="customers_import_retrieve",
        responses={200: ImportJobSerializer, 401: _UNAUTHENTICATED, 403: _FORBIDDEN, 404: _NOT_FOUND},
        description="Poll this while the import runs: `status` goes queued -> running -> done (or failed, with "
        "`error`), `processed_rows` counts up to `total_rows`.",
    )
    def get(self, request, pk: int):
        job = get_object_or_404(ImportJob, pk=pk)
        return Response(ImportJobSerializer(job, context={"request": request}).data)


class ImportErrorsView(APIView):
    """The rejected rows of one import as CSV."""

    queryset = ImportJob.objects.all()

    @extend_schema(
        operation_id="customers_import_errors",
        responses={
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.BINARY,
                description="CSV: `line` (where the row starts in the file, the header being line 1), `reason`, "
                "then the row's original columns.",
            ),
            401: _UNAUTHENTICATED,
            403: _FORBIDDEN,
            404: OpenApiResponse(ErrorSerializer, description="No such import, or it rejected no rows (yet)."),
        },
    )
    def get(self, request, pk: int):
        job = get_object_or_404(ImportJob, pk=pk)
        if not job.errors_file:
            return Response({"detail": "This import has no rejected rows (yet)."}, status=status.HTTP_404_NOT_FOUND)
        return FileResponse(
            job.errors_file.open("rb"),
            as_attachment=True,
            filename=job.errors_file.name.rsplit("/", 1)[-1],
            content_type="text/csv; charset=utf-8",
        )
