"""The pages recipients reach from a message, without logging in.

``/l/<code>`` and ``/l/<code>/<token>``: short links (count the click, redirect);
``/u/<token>``: unsubscribe (also RFC 8058 one-click POST); ``/p/<token>``:
preferences per channel; ``/m/<token>``: the email in the browser.

Every token is signed (``campaigns.content.links``): a changed or made-up one
gets a page saying the link is not valid, never an error. A click with a bad
signature still redirects (the person wants the page) but records nothing.
"""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from campaigns.content.links import (
    PREVIEW_TOKEN,
    BadToken,
    read_click_token,
    read_preferences_token,
    read_unsubscribe_token,
    read_view_token,
)
from campaigns.content.render import render_template
from campaigns.models import CONSENT_CHANNEL, Brand, ShortLink
from channels.models import Message
from channels.services import message_advance
from customers.models import Activity, Channel, Consent, Customer
from customers.services.activities import activity_record
from customers.services.consent import consent_current, consent_record

ONE_CLICK_BODY = "List-Unsubscribe=One-Click"


def _page(request: HttpRequest, template: str, context: dict, status: int = 200) -> HttpResponse:
    brand = context.get("brand") or Brand.objects.order_by("pk").first()
    response = render(request, template, {**context, "brand": brand}, status=status)
    response["X-Robots-Tag"] = "noindex, nofollow"
    response["Referrer-Policy"] = "no-referrer"
    return response


def _invalid(request: HttpRequest, status: int = 400, brand: Brand | None = None) -> HttpResponse:
    return _page(request, "public/invalid.html", {"brand": brand}, status=status)


def _preview(request: HttpRequest) -> HttpResponse:
    return _page(request, "public/preview.html", {})


def _evidence(request: HttpRequest, **extra) -> dict:
    return {
        "ip": request.META.get("REMOTE_ADDR", ""),
        "user_agent": request.headers.get("User-Agent", "")[:300],
        **extra,
    }


# --- short links ---------------------------------------------------------------------------


@transaction.atomic
def _click_record(*, message: Message, link: ShortLink) -> None:
    """The click lands on the message (status clicked, never backwards) and on the customer's timeline."""
    now = timezone.now()
    message_advance(message=message, status=Message.Status.CLICKED, at=now)
    activity_record(
        customer=message.customer,
        kind=Activity.Kind.MESSAGE_CLICKED,
        channel=CONSENT_CHANNEL.get(message.channel, message.channel),
        campaign_id=message.step.campaign_id,
        message=message,
        occurred_at=now,
        properties={"url": link.url, "short_link": link.code},
    )


@require_http_methods(["GET", "HEAD"])
def short_link(request: HttpRequest, code: str, token: str = "") -> HttpResponse:
    link = ShortLink.objects.filter(code=code).first()
    if link is None:
        return _invalid(request, status=404)
    # Link previews (HEAD, unfurlers) are not clicks.
    if token and request.method == "GET":
        try:
            message_id = read_click_token(code, token)
        except BadToken:
            message_id = None
        message = (
            Message.objects.select_related("customer", "step").filter(pk=message_id).first() if message_id else None
        )
        if (
            message is not None
            and (link.step_id is None or link.step_id == message.step_id)
            and message.customer.erased_at is None
        ):
            _click_record(message=message, link=link)
    response = HttpResponseRedirect(link.url)
    response["Referrer-Policy"] = "no-referrer"
    response["Cache-Control"] = "no-store"
    return response


# --- unsubscribe and preferences -----------------------------------------------------------


def _live_customer(customer_id: int) -> Customer | None:
    return Customer.objects.live().filter(pk=customer_id).first()


def _message_brand(message_id: int | None) -> tuple[Message | None, Brand | None]:
    if message_id is None:
        return None, None
    message = Message.objects.select_related("step__campaign__brand").filter(pk=message_id).first()
    return message, (message.step.campaign.brand if message else None)


@transaction.atomic
def _unsubscribe(*, customer: Customer, channel: str, message: Message | None, evidence: dict) -> bool:
    """Record the opt-out (once); returns whether it changed anything."""
    if consent_current(customer=customer, channel=channel) == Consent.Status.OPTED_OUT:
        return False
    consent_record(
        customer=customer,
        channel=channel,
        status=Consent.Status.OPTED_OUT,
        source=Consent.Source.ONE_CLICK,
        evidence=evidence,
    )
    if message is not None:
        activity_record(
            customer=customer,
            kind=Activity.Kind.MESSAGE_UNSUBSCRIBED,
            channel=channel,
            campaign_id=message.step.campaign_id,
            message=message,
            properties={"source": "link"},
        )
    return True


@csrf_exempt  # RFC 8058: mail clients POST "List-Unsubscribe=One-Click" with no session; the token is the proof.
@require_http_methods(["GET", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    if token == PREVIEW_TOKEN:
        return _preview(request)
    try:
        customer_id, channel, message_id = read_unsubscribe_token(token)
    except BadToken:
        return _invalid(request)
    if channel not in Channel.values:
        return _invalid(request)
    message, brand = _message_brand(message_id)
    customer = _live_customer(customer_id)
    if customer is None:
        return _invalid(request, status=404, brand=brand)
    context = {"brand": brand, "channel": Channel(channel).label, "token": token}
    if request.method == "GET":
        already = consent_current(customer=customer, channel=channel) == Consent.Status.OPTED_OUT
        return _page(request, "public/unsubscribe.html", {**context, "done": already})
    one_click = request.body.decode(errors="replace").strip() == ONE_CLICK_BODY
    _unsubscribe(
        customer=customer,
        channel=channel,
        message=message,
        evidence=_evidence(request, message=message_id, method="one_click" if one_click else "page"),
    )
    return _page(request, "public/unsubscribe.html", {**context, "done": True})


def _reachable_channels(customer: Customer) -> list[tuple[str, str]]:
    return [(value, label) for value, label in Channel.choices if customer.address_for(value)]


@require_http_methods(["GET", "POST"])
def preferences(request: HttpRequest, token: str) -> HttpResponse:
    if token == PREVIEW_TOKEN:
        return _preview(request)
    try:
        customer = _live_customer(read_preferences_token(token))
    except BadToken:
        return _invalid(request)
    if customer is None:
        return _invalid(request, status=404)
    channels = _reachable_channels(customer)
    saved = False
    if request.method == "POST":
        wanted = set(request.POST.getlist("channels"))
        _preferences_save(customer=customer, channels=channels, wanted=wanted, evidence=_evidence(request))
        saved = True
    rows = [
        {
            "value": value,
            "label": label,
            "checked": consent_current(customer=customer, channel=value) == Consent.Status.OPTED_IN,
        }
        for value, label in channels
    ]
    return _page(request, "public/preferences.html", {"rows": rows, "saved": saved, "customer": customer})


@transaction.atomic
def _preferences_save(*, customer: Customer, channels: list[tuple[str, str]], wanted: set[str], evidence: dict):
    """Opt in where ticked and not yet in; opt out where unticked and currently in. Nothing else changes."""
    for value, _label in channels:
        current = consent_current(customer=customer, channel=value)
        if value in wanted and current != Consent.Status.OPTED_IN:
            status = Consent.Status.OPTED_IN
        elif value not in wanted and current == Consent.Status.OPTED_IN:
            status = Consent.Status.OPTED_OUT
        else:
            continue
        consent_record(
            customer=customer,
            channel=value,
            status=status,
            source=Consent.Source.FORM,
            evidence={**evidence, "form": "preferences"},
        )


# --- view in browser -----------------------------------------------------------------------


@require_http_methods(["GET", "HEAD"])
def view_in_browser(request: HttpRequest, token: str) -> HttpResponse:
    if token == PREVIEW_TOKEN:
        return _preview(request)
    try:
        message_id = read_view_token(token)
    except BadToken:
        return _invalid(request)
    message = (
        Message.objects.select_related("customer__persona", "step__template", "step__campaign__brand")
        .filter(pk=message_id)
        .first()
    )
    if message is None or message.customer.erased_at is not None:
        return _invalid(request, status=404)
    rendered = render_template(message.step.template, message=message)
    if rendered.html:
        response = HttpResponse(rendered.html)
    else:
        response = _page(request, "public/message.html", {"brand": message.step.campaign.brand, "text": rendered.text})
    response["X-Robots-Tag"] = "noindex, nofollow"
    response["Referrer-Policy"] = "no-referrer"
    return response
