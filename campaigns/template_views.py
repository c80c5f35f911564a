"""Template pages: the list, a new template, the editor with live brand checks, previews and test sends.

The editor is one form. Typing posts the unsaved form to ``template_checks``
(400 ms after the last keystroke), which renders the content for a sample
customer and each persona and answers with the brand-check findings (and the
SMS meter) without saving anything. Adding, moving or removing an email block
posts the form to ``template_blocks``, which re-renders that block list. Saving
is a plain POST that writes everything or nothing (``template_services``).

The preview page shows what a template (or every step of a campaign) looks
like on each channel, for a persona or a real customer, with a test send.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count
from django.db.models.functions import Lower
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_POST

from campaigns.content.blocks import BLOCK_TYPES
from campaigns.content.checks import LIQUID_ERROR, Finding, check_content, check_template, length_and_limit
from campaigns.content.render import RenderedContent, render_template
from campaigns.models import Brand, Campaign, ContentChannel, Template, TemplateVariant
from campaigns.template_services import (
    CHANNEL_FIELDS,
    IMAGE_CHANNELS,
    Problem,
    TemplateInvalid,
    block_label,
    field_label,
    template_problems,
    template_save,
)
from channels.test_sends import TestSendError, recipients_parse, seed_recipients, test_send
from config.htmx import wants_fragment
from customers.models import Customer, Persona

TEMPLATES_PER_PAGE = 50
CUSTOMER_SEARCH_RESULTS = 8
DEFAULT_PREFIX = "b"

# What the editor calls each block field, and which are multi-line.
BLOCK_FIELD_LABELS = {
    ("heading", "text"): "Heading",
    ("text", "text"): "Text",
    ("image", "src"): "Image address",
    ("image", "alt"): "Alt text",
    ("image", "href"): "Link (optional)",
    ("button", "text"): "Button label",
    ("button", "url"): "Link",
    ("offer", "title"): "Title",
    ("offer", "text"): "Text",
    ("offer", "code"): "Code (optional)",
    ("offer", "url"): "Link (optional)",
    ("offer", "image"): "Image address (optional)",
    ("html", "html"): "HTML",
}
MULTILINE_BLOCK_FIELDS = {("text", "text"), ("offer", "text"), ("html", "html")}
BLOCK_TYPE_LABELS = {
    "heading": "Heading",
    "text": "Text",
    "image": "Image",
    "button": "Button",
    "divider": "Divider",
    "offer": "Offer",
    "html": "Raw HTML",
}
STARTER_BLOCKS = [
    {"type": "heading", "text": "A headline for {{ customer.first_name | default: 'you' }}"},
    {"type": "text", "text": "Say what the offer is and why it matters."},
    {"type": "button", "text": "Shop now", "url": "https://example.com/"},
]


# --- Access --------------------------------------------------------------------------------


def _require(request: HttpRequest, action: str) -> None:
    if not request.user.has_perm(f"campaigns.{action}_template"):
        raise PermissionDenied


def _get_template_for_user(request: HttpRequest, pk: int, action: str = "view") -> Template:
    _require(request, action)
    return get_object_or_404(Template.objects.select_related("brand"), pk=pk)


# --- The editor's state --------------------------------------------------------------------


@dataclass
class EditorState:
    """What the editor form holds: saved, or as typed and not saved yet."""

    name: str
    content: dict
    variants: dict[Persona, dict] = field(default_factory=dict)  # persona -> {field: value or None}


def _variant_prefix(persona: Persona) -> str:
    return f"v{persona.pk}"


def _blocks_prefix(persona: Persona | None) -> str:
    return DEFAULT_PREFIX if persona is None else f"{_variant_prefix(persona)}b"


def _clean_text(value: str) -> str:
    return value.replace("\r\n", "\n").replace("\r", "\n")


def _parse_blocks(data: QueryDict, prefix: str) -> list[dict]:
    """The blocks posted as ``<prefix>-<i>-<field>``, in order of ``i``; optional fields left empty are dropped."""
    pattern = re.compile(rf"^{re.escape(prefix)}-(\d+)-type$")
    indices = sorted(int(m[1]) for key in data if (m := pattern.match(key)))
    blocks = []
    for index in indices:
        kind = data.get(f"{prefix}-{index}-type", "")
        block = {"type": kind}
        required, optional = BLOCK_TYPES.get(kind, ((), ()))
        for name in (*required, *optional):
            value = _clean_text(data.get(f"{prefix}-{index}-{name}", ""))
            if value.strip() or name in required:
                block[name] = value
        blocks.append(block)
    return blocks


def _state_from_template(template: Template, personas: list[Persona]) -> EditorState:
    content = {name: getattr(template, name) for name in CHANNEL_FIELDS[template.channel]}
    saved = {v.persona_id: v for v in template.variants.all()}
    variants = {}
    for persona in personas:
        variant = saved.get(persona.pk)
        variants[persona] = {name: getattr(variant, name) if variant else None for name in content}
    return EditorState(name=template.name, content=content, variants=variants)


def _state_from_post(template: Template, personas: list[Persona], data: QueryDict) -> EditorState:
    used = CHANNEL_FIELDS[template.channel]
    content = {}
    for name in used:
        content[name] = _parse_blocks(data, DEFAULT_PREFIX) if name == "blocks" else _clean_text(data.get(name, ""))
    variants = {}
    for persona in personas:
        prefix = _variant_prefix(persona)
        fields = {}
        for name in used:
            if name == "blocks":
                overriding = data.get(f"{prefix}-blocks-override") == "1"
                fields[name] = _parse_blocks(data, _blocks_prefix(persona)) if overriding else None
            else:
                value = _clean_text(data.get(f"{prefix}-{name}", ""))
                fields[name] = value if value.strip() else None  # blank: inherit the default
        variants[persona] = fields
    return EditorState(name=data.get("name", "").strip(), content=content, variants=variants)


def _draft(template: Template, state: EditorState) -> Template:
    """An unsaved copy of ``template`` holding ``state``, with its variants in memory (nothing is written)."""
    draft = Template(
        pk=template.pk,
        name=state.name or template.name,
        brand=template.brand,
        channel=template.channel,
        image=template.image,
        **state.content,
    )
    draft._prefetched_objects_cache = {
        "variants": [
            TemplateVariant(template=draft, persona=persona, **fields)
            for persona, fields in state.variants.items()
            if any(value is not None for value in fields.values())
        ]
    }
    return draft


def _personas() -> list[Persona]:
    return list(Persona.objects.order_by("-priority", "name"))


# --- Building the editor's context -------------------------------------------------------------


def _block_rows(blocks: list[dict], problems: list[Problem]) -> list[dict]:
    rows = []
    for index, block in enumerate(blocks):
        kind = block.get("type", "")
        required, optional = BLOCK_TYPES.get(kind, ((), ()))
        rows.append(
            {
                "index": index,
                "type": kind,
                "type_label": BLOCK_TYPE_LABELS.get(kind, kind),
                "label": block_label(index, block),
                "fields": [
                    {
                        "name": name,
                        "label": BLOCK_FIELD_LABELS.get((kind, name), name.title()),
                        "value": block.get(name, ""),
                        "multiline": (kind, name) in MULTILINE_BLOCK_FIELDS,
                        "mono": kind == "html",
                        "required": name in required,
                        "errors": [p.message for p in problems if p.block == index and p.block_field == name],
                    }
                    for name in (*required, *optional)
                ],
                "errors": [p.message for p in problems if p.block == index and p.block_field in ("", "type")],
                "first": index == 0,
                "last": index == len(blocks) - 1,
            }
        )
    return rows


def _blocks_context(
    template: Template, persona: Persona | None, blocks: list[dict] | None, problems: list[Problem], *, editable: bool
) -> dict:
    slug = persona.slug if persona else ""
    mine = [p for p in problems if p.persona == slug and p.field == "blocks"]
    return {
        "template": template,
        "persona": persona,
        "prefix": _blocks_prefix(persona),
        "variant_prefix": _variant_prefix(persona) if persona else "",
        "overriding": blocks is not None,
        "rows": _block_rows(blocks or [], mine),
        "general_errors": [p.message for p in mine if p.block is None],
        "block_types": list(BLOCK_TYPE_LABELS.items()),
        "editable": editable,
    }


def _field_errors(problems: list[Problem], persona: Persona | None) -> dict[str, list[str]]:
    slug = persona.slug if persona else ""
    errors: dict[str, list[str]] = {}
    for problem in problems:
        if problem.persona == slug and problem.field != "blocks":
            errors.setdefault(problem.field, []).append(problem.message)
    return errors


def _panel(template: Template, persona: Persona | None, values: dict, problems: list[Problem], *, editable: bool):
    """One tab of the editor: the default content, or a persona's overrides."""
    errors = _field_errors(problems, persona)
    prefix = f"{_variant_prefix(persona)}-" if persona else ""
    fields = []
    for name in CHANNEL_FIELDS[template.channel]:
        if name == "blocks":
            continue
        fields.append(
            {
                "name": name,
                "input_name": f"{prefix}{name}",
                "id": f"id_{prefix}{name}".replace("-", "_"),
                "label": field_label(template.channel, name),
                "value": values.get(name) or "",
                "default": getattr(template, name) if persona else "",
                "multiline": name == "body",
                "errors": errors.get(name, []),
            }
        )
    return {
        "persona": persona,
        "key": persona.slug if persona else "default",
        "fields": fields,
        "blocks": _blocks_context(template, persona, values.get("blocks"), problems, editable=editable)
        if "blocks" in values
        else None,
        "overrides": persona is not None and any(value is not None for value in values.values()),
        "has_errors": any(p.persona == (persona.slug if persona else "") for p in problems),
    }


@dataclass
class Meter:
    """The length of the default content for a sample customer: SMS segments and cost, or characters."""

    label: str
    over: bool
    details: list[str] = field(default_factory=list)


def _meter(template: Template, rendered: RenderedContent) -> Meter | None:
    measured = length_and_limit(rendered, template.brand)
    if measured is None:
        return None
    size, limit = measured
    channel = template.channel
    if channel == ContentChannel.SMS:
        sms = rendered.sms
        per_segment = (
            (70 if sms.encoding == "UCS-2" else 160) if sms.segments <= 1 else (67 if sms.encoding == "UCS-2" else 153)
        )
        details = [f"{sms.encoding}", f"{per_segment} characters per segment"]
        if sms.non_gsm:
            details.append("UCS-2 because of " + " ".join(f"“{c}”" for c in sms.non_gsm[:5]))
        cost = f" · ≈ {sms.cost} per message" if sms.cost else " · no price known for the country"
        return Meter(
            label=f"{sms.characters} characters · {sms.segments} segment{'s' if sms.segments != 1 else ''}{cost}",
            over=size > limit,
            details=details,
        )
    label = f"{'Subject: ' if channel == ContentChannel.EMAIL else ''}{size} / {limit} characters"
    return Meter(label, size > limit, ["a link counts 23"] if channel == ContentChannel.MASTODON else [])


def _checks_context(template: Template, state: EditorState) -> dict:
    """Brand checks of the (possibly unsaved) content; problems that stop it being saved come first."""
    draft = _draft(template, state)
    problems = template_problems(template, state.content, state.variants)
    findings = check_template(draft, brand=template.brand)
    if problems:
        # A syntax error is already listed as a problem with its line and column.
        findings = [f for f in findings if f.rule != LIQUID_ERROR]
    rendered = render_template(draft, brand=template.brand)
    return {
        "template": template,
        "problems": problems,
        "findings": findings,
        "errors": sum(f.severity == "error" for f in findings),
        "warnings": sum(f.severity == "warning" for f in findings),
        "meter": _meter(template, rendered),
    }


def _editor_context(
    request: HttpRequest, template: Template, state: EditorState, personas: list[Persona], problems: list[Problem]
) -> dict:
    editable = request.user.has_perm("campaigns.change_template")
    panels = [_panel(template, None, state.content, problems, editable=editable)]
    panels += [_panel(template, p, state.variants.get(p, {}), problems, editable=editable) for p in personas]
    return {
        "template": template,
        "brand": template.brand,
        "name": state.name,
        "panels": panels,
        "save_problems": problems,
        "editable": editable,
        "image_channel": template.channel in IMAGE_CHANNELS,
        "steps": template.steps.select_related("campaign").order_by("campaign__name", "position")[:20],
        **_checks_context(template, state),
    }


# --- Views: list and create ---------------------------------------------------------------


@login_required
def template_list(request: HttpRequest) -> HttpResponse:
    _require(request, "view")
    query = request.GET.get("q", "").strip()
    brand = request.GET.get("brand", "")
    channel = request.GET.get("channel", "")
    templates = Template.objects.select_related("brand").annotate(
        step_count=Count("steps", distinct=True), variant_count=Count("variants", distinct=True)
    )
    if query:
        templates = templates.filter(name__icontains=query)
    if brand.isdigit():
        templates = templates.filter(brand_id=int(brand))
    if channel in ContentChannel.values:
        templates = templates.filter(channel=channel)
    page = Paginator(templates.order_by(Lower("name"), "pk"), TEMPLATES_PER_PAGE).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "query": query,
        "brand": brand,
        "channel": channel,
        "brands": Brand.objects.order_by("name"),
        "channels": ContentChannel.choices,
        "filtered": bool(query or brand or channel),
    }
    template_name = "campaigns/templates/_results.html" if wants_fragment(request) else "campaigns/templates/list.html"
    response = render(request, template_name, context)
    patch_vary_headers(response, ["HX-Request"])
    return response


class TemplateCreateForm(forms.Form):
    name = forms.CharField(max_length=200, widget=forms.TextInput(attrs={"class": "input", "autofocus": True}))
    brand = forms.ModelChoiceField(
        queryset=Brand.objects.order_by("name"), widget=forms.Select(attrs={"class": "select"})
    )
    channel = forms.ChoiceField(choices=ContentChannel.choices, widget=forms.RadioSelect)


def _starter_content(channel: str, brand: Brand) -> dict:
    """Something to start from, so the editor opens with content the checks can look at."""
    if channel == ContentChannel.EMAIL:
        return {"subject": "News from {{ brand.name }}", "preheader": "", "blocks": [dict(b) for b in STARTER_BLOCKS]}
    required = " ".join(brand.required_phrases_for(channel))
    body = "Hi {{ customer.first_name | default: 'there' }}! " + required
    return {"body": body.strip(), **({"image_alt": ""} if channel in IMAGE_CHANNELS else {})}


@login_required
def template_new(request: HttpRequest) -> HttpResponse:
    _require(request, "add")
    brands = list(Brand.objects.order_by("name")[:2])
    initial = {
        "channel": request.GET.get("channel") or ContentChannel.EMAIL,
        "brand": brands[0] if len(brands) == 1 else None,
    }
    form = TemplateCreateForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        template = Template(name=data["name"], brand=data["brand"], channel=data["channel"])
        try:
            template = template_save(
                template=template, content=_starter_content(data["channel"], data["brand"]), by=request.user
            )
        except TemplateInvalid as exc:
            form.add_error(None, [p.message for p in exc.problems])
        else:
            messages.success(request, f"Created “{template.name}”. Write its content below.")
            return redirect("templates:edit", pk=template.pk)
    status = 400 if request.method == "POST" else 200
    return render(request, "campaigns/templates/new.html", {"form": form}, status=status)


# --- Views: the editor ----------------------------------------------------------------------


@login_required
def template_edit(request: HttpRequest, pk: int) -> HttpResponse:
    template = _get_template_for_user(request, pk)
    personas = _personas()
    if request.method != "POST":
        state = _state_from_template(template, personas)
        return render(request, "campaigns/templates/edit.html", _editor_context(request, template, state, personas, []))
    _require(request, "change")
    state = _state_from_post(template, personas, request.POST)
    problems: list[Problem] = []
    name_limit = Template._meta.get_field("name").max_length
    if not state.name:
        problems.append(Problem("name", "Name: give the template a name."))
    elif len(state.name) > name_limit:
        problems.append(Problem("name", f"Name: at most {name_limit} characters; this is {len(state.name)}."))
    content = dict(state.content)
    if template.channel in IMAGE_CHANNELS:
        if request.FILES.get("image"):
            content["image"] = request.FILES["image"]
        elif request.POST.get("image_clear"):
            content["image"] = False
    if not problems:
        template.name = state.name
        try:
            # Every persona is listed: a tab left blank removes that persona's variant.
            template = template_save(template=template, content=content, variants=state.variants, by=request.user)
        except TemplateInvalid as exc:
            problems = exc.problems
    if problems:
        template.refresh_from_db()  # the header shows what is saved, not what was typed
        context = _editor_context(request, template, state, personas, problems)
        context["name"] = state.name
        return render(request, "campaigns/templates/edit.html", context, status=400)
    messages.success(request, f"Saved “{template.name}”.")
    return redirect("templates:edit", pk=template.pk)


@login_required
@require_POST
def template_checks(request: HttpRequest, pk: int) -> HttpResponse:
    """The brand checks of the editor's unsaved content; nothing is saved."""
    template = _get_template_for_user(request, pk)
    state = _state_from_post(template, _personas(), request.POST)
    return render(request, "campaigns/templates/_checks.html", {**_checks_context(template, state), "oob": True})


BLOCK_OPS = ("add", "up", "down", "remove", "override", "inherit")


@login_required
@require_POST
def template_blocks(request: HttpRequest, pk: int) -> HttpResponse:
    """Add, move or remove a block (or start/stop a persona's own blocks); answers with that block list."""
    template = _get_template_for_user(request, pk, "change")
    if template.channel != ContentChannel.EMAIL:
        return HttpResponse("Only email templates have blocks.", status=400)
    op = request.POST.get("op", "")
    persona = None
    if slug := request.POST.get("persona", ""):
        persona = get_object_or_404(Persona, slug=slug)
    if op not in BLOCK_OPS or (op in ("override", "inherit") and persona is None):
        return HttpResponse(f"Unknown block operation {op!r}.", status=400)
    overriding = persona is None or request.POST.get(f"{_variant_prefix(persona)}-blocks-override") == "1"
    blocks = _parse_blocks(request.POST, _blocks_prefix(persona)) if overriding else None
    try:
        index = int(request.POST.get("index", ""))
    except ValueError:
        index = -1
    if op == "add":
        kind = request.POST.get("type", "")
        if kind not in BLOCK_TYPES:
            return HttpResponse(f"Unknown block type {kind!r}.", status=400)
        blocks = [*(blocks or []), {"type": kind}]
    elif op == "override":
        blocks = _parse_blocks(request.POST, DEFAULT_PREFIX)
    elif op == "inherit":
        blocks = None
    elif blocks is not None and 0 <= index < len(blocks):
        if op == "remove":
            del blocks[index]
        elif op == "up" and index > 0:
            blocks[index - 1], blocks[index] = blocks[index], blocks[index - 1]
        elif op == "down" and index < len(blocks) - 1:
            blocks[index + 1], blocks[index] = blocks[index], blocks[index + 1]
    context = _blocks_context(template, persona, blocks, [], editable=True)
    response = render(request, "campaigns/templates/_blocks.html", context)
    response["HX-Trigger-After-Settle"] = "blocks-changed"
    return response


# --- Views: previews and test sends -------------------------------------------------------------


@dataclass
class PreviewItem:
    """One rendering on the preview page: a template, or a campaign's step."""

    template: Template
    rendered: RenderedContent
    findings: list[Finding]
    title: str
    subtitle: str = ""
    seeds: list[str] = field(default_factory=list)


def _preview_target(request: HttpRequest) -> tuple[Persona | None, Customer | None, str]:
    """The persona and customer the preview renders for (from ?persona= and ?customer=), and any problem."""
    persona = customer = None
    problem = ""
    if slug := request.GET.get("persona", ""):
        persona = Persona.objects.filter(slug=slug).first()
        if persona is None:
            problem = f"There is no persona “{slug}”; showing the default content."
    raw = request.GET.get("customer", "")
    if raw:
        customer = (
            Customer.objects.live().select_related("persona").filter(pk=int(raw)).first() if raw.isdigit() else None
        )
        if customer is None:
            problem = "That customer does not exist (or was erased); showing a sample customer."
    return persona, customer, problem


def _preview_item(
    template: Template, *, brand: Brand, campaign: Campaign | None, persona, customer, title, subtitle=""
):
    rendered = render_template(template, brand=brand, campaign=campaign, customer=customer, persona=persona)
    findings = check_content(rendered, brand=brand, template=template)
    return PreviewItem(template, rendered, findings, title, subtitle, seed_recipients(template, brand=brand))


def _preview_page(request: HttpRequest, context: dict) -> HttpResponse:
    persona, customer = context["persona"], context["customer"]
    context.update(
        {
            "personas": _personas(),
            "can_send": request.user.has_perm("campaigns.change_template"),
            "sandbox": settings.CHORUS_SANDBOX,
            "test_channels": list(settings.CHORUS_ADAPTERS),
            "effective_persona": persona or (customer.persona if customer else None),
        }
    )
    name = "campaigns/templates/_preview_board.html" if wants_fragment(request) else "campaigns/templates/preview.html"
    response = render(request, name, context)
    patch_vary_headers(response, ["HX-Request"])
    return response


@login_required
def template_preview(request: HttpRequest, pk: int) -> HttpResponse:
    template = _get_template_for_user(request, pk)
    persona, customer, problem = _preview_target(request)
    item = _preview_item(
        template,
        brand=template.brand,
        campaign=None,
        persona=persona,
        customer=customer,
        title=template.get_channel_display(),
        subtitle=template.name,
    )
    context = {
        "template": template,
        "campaign": None,
        "items": [item],
        "persona": persona,
        "customer": customer,
        "target_problem": problem,
        "here": reverse("templates:preview", args=[template.pk]),
    }
    return _preview_page(request, context)


@login_required
def campaign_preview(request: HttpRequest, pk: int) -> HttpResponse:
    """Every step of a campaign side by side, in the campaign's brand."""
    if not request.user.has_perm("campaigns.view_campaign"):
        raise PermissionDenied
    _require(request, "view")
    campaign = get_object_or_404(Campaign.objects.select_related("brand"), pk=pk)
    persona, customer, problem = _preview_target(request)
    items = [
        _preview_item(
            step.template,
            brand=campaign.brand,
            campaign=campaign,
            persona=persona,
            customer=customer,
            title=f"Step {step.position + 1} · {step.get_channel_display()}",
            subtitle=step.template.name,
        )
        for step in campaign.steps.select_related("template__brand").prefetch_related("template__variants")
    ]
    context = {
        "template": None,
        "campaign": campaign,
        "items": items,
        "persona": persona,
        "customer": customer,
        "target_problem": problem,
        "here": reverse("campaigns:preview", args=[campaign.pk]),
    }
    return _preview_page(request, context)


@login_required
def preview_customers(request: HttpRequest) -> HttpResponse:
    """Customers matching the preview's search box, as links that re-render the preview for them."""
    if not request.user.has_perm("customers.view_customer"):
        raise PermissionDenied
    term = request.GET.get("q", "").strip()
    results = []
    if term:
        results = list(
            Customer.objects.live().search(term).select_related("persona").order_by("pk")[:CUSTOMER_SEARCH_RESULTS]
        )
    context = {"term": term, "results": results, "here": request.GET.get("here", "")}
    return render(request, "campaigns/templates/_customer_results.html", context)


@login_required
@require_POST
def template_test_send(request: HttpRequest, pk: int) -> HttpResponse:
    """Send the template, rendered as previewed, to the typed recipients or the brand's seed list."""
    template = _get_template_for_user(request, pk, "change")
    persona = customer = None
    if slug := request.POST.get("persona", ""):
        persona = Persona.objects.filter(slug=slug).first()
    if (raw := request.POST.get("customer", "")).isdigit():
        customer = Customer.objects.live().select_related("persona").filter(pk=int(raw)).first()
    campaign = None
    if (raw := request.POST.get("campaign", "")).isdigit():
        # Rendered as that campaign's step (its name and brand), if the template is one of its steps.
        campaign = Campaign.objects.filter(pk=int(raw), steps__template=template).select_related("brand").first()
    error, results = "", []
    typed = request.POST.get("recipients", "").strip()
    try:
        recipients = recipients_parse(template.channel, typed) if typed else []
        results = test_send(
            template=template,
            recipients=recipients,
            by=request.user,
            persona=persona,
            customer=customer,
            campaign=campaign,
        )
    except TestSendError as exc:
        error = str(exc)
    except forms.ValidationError as exc:
        error = exc.messages[0]
    context = {
        "template": template,
        "error": error,
        "results": results,
        "sent": sum(r.ok for r in results),
        "sandbox": settings.CHORUS_SANDBOX,
    }
    return render(request, "campaigns/templates/_test_send_result.html", context, status=200)
