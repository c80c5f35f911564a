"""The template context: what a Liquid template can read, built from plain data only.

Templates see four objects (documented for writers in ``docs/templates.md``)::

    customer  first_name, last_name, full_name, email, phone, city, country,
              locale, attributes.<any key>, persona.name, persona.slug
    brand     name, legal_footer, logo_url, primary_colour, font_stack, ...
    campaign  name, slug, goal
    links     unsubscribe, preferences, view_in_browser

Every value is a ``str``, number, bool, ``None``, list or dict: never a model
instance, so a template cannot reach a method, a related object or a setting.
``CONTEXT_SCHEMA`` lists the known paths; the unknown-variable check flags any
other path a template reads (a typo would otherwise render as nothing).
"""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings
from django.utils.text import slugify

from campaigns.content.liquid import VariableUse
from campaigns.models import Brand, Campaign
from customers.models import Customer, Persona

ANY = "*"

# path -> the keys below it; None marks a leaf; ANY allows any key (the customer's own attributes).
CONTEXT_SCHEMA: dict[str, object] = {
    "customer": {
        "first_name": None,
        "last_name": None,
        "full_name": None,
        "email": None,
        "phone": None,
        "city": None,
        "country": None,
        "locale": None,
        "attributes": ANY,
        "persona": {"name": None, "slug": None},
    },
    "brand": {
        "name": None,
        "legal_footer": None,
        "legal_company_name": None,
        "postal_address": None,
        "logo_url": None,
        "primary_colour": None,
        "secondary_colour": None,
        "text_colour": None,
        "background_colour": None,
        "font_stack": None,
        "email_from_name": None,
        "email_reply_to": None,
    },
    "campaign": {"name": None, "slug": None, "goal": None},
    "links": {"unsubscribe": None, "preferences": None, "view_in_browser": None},
}

# Liquid's own properties of any value: a list's or string's size, a list's first and last.
_PROPERTIES = frozenset({"size", "first", "last"})

# Used when no customer of the persona exists yet (previews, brand checks).
SAMPLE_CUSTOMER = {
    "first_name": "Alex",
    "last_name": "Sample",
    "email": "alex.sample@example.com",
    "phone": "+15005550006",
    "city": "Kraków",
    "country": "PL",
    "locale": "en-GB",
    "attributes": {"tier": "silver"},
}


def _public(path: str) -> str:
    return f"{settings.CHORUS_PUBLIC_URL}{path}"


def absolute_media_url(file) -> str:
    """The public URL of an uploaded file (logo, post image), or "" if there is none."""
    if not file:
        return ""
    url = file.url
    return url if url.startswith(("http://", "https://")) else _public(url if url.startswith("/") else f"/{url}")


def customer_data(customer: Customer | None, persona: Persona | None = None) -> dict:
    """``customer`` as the template sees it; ``persona`` when known (saves a query)."""
    if customer is None:
        return {
            "first_name": "",
            "last_name": "",
            "full_name": "",
            "email": "",
            "phone": "",
            "city": "",
            "country": "",
            "locale": "",
            "attributes": {},
            "persona": _persona_data(persona),
        }
    if persona is None and customer.persona_id:
        persona = customer.persona
    return {
        "first_name": customer.first_name,
        "last_name": customer.last_name,
        "full_name": customer.full_name,
        "email": customer.email or "",
        "phone": customer.phone or "",
        "city": customer.city,
        "country": customer.country,
        "locale": customer.locale,
        # JSON from the database: plain data already; copied so a render cannot change the customer.
        "attributes": dict(customer.attributes or {}),
        "persona": _persona_data(persona),
    }


def _persona_data(persona: Persona | None) -> dict:
    return {"name": persona.name, "slug": persona.slug} if persona else {"name": "", "slug": ""}


def brand_data(brand: Brand) -> dict:
    return {
        "name": brand.name,
        "legal_footer": brand.legal_footer,
        "legal_company_name": brand.legal_company_name,
        "postal_address": brand.postal_address,
        "logo_url": absolute_media_url(brand.logo),
        "primary_colour": brand.primary_colour,
        "secondary_colour": brand.secondary_colour,
        "text_colour": brand.text_colour,
        "background_colour": brand.background_colour,
        "font_stack": brand.font_stack,
        "email_from_name": brand.email_from_name,
        "email_reply_to": brand.email_reply_to,
    }


def campaign_data(campaign: Campaign | None) -> dict:
    if campaign is None:
        return {"name": "", "slug": "", "goal": ""}
    return {"name": campaign.name, "slug": slugify(campaign.name), "goal": campaign.goal}


def template_context(
    *,
    brand: Brand,
    campaign: Campaign | None = None,
    customer: Customer | None = None,
    persona: Persona | None = None,
    links: dict[str, str] | None = None,
) -> dict:
    """The context a template renders with: plain dicts, strings and numbers only.

    ``links`` are the recipient's unsubscribe, preferences and view-in-browser
    URLs (``campaigns.content.links.recipient_links``); missing ones are "".
    """
    return {
        "customer": customer_data(customer, persona),
        "brand": brand_data(brand),
        "campaign": campaign_data(campaign),
        "links": {
            "unsubscribe": "",
            "preferences": "",
            "view_in_browser": "",
            **(links or {}),
        },
    }


def merge_context(base: dict, override: dict) -> dict:
    """``base`` with ``override`` laid over it, dict by dict (the API's ad-hoc context)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_context(merged[key], value)
        else:
            merged[key] = value
    return merged


def is_known(segments: Iterable[object]) -> bool:
    """Whether a variable path (its segments) is part of ``CONTEXT_SCHEMA``."""
    node: object = CONTEXT_SCHEMA
    for segment in segments:
        if node == ANY:
            return True  # customer.attributes.anything...
        if isinstance(node, dict) and isinstance(segment, str) and segment in node:
            node = node[segment]
        else:
            # ``.size`` of a known value; ``[some.other.path]`` is checked on its own.
            return segment in _PROPERTIES or isinstance(segment, tuple)
    return True


def unknown_variables(uses: Iterable[VariableUse]) -> list[VariableUse]:
    """The uses whose path the context does not have (e.g. ``customer.frist_name``, ``settings.SECRET_KEY``).

    A path used inside brackets (``customer.attributes[campaign.slug]``) is a use of its own.
    """
    return [use for use in uses if not is_known(use.segments or tuple(use.path.split(".")))]


def sample_customer(persona: Persona | None = None) -> Customer:
    """A customer to preview content with: a real one of ``persona`` if any, else a made-up (unsaved) one."""
    if persona is not None:
        real = Customer.objects.live().filter(persona=persona).exclude(first_name="").order_by("pk").first()
        if real is not None:
            real.persona = persona
            return real
    return Customer(**SAMPLE_CUSTOMER, persona=persona)
