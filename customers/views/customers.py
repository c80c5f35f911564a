"""Customer pages: the searchable list and the single customer record."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.cache import patch_vary_headers
from django.utils.http import urlencode
from django_htmx.http import push_url

from config.htmx import wants_fragment
from customers import selectors
from customers.models import Activity, Channel, Customer
from segments.models import Segment
from segments.selectors import customer_segments

CUSTOMERS_PER_PAGE = 50
ACTIVITIES_PER_PAGE = 25
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
    customer = selectors.customer_get(pk=pk)
    if customer is None:
        raise Http404("No such customer.")
    return customer


def _persona_filter(request: HttpRequest, personas: list) -> str:
    value = request.GET.get("persona", "").strip()
    if value == selectors.NO_PERSONA or value in {str(p.pk) for p in personas}:
        return value
    return ""  # an unknown persona filters nothing rather than failing the page


@dataclass
class _ListPage:
    """One page of the customer list, found without counting the whole result.

    Counting a million rows (or an ILIKE search over them) takes far longer than
    the page itself, so the list fetches one row more than it shows to know whether
    there is a next page, and the total arrives separately (``customer_count``).
    """

    rows: list[Customer]
    number: int
    has_next: bool
    count: int | None  # known without a COUNT when everything fits on the first page

    @property
    def has_previous(self) -> bool:
        return self.number > 1


def _page_number(raw: str | None) -> int:
    try:
        return min(max(int(raw or 1), 1), 100_000)
    except ValueError:
        return 1


def _list_filters(request: HttpRequest) -> dict[str, Any]:
    query = request.GET.get("q", "").strip()
    personas = selectors.persona_choices()
    persona = _persona_filter(request, personas)
    return {
        "query": query,
        "persona": persona,
        "personas": personas,
        "persona_name": next((p.name for p in personas if str(p.pk) == persona), ""),
        "no_persona": selectors.NO_PERSONA,
    }


@login_required
def customer_list(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("customers.view_customer"):
        raise PermissionDenied
    filters = _list_filters(request)
    customers = selectors.customer_search(query=filters["query"], persona=filters["persona"])
    number = _page_number(request.GET.get("page"))
    start = (number - 1) * CUSTOMERS_PER_PAGE
    rows = list(customers[start : start + CUSTOMERS_PER_PAGE + 1])
    has_next = len(rows) > CUSTOMERS_PER_PAGE
    rows = rows[:CUSTOMERS_PER_PAGE]
    known = len(rows) if number == 1 and not has_next else None
    page = _ListPage(rows=rows, number=number, has_next=has_next, count=known)
    template = "customers/_results.html" if wants_fragment(request) else "customers/list.html"
    response = render(request, template, {"page": page, **filters})
    if request.htmx:
        # The address bar gets only the filters in use (no "?q=&persona=").
        params = {"q": filters["query"], "persona": filters["persona"], "page": number if number > 1 else ""}
        query_string = urlencode({key: value for key, value in params.items() if value})
        push_url(response, f"{request.path}?{query_string}" if query_string else request.path)
    patch_vary_headers(response, ["HX-Request"])
    return response


@login_required
def customer_count(request: HttpRequest) -> HttpResponse:
    """The list's footer: how many customers match the search and persona filter (loaded after the list)."""
    if not request.user.has_perm("customers.view_customer"):
        raise PermissionDenied
    filters = _list_filters(request)
    if filters["query"] or filters["persona"]:
        count, estimated = selectors.customer_search(query=filters["query"], persona=filters["persona"]).count(), False
    else:
        count, estimated = selectors.customers_total()
    return render(request, "customers/_result_count.html", {"count": count, "estimated": estimated, **filters})


def _timeline_context(request: HttpRequest, customer: Customer) -> dict[str, Any]:
    channel = request.GET.get("channel", "")
    channel = channel if channel in Channel.values else ""
    kind = request.GET.get("kind", "").strip()[:64]
    activities = selectors.customer_timeline(customer=customer, channel=channel, kind=kind)
    timeline = Paginator(activities, ACTIVITIES_PER_PAGE).get_page(request.GET.get("page"))
    for activity in timeline:
        activity.tone = KIND_TONES.get(activity.kind, "neutral")
        properties = activity.properties if isinstance(activity.properties, dict) else {"value": activity.properties}
        activity.key_properties = [(k, _display(v)) for k, v in list(properties.items())[:KEY_PROPERTIES]]
    return {"customer": customer, "timeline": timeline, "channel": channel, "kind": kind}


@login_required
def customer_detail(request: HttpRequest, pk: int) -> HttpResponse:
    customer = _get_customer_for_user(request, pk)
    timeline_context = _timeline_context(request, customer)
    if wants_fragment(request):
        response = render(request, "customers/_timeline.html", timeline_context)
        patch_vary_headers(response, ["HX-Request"])
        return response

    summary = selectors.customer_activity_summary(customer=customer)
    all_segments = list(Segment.objects.order_by("name", "pk"))
    context = {
        **timeline_context,
        "attributes": _attribute_rows(customer.attributes),
        "consent": selectors.customer_consents(customer=customer),
        "engagement": summary.engagement,
        "channels": Channel.choices,
        "kinds": summary.kinds,
        "activity_total": summary.total,
        "segments": customer_segments(customer, segments=all_segments),
        "all_segments": all_segments,
        "last_engaged": [(label, customer.last_engaged_at(value)) for value, label in Channel.choices],
    }
    response = render(request, "customers/detail.html", context)
    patch_vary_headers(response, ["HX-Request"])
    return response
