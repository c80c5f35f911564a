"""Persona pages: the list with member counts, one persona's page, and the create/edit form."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_POST

from customers import selectors
from customers.models import Channel, Persona
from customers.services.personas import Recompute, persona_create, persona_delete, persona_update
from segments.rules import FIELDS, RuleError, validate
from segments.selectors import rules_count

SAMPLE_SIZE = 20

OP_LABELS = {
    "eq": "is",
    "neq": "is not",
    "in": "is one of",
    "not_in": "is none of",
    "contains": "contains",
    "starts_with": "starts with",
    "gt": ">",
    "gte": "≥",
    "lt": "<",
    "lte": "≤",
    "between": "is between",
    "is_set": "is set",
    "is_not_set": "is not set",
    "within_last_days": "is within the last",
    "before_last_days": "is more than",
}
CONSENT_LABELS = {"opted_in": "opted in", "opted_out": "opted out", "unknown": "never asked"}


class PersonaForm(forms.Form):
    """Parses the form; the persona service does the validation that matters (rules, uniqueness)."""

    name = forms.CharField(max_length=100)
    slug = forms.SlugField(
        max_length=100,
        required=False,
        help_text='Used by segment rules ({"persona": "<slug>"}) and the API. Left empty: made from the name.',
    )
    priority = forms.IntegerField(
        initial=0, help_text="When a customer matches several personas, the highest priority wins."
    )
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    goals = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)
    pain_points = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)
    tone_of_voice = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    preferred_channels = forms.MultipleChoiceField(
        choices=Channel.choices, widget=forms.CheckboxSelectMultiple, required=False
    )
    rules = forms.CharField(
        widget=forms.Textarea,  # rendered by hand in the template: it checks the rules as you type
        help_text="The segment rule language as JSON, "
        'e.g. {"all": [{"field": "orders_count", "op": "gte", "value": 5}]}.',
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            if not isinstance(field.widget, forms.CheckboxSelectMultiple):
                field.widget.attrs.setdefault("class", "input")

    def clean_rules(self) -> Any:
        return _parse_rules(self.cleaned_data["rules"])


def _parse_rules(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).") from None


def _initial(persona: Persona) -> dict[str, Any]:
    return {
        "name": persona.name,
        "slug": persona.slug,
        "priority": persona.priority,
        "description": persona.description,
        "goals": persona.goals,
        "pain_points": persona.pain_points,
        "tone_of_voice": persona.tone_of_voice,
        "preferred_channels": persona.preferred_channels,
        "rules": json.dumps(persona.rules, indent=2, ensure_ascii=False),
    }


def _readable(node: Any) -> dict[str, Any]:
    """A rule tree as nested groups of short sentences, for people rather than parsers."""
    if not isinstance(node, dict) or not node:
        return {"text": json.dumps(node, ensure_ascii=False)}
    for key, label in (("all", "All of"), ("any", "Any of")):
        if isinstance(node.get(key), list):
            return {"label": label, "children": [_readable(child) for child in node[key]]}
    if "not" in node:
        return {"label": "None of", "children": [_readable(node["not"])]}
    if "consent" in node:
        value = CONSENT_LABELS.get(node.get("value"), node.get("value"))
        return {"subject": f"{node['consent']} consent", "op": "is", "value": value}
    if "persona" in node:
        return {"subject": "persona", "op": "is", "value": node["persona"]}
    if "segment" in node:
        return {"subject": "member of segment", "op": "", "value": f"#{node['segment']}"}
    if "activity" in node:
        return {"text": _activity_sentence(node)}
    if "field" in node:
        spec = FIELDS.get(node["field"])
        subject = spec.label if spec else str(node["field"])
    else:
        subject = f"attribute {node.get('attribute')}"
    op, value = node.get("op"), node.get("value")
    if op in {"is_set", "is_not_set"}:
        value = ""
    elif op == "between" and isinstance(value, list) and len(value) == 2:
        value = f"{value[0]} and {value[1]}"
    elif op == "within_last_days":
        value = f"{value} days"
    elif op == "before_last_days":
        value = f"{value} days ago"
    elif isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    return {"subject": subject, "op": OP_LABELS.get(op, op), "value": value}


def _activity_sentence(node: dict) -> str:
    performed = node.get("performed", True) is not False
    words = ["performed" if performed else "has not performed", str(node["activity"])]
    if node.get("channel"):
        words.append(f"on {node['channel']}")
    if node.get("campaign"):
        words.append(f"for campaign #{node['campaign']}")
    if node.get("min_count") not in (None, 1):
        words.append(f"at least {node['min_count']} times")
    if node.get("within_days"):
        words.append(f"in the last {node['within_days']} days")
    return " ".join(words)


def _require(request: HttpRequest, action: str) -> None:
    if not request.user.has_perm(f"customers.{action}_persona"):
        raise PermissionDenied


def _get_persona_for_user(request: HttpRequest, slug: str, action: str = "view") -> Persona:
    _require(request, action)
    persona = Persona.objects.filter(slug=slug).first()
    if persona is None:
        raise Http404("No such persona.")
    return persona


def _saved_message(request: HttpRequest, persona: Persona, recompute: Recompute) -> None:
    if recompute == Recompute.QUEUED:
        messages.info(
            request,
            f"Saved “{persona.name}”. Recomputing every customer's persona in the background… "
            "member counts update when it finishes.",
        )
    else:
        count = selectors.persona_members(persona=persona).count()
        messages.success(request, f"Saved “{persona.name}”. {count:,} customer{'s' if count != 1 else ''} in it now.")


def _add_errors(form: PersonaForm, exc: ValidationError) -> None:
    for field, errors in exc.message_dict.items():
        form.add_error(field if field in form.fields else None, errors)


@login_required
def persona_list(request: HttpRequest) -> HttpResponse:
    _require(request, "view")
    personas, total, estimated = selectors.persona_overview()
    unassigned = total - sum(p.member_count for p in personas)
    context = {
        "personas": personas,
        "total": total,
        "estimated": estimated,
        "unassigned": unassigned,
        "no_persona": selectors.NO_PERSONA,
    }
    return render(request, "customers/persona_list.html", context)


@login_required
def persona_detail(request: HttpRequest, slug: str) -> HttpResponse:
    persona = _get_persona_for_user(request, slug)
    rule_error = ""
    try:
        validate(persona.rules)
    except RuleError as exc:
        rule_error = str(exc)
    count = selectors.persona_members(persona=persona).count()
    total, estimated = selectors.customers_total()
    total = max(total, count)
    channel_labels = dict(Channel.choices)
    context = {
        "persona": persona,
        "count": count,
        "total": total,
        "estimated": estimated,
        "share": round(100 * count / total, 1) if total else 0,
        "sample": selectors.persona_member_sample(persona=persona, size=SAMPLE_SIZE),
        "preferred": [(value, channel_labels.get(value, value)) for value in persona.preferred_channels or []],
        "readable": _readable(persona.rules),
        "rules_json": json.dumps(persona.rules, indent=2, ensure_ascii=False),
        "rule_error": rule_error,
    }
    return render(request, "customers/persona_detail.html", context)


@login_required
def persona_engagement(request: HttpRequest, slug: str) -> HttpResponse:
    persona = _get_persona_for_user(request, slug)
    rows = selectors.persona_channel_engagement(persona=persona)
    response = render(request, "customers/persona_engagement.html", {"persona": persona, "rows": rows})
    patch_vary_headers(response, ["HX-Request"])
    return response


def _persona_form_page(
    request: HttpRequest, form: PersonaForm, persona: Persona | None, *, status: int = 200
) -> HttpResponse:
    return render(request, "customers/persona_form.html", {"form": form, "persona": persona}, status=status)


@login_required
def persona_new(request: HttpRequest) -> HttpResponse:
    _require(request, "add")
    if request.method != "POST":
        starter = {"all": [{"field": "country", "op": "eq", "value": "PL"}]}
        return _persona_form_page(request, PersonaForm(initial={"rules": json.dumps(starter, indent=2)}), None)
    form = PersonaForm(request.POST)
    if form.is_valid():
        try:
            persona, recompute = persona_create(data=form.cleaned_data)
        except ValidationError as exc:
            _add_errors(form, exc)
        else:
            _saved_message(request, persona, recompute)
            return redirect("customers:persona-detail", slug=persona.slug)
    return _persona_form_page(request, form, None, status=400)


@login_required
def persona_edit(request: HttpRequest, slug: str) -> HttpResponse:
    persona = _get_persona_for_user(request, slug, "change")
    if request.method != "POST":
        return _persona_form_page(request, PersonaForm(initial=_initial(persona)), persona)
    form = PersonaForm(request.POST)
    if form.is_valid():
        try:
            persona, recompute = persona_update(persona=persona, data=form.cleaned_data)
        except ValidationError as exc:
            _add_errors(form, exc)
        else:
            _saved_message(request, persona, recompute)
            return redirect("customers:persona-detail", slug=persona.slug)
    persona.refresh_from_db()  # the page header shows what is saved, not what was typed
    return _persona_form_page(request, form, persona, status=400)


@login_required
@require_POST
def persona_remove(request: HttpRequest, slug: str) -> HttpResponse:
    persona = _get_persona_for_user(request, slug, "delete")
    name = persona.name
    recompute = persona_delete(persona=persona)
    suffix = " Recomputing personas in the background…" if recompute == Recompute.QUEUED else ""
    messages.success(request, f"Deleted “{name}”. Its customers moved to their next matching persona.{suffix}")
    return redirect("customers:persona-list")


@login_required
@require_POST
def persona_rules_check(request: HttpRequest) -> HttpResponse:
    """Inline validation of the rules textarea: the error with its path, or how many match."""
    if not (request.user.has_perm("customers.add_persona") or request.user.has_perm("customers.change_persona")):
        raise PermissionDenied
    error, count = "", None
    try:
        tree = _parse_rules(request.POST.get("rules", ""))
        validate(tree, for_persona=True)
        count = rules_count(tree)
    except ValidationError as exc:
        error = exc.messages[0]
    except RuleError as exc:
        error = f"{exc.path}: {exc.reason}"
    return render(request, "customers/persona_rules_check.html", {"error": error, "count": count})
