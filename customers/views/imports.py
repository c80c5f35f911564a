"""CSV import pages: upload, column mapping, progress (polled by htmx), result, past imports."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_http_methods, require_POST

from customers.identity import IDENTITY_FIELDS
from customers.imports import (
    ATTRIBUTE_PREFIX,
    CONSENT_PREFIX,
    PROFILE_FIELDS,
    SKIP,
    ImportRejected,
    attribute_target,
    import_confirm,
    import_create,
    import_preview,
    mapping_validate,
)
from customers.models import Channel, ImportJob

JOBS_PER_PAGE = 20
SAMPLE_VALUES = 3
FIELD_LABELS = {
    "email": "Email",
    "phone": "Phone",
    "external_id": "External ID",
    "mastodon_handle": "Mastodon handle",
    "bluesky_handle": "Bluesky handle",
    "first_name": "First name",
    "last_name": "Last name",
    "locale": "Locale",
    "timezone": "Time zone",
    "country": "Country",
    "city": "City",
}


def _require(request: HttpRequest, permission: str) -> None:
    if not request.user.has_perm(permission):
        raise PermissionDenied


def _get_job_for_user(request: HttpRequest, pk: int, permission: str = "customers.view_importjob") -> ImportJob:
    _require(request, permission)
    return get_object_or_404(ImportJob.objects.select_related("created_by"), pk=pk)


def _target_groups(column: str, current: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """The choices of a column's select: identities, profile, consent, attributes (its own and the current one)."""
    own = attribute_target(column)
    attributes = [(own, f"Attribute “{own[len(ATTRIBUTE_PREFIX) :]}”")]
    if current.startswith(ATTRIBUTE_PREFIX) and current != own:
        attributes.insert(0, (current, f"Attribute “{current[len(ATTRIBUTE_PREFIX) :]}”"))
    return [
        ("Identity (matches customers)", [(name, FIELD_LABELS[name]) for name in IDENTITY_FIELDS]),
        ("Profile", [(name, FIELD_LABELS[name]) for name in PROFILE_FIELDS]),
        ("Consent", [(CONSENT_PREFIX + value, f"{label} consent") for value, label in Channel.choices]),
        ("Custom attribute", attributes),
    ]


def _mapping_rows(headers: list[str], preview: list[tuple[int, list[str]]], mapping: dict[str, str]) -> list[dict]:
    rows = []
    for index, column in enumerate(headers):
        if not column:
            continue
        samples = [row[index] for _, row in preview if index < len(row) and row[index].strip()][:SAMPLE_VALUES]
        current = mapping.get(column, SKIP)
        rows.append(
            {
                "column": column,
                "field_name": f"map-{index}",
                "current": current,
                "groups": _target_groups(column, current),
                "samples": samples,
            }
        )
    return rows


def _posted_mapping(request: HttpRequest, headers: list[str]) -> dict[str, str]:
    return {column: request.POST.get(f"map-{index}", SKIP) for index, column in enumerate(headers) if column}


@login_required
@require_http_methods(["GET", "POST"])
def import_list(request: HttpRequest) -> HttpResponse:
    """Past imports, and the upload form (POST: check and store the file, then go to its mapping)."""
    _require(request, "customers.view_importjob")
    error = None
    status = 200
    if request.method == "POST":
        _require(request, "customers.add_importjob")
        upload = request.FILES.get("file")
        if upload is None:
            error, status = "Choose a CSV file to upload.", 400
        else:
            try:
                job = import_create(file=upload, name=upload.name, user=request.user)
            except ImportRejected as exc:
                error, status = exc.message, 400
            else:
                return redirect("customers:import-mapping", pk=job.pk)
    jobs = Paginator(ImportJob.objects.select_related("created_by"), JOBS_PER_PAGE).get_page(request.GET.get("page"))
    context = {"page": jobs, "upload_error": error, "can_import": request.user.has_perm("customers.add_importjob")}
    return render(request, "customers/import_list.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def import_mapping(request: HttpRequest, pk: int) -> HttpResponse:
    """Review the suggested column mapping next to the file's first rows; POST confirms it and queues the import."""
    job = _get_job_for_user(request, pk, "customers.add_importjob")
    if job.status != ImportJob.Status.MAPPING:
        return redirect("customers:import-detail", pk=job.pk)
    headers, preview = import_preview(job=job)
    mapping, error, status = job.mapping, None, 200
    if request.method == "POST":
        mapping = _posted_mapping(request, headers)
        try:
            import_confirm(job=job, mapping=mapping)
        except ImportRejected as exc:
            error, status = exc.message, 400
        else:
            return redirect("customers:import-detail", pk=job.pk)
    context = {
        "job": job,
        "headers": headers,
        "preview": preview,
        "rows": _mapping_rows(headers, preview, mapping),
        "mapping_error": error,
    }
    return render(request, "customers/import_mapping.html", context, status=status)


@login_required
@require_POST
def import_mapping_check(request: HttpRequest, pk: int) -> HttpResponse:
    """htmx: whether the mapping as currently selected can be imported (shown while the user edits it)."""
    job = _get_job_for_user(request, pk, "customers.add_importjob")
    headers, _ = import_preview(job=job, rows=0)
    try:
        mapping = mapping_validate(headers=headers, mapping=_posted_mapping(request, headers))
    except ImportRejected as exc:
        return render(request, "customers/_import_mapping_check.html", {"error": exc.message})
    used = sum(1 for target in mapping.values() if target)
    context = {"used": used, "skipped": len(mapping) - used}
    return render(request, "customers/_import_mapping_check.html", context)


def _progress_context(job: ImportJob) -> dict:
    duration = ""
    if job.started_at and job.finished_at:
        seconds = max(0, round((job.finished_at - job.started_at).total_seconds()))
        duration = f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"
    return {"job": job, "duration": duration}


@login_required
def import_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """One import: progress while it runs (the progress card polls itself), then its outcome."""
    job = _get_job_for_user(request, pk)
    if job.status == ImportJob.Status.MAPPING and request.user.has_perm("customers.add_importjob"):
        return redirect("customers:import-mapping", pk=job.pk)
    return render(request, "customers/import_detail.html", {**_progress_context(job), "mapping": job.mapping.items()})


@login_required
def import_progress(request: HttpRequest, pk: int) -> HttpResponse:
    """The progress card alone (what htmx polls); it stops polling once the import has finished."""
    job = _get_job_for_user(request, pk)
    response = render(request, "customers/_import_progress.html", _progress_context(job))
    patch_vary_headers(response, ["HX-Request"])
    return response


@login_required
def import_errors(request: HttpRequest, pk: int) -> FileResponse:
    """Download the rejected rows: line number, reason, then the row as it was."""
    job = _get_job_for_user(request, pk)
    if not job.errors_file:
        raise Http404("This import has no rejected rows.")
    return FileResponse(
        job.errors_file.open("rb"),
        as_attachment=True,
        filename=job.errors_file.name.rsplit("/", 1)[-1],
        content_type="text/csv; charset=utf-8",
    )
