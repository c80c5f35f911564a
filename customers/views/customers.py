"""Customer pages: the searchable list and the single customer record."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils.cache import patch_vary_headers

from customers.models import Activity, Channel, Customer
from customers.querysets import consent_status_subquery

CUSTOMERS_PER_PAGE = 50
ACTIVITIES_PER_PAGE = 25
CONSENT_HISTORY_ROWS = 50
KEY_PROPERTIES = 4

# Badge colour per activity kind; custom kinds from the API stay neutral.
KIND_TONES = {
    Activity.Kind.MESSAGE_SENT: "info",
    Activity.Kind.MESSAGE_DELIVERED: "success",
    Activity.Kind.MESSAGE_OPENED: "primary",
    Activity.Kind.MESSAGE_CLICKED: "primary",
    Activity.Kind.MESSAGE_BOUNCED: "danger",
    Activity.Kind.MESSAGE_FAILED: "danger",
    Activity.Kind.MESSAGE_COMPLAINED: "danger",
    Activity.Kind.MESSAGE_UNSUBSCRIBED: "warning",
    Activity.Kind.MESSAGE_SKIPPED: "warning",
    Activity.Kind.MESSAGE_REPLIED: "teal",
    Activity.Kind.CONSENT_CHANGED: "warning",
    Activity.Kind.PURCHASE: "success",
}


def _wants_fragment(request: HttpRequest) -> bool:
    # A history restore after a cache miss needs the whole page back.
    return bool(request.htmx) and not request.htmx.history_restore_request


def _display(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, str | int | float | bool):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def _attribute_rows(attributes: Any) -> list[tuple[str, str]]:
    if not isinstance(attributes, dict):
        return [("value", _display(attributes))] if attributes else []
    return [(key, _display(value)) for key, value in sorted(attributes.items())]


def _get_customer_for_user(request: HttpRequest, pk: int) -> Customer:
    if not request.user.has_perm("customers.view_customer"):
        raise PermissionDenied
    return get_object_or_404(Customer, pk=pk)


@login_required
def customer_list(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("customers.view_customer"):
        raise PermissionDenied
    query = request.GET.get("q", "").strip()
    customers = Customer.objects.search(query).annotate(
        email_consent=consent_status_subquery(Channel.EMAIL),
        sms_consent=consent_status_subquery(Channel.SMS),
    )
    page = Paginator(customers, CUSTOMERS_PER_PAGE).get_page(request.GET.get("page"))
    template = "customers/_results.html" if _wants_fragment(request) else "customers/list.html"
    response = render(request, template, {"page": page, "query": query})
    patch_vary_headers(response, ["HX-Request"])
    return response


@login_required
def customer_detail(request: HttpRequest, pk: int) -> HttpResponse:
    customer = _get_customer_for_user(request, pk)
    channel = request.GET.get("channel", "")
    channel = channel if channel in Channel.values else ""
    kind = request.GET.get("kind", "").strip()

    activities = customer.activities.select_related("campaign")
    if channel:
        activities = activities.filter(channel=channel)
    if kind:
        activities = activities.filter(kind=kind)
    timeline = Paginator(activities, ACTIVITIES_PER_PAGE).get_page(request.GET.get("page"))
    for activity in timeline:
        activity.tone = KIND_TONES.get(activity.kind, "neutral")
        properties = activity.properties if isinstance(activity.properties, dict) else {"value": activity.properties}
        activity.key_properties = [(k, _display(v)) for k, v in list(properties.items())[:KEY_PROPERTIES]]
    timeline_context = {"customer": customer, "timeline": timeline, "channel": channel, "kind": kind}

    if _wants_fragment(request):
        response = render(request, "customers/_timeline.html", timeline_context)
        patch_vary_headers(response, ["HX-Request"])
        return response

    # The ledger is append-only: the current state per channel is its latest row.
    current_consent = [
        {"channel": value, "label": label, "row": customer.consents.filter(channel=value).first()}
        for value, label in Channel.choices
    ]
    context = {
        **timeline_context,
        "attributes": _attribute_rows(customer.attributes),
        "current_consent": current_consent,
        "consent_history": customer.consents.all()[:CONSENT_HISTORY_ROWS],
        "consent_total": customer.consents.count(),
        "channels": Channel.choices,
        "kinds": customer.activities.order_by("kind").values_list("kind", flat=True).distinct(),
        "activity_total": customer.activities.count(),
    }
    response = render(request, "customers/detail.html", context)
    patch_vary_headers(response, ["HX-Request"])
    return response
