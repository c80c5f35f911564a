"""Customer page actions: merge a duplicate, GDPR export (download) and erasure."""

from __future__ import annotations

import json
from datetime import datetime

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.formats import date_format
from django.views.decorators.http import require_http_methods

from config.htmx import wants_fragment
from customers.identity import IDENTITY_FIELDS
from customers.models import Customer
from customers.services.merge import PROFILE_FIELDS, customers_merge
from customers.services.privacy import customer_erase, customer_export

CANDIDATES_SHOWN = 10


def _get_customer_for_user(request: HttpRequest, pk: int, *, perm: str) -> Customer:
    if not (request.user.has_perm("customers.view_customer") and request.user.has_perm(perm)):
        raise PermissionDenied
    return get_object_or_404(Customer, pk=pk)


def _parse_id(raw: str | None) -> int | None:
    raw = (raw or "").strip().lstrip("#")
    return int(raw) if raw.isdigit() else None


# --- export ------------------------------------------------------------------------


@login_required
@require_http_methods(["GET"])
def customer_export_download(request: HttpRequest, pk: int) -> HttpResponse:
    customer = _get_customer_for_user(request, pk, perm="customers.view_customer")
    data = customer_export(customer=customer)
    response = HttpResponse(
        json.dumps(data, indent=2, ensure_ascii=False, cls=DjangoJSONEncoder), content_type="application/json"
    )
    response["Content-Disposition"] = f'attachment; filename="customer-{customer.pk}.json"'
    return response


# --- merge -------------------------------------------------------------------------


def _counts(customer: Customer) -> dict[str, int]:
    # One COUNT per table: joining them all in one query would multiply the rows.
    return {
        "Activities": customer.activities.count(),
        "Messages": customer.messages.count(),
        "Consent records": customer.consents.count(),
        "Campaign enrollments": customer.enrollments.count(),
    }


def _when(at: datetime) -> str:
    """A timestamp as the customer pages show it, in the server's time zone."""
    return date_format(timezone.localtime(at), "M j, Y H:i")


def _comparison(a: Customer, b: Customer) -> list[dict]:
    """Side-by-side rows a marketer checks before merging: identities, profile, attribute keys, volumes."""

    def row(label: str, left, right) -> dict:
        return {"label": label, "a": left, "b": right, "differs": left != right}

    def label(field: str) -> str:
        return str(Customer._meta.get_field(field).verbose_name).capitalize()

    def keys(customer: Customer) -> str:
        attributes = customer.attributes if isinstance(customer.attributes, dict) else {}
        return ", ".join(sorted(attributes))

    counts_a, counts_b = _counts(a), _counts(b)
    data = [row("Attribute keys", keys(a), keys(b))]
    data += [row(name, counts_a[name], counts_b[name]) for name in counts_a]
    data.append(row("Added", _when(a.created_at), _when(b.created_at)))
    return [
        {"title": "Identity keys", "rows": [row(label(f), getattr(a, f), getattr(b, f)) for f in IDENTITY_FIELDS]},
        {"title": "Profile", "rows": [row(label(f), getattr(a, f), getattr(b, f)) for f in PROFILE_FIELDS]},
        {"title": "Data", "rows": data},
    ]


def _merge_candidates(customer: Customer, query: str) -> list[Customer]:
    if not query:
        return []
    candidates = Customer.objects.live().exclude(pk=customer.pk)
    # "#123" or "123" finds that customer; anything else searches names, emails and phones.
    if (pk := _parse_id(query)) is not None and (by_id := list(candidates.filter(pk=pk))):
        return by_id
    return list(candidates.search(query)[:CANDIDATES_SHOWN])


def _render_merge(request: HttpRequest, customer: Customer, *, other_id: int | None, errors=(), status=200):
    query = request.GET.get("q", "").strip()
    other = None
    if other_id is not None:
        other = Customer.objects.live().filter(pk=other_id).exclude(pk=customer.pk).first()
        if other is None:
            errors = [*errors, f"There is no other customer #{other_id} that can be merged."]
    context = {
        "customer": customer,
        "query": query,
        "candidates": _merge_candidates(customer, query),
        "other": other,
        "comparison": _comparison(customer, other) if other else [],
        "survivor_id": _parse_id(request.POST.get("survivor")) or customer.pk,
        "errors": list(errors),
    }
    response = render(request, "customers/merge.html", context, status=status)
    patch_vary_headers(response, ["HX-Request"])
    return response


@login_required
@require_http_methods(["GET", "POST"])
def customer_merge(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: search for the duplicate and compare both records; POST: merge them."""
    customer = _get_customer_for_user(request, pk, perm="customers.change_customer")
    if customer.erased_at is not None:
        messages.error(request, "An erased customer cannot be merged.")
        return redirect("customers:detail", pk=customer.pk)
    if request.method == "GET":
        if wants_fragment(request):
            query = request.GET.get("q", "").strip()
            context = {"customer": customer, "query": query, "candidates": _merge_candidates(customer, query)}
            response = render(request, "customers/_merge_candidates.html", context)
            patch_vary_headers(response, ["HX-Request"])
            return response
        return _render_merge(request, customer, other_id=_parse_id(request.GET.get("other")))

    other_id = _parse_id(request.POST.get("other"))
    survivor_id = _parse_id(request.POST.get("survivor"))
    if other_id is None:
        return _render_merge(
            request, customer, other_id=None, errors=["Choose the customer to merge with."], status=400
        )
    if survivor_id not in (customer.pk, other_id):
        return _render_merge(
            request, customer, other_id=other_id, errors=["Choose which of the two records to keep."], status=400
        )
    other = Customer.objects.filter(pk=other_id).first()
    if other is None:
        return _render_merge(request, customer, other_id=other_id, status=400)
    survivor, duplicate = (customer, other) if survivor_id == customer.pk else (other, customer)
    try:
        survivor = customers_merge(survivor=survivor, duplicate=duplicate, by=request.user)
    except ValidationError as exc:
        return _render_merge(request, customer, other_id=other_id, errors=exc.messages, status=400)
    messages.success(request, f"Customer #{duplicate.pk} was merged into this record (#{survivor.pk}).")
    return redirect("customers:detail", pk=survivor.pk)


# --- erase -------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def customer_erase_confirm(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: the confirmation page; POST: erase, once the customer's id has been typed."""
    customer = _get_customer_for_user(request, pk, perm="customers.add_erasure")
    if customer.erased_at is not None:
        messages.error(request, f"Customer #{customer.pk} is already erased.")
        return redirect("customers:detail", pk=customer.pk)
    errors: list[str] = []
    reason = request.POST.get("reason", "").strip()
    if request.method == "POST":
        if request.POST.get("confirm", "").strip().lstrip("#") != str(customer.pk):
            errors.append(f"Type {customer.pk}, this customer's id, to confirm the erasure.")
        else:
            try:
                erasure = customer_erase(customer=customer, by=request.user, reason=reason)
            except ValidationError as exc:
                errors += exc.messages
            else:
                messages.success(request, f"Customer #{customer.pk} was erased on {_when(erasure.erased_at)}.")
                return redirect("customers:detail", pk=customer.pk)
    context = {"customer": customer, "errors": errors, "reason": reason}
    return render(request, "customers/erase.html", context, status=400 if errors else 200)
