"""Personalised content for one step and one customer.

Content is Liquid: marketers reach only the plain-data context built here,
never Python objects, settings or files. Compiled templates are cached.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from django.utils.html import escape, linebreaks
from liquid import Environment, Template
from liquid.exceptions import LiquidError

_env = Environment()


class ContentError(ValueError):
    """Content that cannot be rendered; the message names the part and problem."""


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


@lru_cache(maxsize=512)
def _compile(source: str) -> Template:
    return _env.from_string(source)


def check_liquid(source: str, part: str) -> None:
    try:
        _compile(source)
    except LiquidError as exc:
        raise ContentError(f"{part}: {exc}") from None


def customer_context(customer, campaign=None) -> dict:
    profile = {
        "first_name": customer.first_name,
        "last_name": customer.last_name,
        "full_name": customer.full_name,
        "email": customer.email or "",
        "phone": customer.phone or "",
        "city": customer.city,
        "country": customer.country,
        "attributes": dict(customer.attributes or {}),
    }
    context = {**profile, "customer": profile}
    if campaign is not None:
        context["campaign"] = {"name": campaign.name}
        context["brand"] = {"name": campaign.brand.name}
    return context


def _render(source: str, context: dict, part: str) -> str:
    try:
        return _compile(source).render(**context)
    except LiquidError as exc:
        raise ContentError(f"{part}: {exc}") from None


def email_html(brand, body_text: str) -> str:
    """The brand's email layout: logo band in its colour, body, legal footer."""
    return (
        '<!doctype html><html><body style="margin:0;background:#f4f5f7;">'
        '<table role="presentation" width="100%" cellpadding="0" cellspacing="0"><tr><td align="center">'
        '<table role="presentation" width="600" cellpadding="0" cellspacing="0" '
        'style="max-width:600px;width:100%;background:#ffffff;font-family:Helvetica,Arial,sans-serif;">'
        f'<tr><td style="background:{brand.primary_colour};color:#ffffff;padding:20px 24px;font-size:20px;'
        f'font-weight:bold;">{escape(brand.name)}</td></tr>'
        f'<tr><td style="padding:24px;color:{brand.secondary_colour};font-size:16px;line-height:1.5;">'
        f"{linebreaks(body_text, autoescape=True)}</td></tr>"
        f'<tr><td style="padding:16px 24px;color:#6b7280;font-size:12px;border-top:1px solid #e5e7eb;">'
        f"{escape(brand.legal_footer)}</td></tr>"
        "</table></td></tr></table></body></html>"
    )


def render_step(step, customer) -> Rendered:
    campaign = step.campaign
    context = customer_context(customer, campaign)
    subject = _render(step.subject, context, "subject").strip() if step.subject else ""
    text = _render(step.body, context, "body")
    html = email_html(campaign.brand, text) if step.channel == "email" else ""
    if step.channel == "email":
        text = f"{text}\n\n--\n{campaign.brand.legal_footer}"
    return Rendered(subject=subject, text=text, html=html)
