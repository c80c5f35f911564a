"""Segment pages: the list, the htmx rule builder, one segment's page, exports and "why in/out?".

The builder is one form. Typing or picking a value posts the form to
``builder_preview`` (live count, sample, inline errors); changing a condition's
kind, field, type or operator, or adding/removing a node, posts it to
``builder_update``, which re-renders the tree (the inputs depend on those
choices) with the preview swapped in out of band. Saving is a plain POST.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from campaigns.models import Campaign
from config.htmx import wants_fragment
from customers.exports import customers_csv_response
from customers.models import Channel, Customer, Persona
from segments import forms as builder
from segments.models import Segment
from segments.rules import DAYS_OPS, FIELDS, OPERATORS, PRESENCE_OPS, RuleError
from segments.selectors import rules_customers, segment_count, segment_customers, segment_explanation
from segments.services import (
    SegmentUploadError,
    UploadMode,
    segment_create,
    segment_delete,
    segment_members_upload,
    segment_update,
)

SAMPLE_SIZE = 20
EXPLAIN_SEARCH_RESULTS = 8
CAMPAIGN_CHOICES = 200


def _require(request: HttpRequest, *perms: str) -> None:
    if not all(request.user.has_perm(f"segments.{perm}") for perm in perms):
        raise PermissionDenied


def _get_segment_for_user(request: HttpRequest, pk: int, *perms: str) -> Segment:
    _require(request, "view_segment", *perms)
    return get_object_or_404(Segment, pk=pk)


# --- Readable rules -----------------------------------------------------------------------


def _quote(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return f"“{value}”"
    return str(value)


def _value_text(op: str, value: Any) -> str:
    if op in PRESENCE_OPS:
        return ""
    if op == "between" and isinstance(value, list) and len(value) == 2:
        return f"{_quote(value[0])} and {_quote(value[1])}"
    if op in DAYS_OPS:
        return f"{value} days"
    if isinstance(value, list):
        return ", ".join(_quote(v) for v in value)
    return _quote(value)


class _Names:
    """Display names for the personas, segments and campaigns a tree refers to (one query each)."""

    def __init__(self, tree: Any):
        refs: dict[str, set] = {"persona": set(), "segment": set(), "campaign": set()}
        self._collect(tree, refs)
        self.personas = dict(Persona.objects.filter(slug__in=refs["persona"]).values_list("slug", "name"))
        segment_ids = {i for i in refs["segment"] if isinstance(i, int)}
        campaign_ids = {i for i in refs["campaign"] if isinstance(i, int)}
        self.segments = dict(Segment.objects.filter(pk__in=segment_ids).values_list("pk", "name"))
        self.campaigns = dict(Campaign.objects.filter(pk__in=campaign_ids).values_list("pk", "name"))

    def _collect(self, node: Any, refs: dict[str, set]) -> None:
        if isinstance(node, dict):
            for key in ("persona", "segment"):
                if key in node and isinstance(node[key], str | int):
                    refs[key].add(node[key])
            if "activity" in node and isinstance(node.get("campaign"), int):
                refs["campaign"].add(node["campaign"])
            for value in node.values():
                self._collect(value, refs)
        elif isinstance(node, list):
            for value in node:
                self._collect(value, refs)


def _condition_text(node: dict, names: _Names) -> str:
    op = node.get("op", "eq")
    if "field" in node:
        spec = FIELDS.get(node["field"])
        label = spec.label if spec else node["field"]
        return " ".join(p for p in (label, OPERATORS.get(op, op), _value_text(op, node.get("value"))) if p)
    if "attribute" in node:
        parts = (f"Attribute {node['attribute']}", OPERATORS.get(op, op), _value_text(op, node.get("value")))
        return " ".join(p for p in parts if p)
    if "consent" in node:
        channel = Channel(node["consent"]).label if node["consent"] in Channel.values else node["consent"]
        return f"{channel} consent is {builder.CONSENT_STATES.get(node.get('value'), node.get('value'))}"
    if "persona" in node:
        return f"Persona is {names.personas.get(node['persona'], node['persona'])}"
    if "segment" in node:
        segment_id = node["segment"]
        return f"In segment {_quote(names.segments.get(segment_id, f'#{segment_id}'))}"
    if "activity" in node:
        parts = ["Performed" if node.get("performed", True) is not False else "Has not performed", node["activity"]]
        if node.get("channel"):
            channel = node["channel"]
            parts.append(f"on {Channel(channel).label if channel in Channel.values else channel}")
        if campaign_id := node.get("campaign"):
            parts.append(f"in campaign {_quote(names.campaigns.get(campaign_id, f'#{campaign_id}'))}")
        if (node.get("min_count") or 1) > 1:
            parts.append(f"at least {node['min_count']} times")
        parts.append(f"in the last {node['within_days']} days" if node.get("within_days") else "ever")
        return " ".join(parts)
    return json.dumps(node, ensure_ascii=False)


def readable(node: Any, names: _Names) -> dict:
    """The tree as nested {label, children} / {text} dicts, keeping "matched" when present."""
    if not isinstance(node, dict):
        return {"text": json.dumps(node), "matched": None}
    matched = node.get("matched")
    for group, label in (("all", "All of these"), ("any", "Any of these")):
        if group in node and isinstance(node[group], list):
            return {"group": group, "label": label, "matched": matched,
                    "children": [readable(child, names) for child in node[group]]}  # fmt: skip
    if "not" in node:
        return {"group": "not", "label": "Not", "matched": matched, "children": [readable(node["not"], names)]}
    return {"text": _condition_text(node, names), "matched": matched}


def _readable_rules(tree: Any) -> dict | None:
    return readable(tree, _Names(tree)) if tree else None


# --- List, detail ------------------------------------------------------------------------


@login_required
def segment_list(request: HttpRequest) -> HttpResponse:
    _require(request, "view_segment")
    # Member counts are one query per segment (each has its own rules), so the
    # page renders at once and every row fetches its count through htmx.
    segments = Segment.objects.annotate(campaign_count=Count("campaigns"))
    return render(request, "segments/list.html", {"segments": segments})


@login_required
def segment_member_count(request: HttpRequest, pk: int) -> HttpResponse:
    segment = _get_segment_for_user(request, pk)
    try:
        count, error = segment_count(segment), ""
    except RuleError as exc:
        count, error = None, str(exc)
    return render(request, "segments/_count.html", {"segment": segment, "count": count, "error": error})


def _detail_context(request: HttpRequest, segment: Segment) -> dict:
    count, sample, rule_error = None, [], ""
    try:
        members = segment_customers(segment)
        count = members.count()
        sample = list(members.order_by("-pk")[:SAMPLE_SIZE])
    except RuleError as exc:
        rule_error = str(exc)
    return {
        "segment": segment,
        "rules_json": json.dumps(segment.rules, indent=2, ensure_ascii=False),
        "readable": _readable_rules(segment.rules) if segment.kind == Segment.Kind.DYNAMIC else None,
        "count": count,
        "sample": sample,
        "rule_error": rule_error,
        "campaigns": segment.campaigns.select_related("brand"),
        "can_change": request.user.has_perm("segments.change_segment"),
        "can_delete": request.user.has_perm("segments.delete_segment"),
        "upload_modes": UploadMode.CHOICES,
    }


@login_required
def segment_detail(request: HttpRequest, pk: int) -> HttpResponse:
    segment = _get_segment_for_user(request, pk)
    return render(request, "segments/detail.html", _detail_context(request, segment))


@login_required
def segment_export(request: HttpRequest, pk: int) -> HttpResponse:
    segment = _get_segment_for_user(request, pk)
    _require_customer_view(request)
    try:
        members = segment_customers(segment)
    except RuleError as exc:
        messages.error(request, f"This segment cannot be exported: {exc}")
        return redirect("segments:detail", pk=segment.pk)
    return customers_csv_response(members, filename=f"segment-{segment.pk}-{segment.name}.csv")


def _require_customer_view(request: HttpRequest) -> None:
    if not request.user.has_perm("customers.view_customer"):
        raise PermissionDenied


@login_required
@require_POST
def segment_delete_view(request: HttpRequest, pk: int) -> HttpResponse:
    segment = _get_segment_for_user(request, pk, "delete_segment")
    try:
        segment_delete(segment=segment)
    except ValidationError as exc:
        messages.error(request, exc.messages[0])
        target = reverse("segments:detail", args=[segment.pk])
    else:
        messages.success(request, f"Segment “{segment.name}” deleted.")
        target = reverse("segments:list")
    # From htmx (the confirm dialog) the browser navigates; without it, a plain redirect.
    return HttpResponseClientRedirect(target) if request.htmx else redirect(target)


# --- Builder -----------------------------------------------------------------------------


def _builder_choices(segment_id: int | None) -> dict:
    return {
        "kinds": builder.KINDS,
        "fields": [(key, spec.label) for key, spec in FIELDS.items()],
        "value_types": builder.VALUE_TYPES,
        "attribute_keys": builder.attribute_keys(),
        "activity_kinds": builder.activity_kinds(),
        "channels": Channel.choices,
        "consent_states": builder.CONSENT_STATES,
        "personas": list(Persona.objects.order_by("name").values_list("slug", "name")),
        "segment_choices": list(Segment.objects.exclude(pk=segment_id).order_by("name").values_list("pk", "name")),
        "campaign_choices": list(Campaign.objects.order_by("-created_at").values_list("pk", "name")[:CAMPAIGN_CHOICES]),
    }


def _preview_context(result: builder.BuilderResult) -> dict:
    context: dict[str, Any] = {"result": result, "count": None, "sample": [], "tree_json": ""}
    if not result.valid:
        return context
    context["tree_json"] = json.dumps(result.tree, indent=2, ensure_ascii=False)
    try:
        members = rules_customers(result.tree)  # compiled (and its references looked up) once
        context["count"] = members.count()
        context["sample"] = list(members.order_by("-pk")[:SAMPLE_SIZE])
    except RuleError as exc:
        result.error = str(exc)
        result.tree = None
    return context


def _segment_id(request: HttpRequest) -> int | None:
    value = request.POST.get("segment", "")
    return int(value) if value.isdigit() else None


def _require_builder(request: HttpRequest) -> None:
    if not (request.user.has_perm("segments.add_segment") or request.user.has_perm("segments.change_segment")):
        raise PermissionDenied


@login_required
@require_POST
def builder_preview(request: HttpRequest) -> HttpResponse:
    """Live count, sample and inline errors for the builder's current state."""
    _require_builder(request)
    segment_id = _segment_id(request)
    result = builder.builder_rules(builder.builder_from_post(request.POST), segment_id=segment_id)
    context = {**_preview_context(result), "root": result.root, "error_slots": True}
    return render(request, "segments/_preview.html", context)


@login_required
@require_POST
def builder_update(request: HttpRequest) -> HttpResponse:
    """Apply a structural change (add/remove a node, or a new kind/field/type/operator) and re-render."""
    _require_builder(request)
    segment_id = _segment_id(request)
    choices = _builder_choices(segment_id)
    root = builder.builder_from_post(request.POST)
    builder.builder_apply(root, request.POST.get("_action", ""), request.POST.get("_target", ""))
    result = builder.builder_rules(root, segment_id=segment_id, attribute_types=dict(choices["attribute_keys"]))
    context = {
        **choices,
        **_preview_context(result),
        "root": root,
        "segment_id": segment_id,
        "oob": True,
    }
    return render(request, "segments/_builder_update.html", context)


def _edit_page(request: HttpRequest, segment: Segment | None) -> HttpResponse:
    segment_id = segment.pk if segment else None
    status, rules_error = 200, ""
    if request.method == "POST":
        form = builder.SegmentForm(request.POST, instance=segment)
        kind = segment.kind if segment else request.POST.get("kind", Segment.Kind.DYNAMIC)
        root = builder.builder_from_post(request.POST)
        result = builder.builder_rules(root, segment_id=segment_id)
        if form.is_valid() and (kind == Segment.Kind.STATIC or result.valid):
            rules = result.tree if kind == Segment.Kind.DYNAMIC else {}
            data = form.cleaned_data
            try:
                if segment is None:
                    saved = segment_create(
                        name=data["name"], description=data["description"], kind=data["kind"], rules=rules
                    )
                else:
                    saved = segment_update(
                        segment=segment,
                        name=data["name"],
                        description=data["description"],
                        rules=rules if segment.kind == Segment.Kind.DYNAMIC else None,
                    )
            except ValidationError as exc:
                for name, errors in exc.message_dict.items():
                    form.add_error(name if name in form.fields else None, errors)
            else:
                messages.success(request, f"Segment “{saved.name}” saved.")
                return redirect("segments:detail", pk=saved.pk)
        status = 400
        rules_error = result.error if kind == Segment.Kind.DYNAMIC else ""
    else:
        form = builder.SegmentForm(instance=segment)
        root = builder.builder_from_rules(segment.rules) if segment else builder.new_builder()
        result = builder.builder_rules(root, segment_id=segment_id)
        if segment is None:
            # A blank condition is not a mistake yet: no red until the marketer has typed something.
            for node in root.walk():
                node.error = ""
    context = {
        "fresh": request.method == "GET" and segment is None,
        **_builder_choices(segment_id),  # only for a page to render: a saved form redirects
        **_preview_context(result),
        "form": form,
        "segment": segment,
        "segment_id": segment_id,
        "root": root,
        "save_failed": status == 400,
        "rules_error": rules_error,
    }
    return render(request, "segments/edit.html", context, status=status)


@login_required
def segment_new(request: HttpRequest) -> HttpResponse:
    _require(request, "view_segment", "add_segment")
    return _edit_page(request, None)


@login_required
def segment_edit(request: HttpRequest, pk: int) -> HttpResponse:
    segment = _get_segment_for_user(request, pk, "change_segment")
    return _edit_page(request, segment)


# --- Static lists --------------------------------------------------------------------------


@login_required
@require_POST
def segment_upload(request: HttpRequest, pk: int) -> HttpResponse:
    """Upload a static segment's members; the report lists rows that matched nobody."""
    segment = _get_segment_for_user(request, pk, "change_segment")
    mode = request.POST.get("mode", UploadMode.APPEND)
    upload, report, error = request.FILES.get("file"), None, ""
    if upload is None:
        error = "Choose a CSV file to upload."
    else:
        try:
            report = segment_members_upload(segment=segment, file=upload, mode=mode)
        except SegmentUploadError as exc:
            error = str(exc)
    context = {**_detail_context(request, segment), "report": report, "upload_error": error}
    if wants_fragment(request):
        # htmx swaps only 2xx by default: the error is content to show, not a failure to ignore.
        response = render(request, "segments/_upload_result.html", {**context, "oob": True})
    else:
        response = render(request, "segments/detail.html", context, status=400 if error else 200)
    patch_vary_headers(response, ["HX-Request"])
    return response


# --- Why in / out ---------------------------------------------------------------------------


def _explain_context(segment: Segment, customer: Customer) -> dict:
    context: dict[str, Any] = {"segment": segment, "customer": customer, "tree": None, "error": ""}
    try:
        explanation = segment_explanation(segment=segment, customer=customer)
    except RuleError as exc:
        context.update(matched=None, error=str(exc))
        return context
    context.update(
        matched=explanation.matched,
        member=explanation.member,
        erased=explanation.erased,
        tree=_readable_rules(explanation.tree),
    )
    return context


@login_required
def segment_explain(request: HttpRequest, pk: int, customer_pk: int) -> HttpResponse:
    """Every rule node with ✓/✗ for one customer: the fragment, or a page around it."""
    segment = _get_segment_for_user(request, pk)
    _require_customer_view(request)
    customer = get_object_or_404(Customer, pk=customer_pk)
    context = _explain_context(segment, customer)
    template = "segments/_explain.html" if wants_fragment(request) else "segments/explain.html"
    response = render(request, template, context)
    patch_vary_headers(response, ["HX-Request"])
    return response


@login_required
def segment_explain_search(request: HttpRequest, pk: int) -> HttpResponse:
    """Customers matching the search box, each a button loading the explanation."""
    segment = _get_segment_for_user(request, pk)
    _require_customer_view(request)
    query = request.GET.get("q", "").strip()
    customers = list(Customer.objects.search(query)[:EXPLAIN_SEARCH_RESULTS]) if query else []
    context = {"segment": segment, "customers": customers, "query": query}
    return render(request, "segments/_explain_search.html", context)
