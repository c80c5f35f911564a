"""``render_template``: one template, for one channel, rendered for a customer (or a persona sample).

Previews, the editor's brand checks, test sends and real sends all come through
here, so what a marketer sees is what a customer gets.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from campaigns.content.blocks import BlockRenderer, BlockStyle
from campaigns.content.context import (
    absolute_media_url,
    merge_context,
    sample_customer,
    template_context,
    unknown_variables,
)
from campaigns.content.email import email_headers, email_html, email_text
from campaigns.content.links import Linker, recipient_links
from campaigns.content.liquid import ContentError, VariableUse, render_source, variables
from campaigns.content.sms import SmsInfo, sms_info
from campaigns.models import CONSENT_CHANNEL, Brand, Campaign, ContentChannel, Template

# What a shared email carries in place of the recipient's own links (``recipient_tags``):
# plain words that HTML escaping and URL handling leave as they are.
RECIPIENT_TAGS = {
    "unsubscribe": "-chorus_unsubscribe_url-",
    "preferences": "-chorus_preferences_url-",
    "view_in_browser": "-chorus_view_url-",
}
# Liquid that reads these differs per recipient: such a template is rendered whole for each one.
_PERSONAL_ROOTS = frozenset({"customer", "links"})


@dataclass(frozen=True)
class RenderedContent:
    """A template rendered for one recipient (or a sample one) on one channel.

    ``text`` is the email's plain-text part, or the SMS/WhatsApp body, or the
    post text. ``problems`` are the Liquid errors met while rendering (each
    part renders on its own, so one broken part does not hide the others);
    ``unknown_variables`` the paths the template reads that the context does
    not document. A send refuses content with problems; previews show them.
    ``substitutions`` (only with ``recipient_tags``) map the tags in ``subject``,
    ``html`` and ``text`` to this recipient's values; ``personal()`` applies them.
    """

    channel: str
    subject: str = ""
    preheader: str = ""
    html: str = ""
    text: str = ""
    image_url: str = ""
    image_alt: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    substitutions: dict[str, str] = field(default_factory=dict)  # tag -> this recipient's value
    links: tuple[str, ...] = ()  # the destination URLs (UTM added, before shortening)
    sms: SmsInfo | None = None
    problems: tuple[ContentError, ...] = ()
    unknown_variables: tuple[VariableUse, ...] = ()

    def raise_for_problems(self) -> None:
        if self.problems:
            raise self.problems[0]

    def personal(self) -> RenderedContent:
        """The content exactly as this recipient gets it: every substitution tag replaced by its value."""
        if not self.substitutions:
            return self
        return replace(
            self,
            subject=substitute(self.subject, self.substitutions),
            html=substitute(self.html, self.substitutions),
            text=substitute(self.text, self.substitutions),
            substitutions={},
        )


def substitute(text: str, substitutions: dict[str, str]) -> str:
    """``text`` with each tag replaced by its value, as the email provider does per recipient."""
    for tag, value in substitutions.items():
        text = text.replace(tag, value)
    return text


def content_fields(template: Template, persona=None) -> dict:
    """The template's content fields with ``persona``'s variant laid over them (NULL in the variant = inherit).

    Reads ``template.variants.all()``, so a caller rendering many customers can
    ``prefetch_related`` the variants and pay no query per render.
    """
    values = {name: getattr(template, name) for name in Template.CONTENT_FIELDS}
    if persona is None:
        return values
    for variant in template.variants.all():
        if variant.persona_id == persona.pk:
            return _overlaid(values, variant)
    return values


def _overlaid(values: dict, variant) -> dict:
    """``values`` with the fields ``variant`` sets laid over them (NULL in the variant = inherit)."""
    return {name: value if getattr(variant, name) is None else getattr(variant, name) for name, value in values.items()}


def template_sources(template: Template, fields: dict | None = None) -> list[tuple[str, str]]:
    """(part, Liquid source) of everything the template's channel renders, named as problems name them."""
    fields = fields if fields is not None else content_fields(template)
    if template.channel == ContentChannel.EMAIL:
        sources = [("subject", fields["subject"] or ""), ("preheader", fields["preheader"] or "")]
        for index, block in enumerate(fields["blocks"] or []):
            if isinstance(block, dict):
                sources += [
                    (f"block {index + 1} {name}", value)
                    for name, value in block.items()
                    if name not in ("type", "id") and isinstance(value, str)
                ]
        return sources
    sources = [("body", fields["body"] or "")]
    if template.channel in (ContentChannel.MASTODON, ContentChannel.BLUESKY):
        sources.append(("image alt", fields["image_alt"] or ""))
    return sources


def shares_content(template: Template) -> bool:
    """Whether every recipient of ``template`` gets the same content but for their own links.

    True for an email whose Liquid, by default and in every persona's variant,
    reads no ``customer`` or ``links`` variable: a send then renders it once and
    the provider fills in each recipient's links (``render_template``'s
    ``recipient_tags``), so the recipient's profile is never read.
    """
    if template.channel != ContentChannel.EMAIL:
        return False
    default = content_fields(template)
    every = [default, *(_overlaid(default, variant) for variant in template.variants.all())]
    return not any(_reads_recipient(template_variables(template_sources(template, fields))[0]) for fields in every)


def _reads_recipient(uses: list[VariableUse]) -> bool:
    return any(use.path.split(".", 1)[0].split("[", 1)[0] in _PERSONAL_ROOTS for use in uses)


def template_variables(sources: list[tuple[str, str]]) -> tuple[list[VariableUse], list[ContentError]]:
    """Every variable the sources read, and the syntax errors of those that do not parse."""
    uses, problems = [], []
    for part, source in sources:
        try:
            uses += variables(source, part=part)
        except ContentError as exc:
            problems.append(exc)
    return uses, problems


class _Parts:
    """Renders parts one by one, collecting problems instead of stopping at the first."""

    def __init__(self, context: dict):
        self.context = context
        self.problems: list[ContentError] = []

    def render(self, source: str | None, part: str) -> str:
        try:
            return render_source(source or "", self.context, part=part)
        except ContentError as exc:
            self.problems.append(exc)
            return ""


def _one_line(text: str) -> str:
    return " ".join(text.split())


def render_template(
    template: Template,
    *,
    brand: Brand | None = None,
    campaign: Campaign | None = None,
    customer=None,
    persona=None,
    message=None,
    context: dict | None = None,
    store_links: bool = False,
    cache: dict | None = None,
    recipient_tags: bool = False,
) -> RenderedContent:
    """Render ``template`` (its variant for ``persona``, or the customer's persona) on its channel.

    ``customer`` gives the context's ``customer``; without one, a sample customer
    of ``persona`` (or a generic sample) is used. ``context`` overrides parts of
    the context (the API's ad-hoc render). ``message`` (a real send) makes links
    carry its id so clicks land on that message and customer, and gives the
    recipient's unsubscribe, preferences and view-in-browser links.

    Short links: a send stores them (one ``ShortLink`` per step and URL);
    ``store_links=True`` stores them for a test send too; a preview only shows
    code-shaped stand-ins and writes nothing. ``cache`` is a dict the caller
    keeps across the renders of one batch (short links, SMS prices).

    ``recipient_tags`` (a real email send): when the template's Liquid reads no
    ``customer`` or ``links`` variable, what differs between its recipients is
    only the layout's unsubscribe, preferences and view-in-browser links. They
    are then written as ``RECIPIENT_TAGS`` with this recipient's values in
    ``substitutions`` (the email provider fills them in per recipient), and the
    shared part is rendered once per template, persona and campaign in ``cache``:
    every recipient of a broadcast gets the very same ``subject``, ``html`` and
    ``text`` strings, which is what lets the adapter send them in one call.
    Otherwise the content is rendered for the recipient, links and all.
    """
    cache = cache if cache is not None else {}
    step = message.step if message is not None else None
    if message is not None:
        customer = customer if customer is not None else message.customer
        campaign = campaign if campaign is not None else step.campaign
    brand = brand or (campaign.brand if campaign is not None else template.brand)
    if customer is None:
        customer = sample_customer(persona)
    if persona is None and customer.persona_id:
        persona = customer.persona
    channel = template.channel

    links = recipient_links(
        customer_id=customer.pk if message is not None else None,
        channel=CONSENT_CHANNEL.get(channel, channel),
        message_id=message.pk if message is not None else None,
    )
    shared_key = None
    if recipient_tags and message is not None and channel == ContentChannel.EMAIL and not context:
        shared_key = ("shared-email", template.pk, persona.pk if persona else None, campaign.pk, brand.pk)
        shared = cache.get(shared_key)
        if shared is not None:
            return _for_recipient(shared, links)

    fields = content_fields(template, persona)
    sources = template_sources(template, fields)
    uses, _ = template_variables(sources)
    unknown = tuple(unknown_variables(uses))

    context_customer, context_links = customer, links
    if shared_key is not None:
        if _reads_recipient(uses):
            shared_key = None  # the Liquid itself differs per recipient
        else:  # read by nobody: the shared part never needs the recipient's profile
            context_customer, context_links = None, RECIPIENT_TAGS
    values = template_context(
        brand=brand, campaign=campaign, customer=context_customer, persona=persona, links=context_links
    )
    if context:
        values = merge_context(values, context)
    linker = Linker(
        brand=brand,
        channel=channel,
        campaign=campaign,
        step_id=step.pk if step is not None else None,
        message_id=message.pk if message is not None else None,
        store=store_links,
        cache=cache,
    )
    parts = _Parts(values)

    if channel == ContentChannel.EMAIL:
        subject = _one_line(parts.render(fields["subject"], "subject"))
        preheader = _one_line(parts.render(fields["preheader"], "preheader"))
        body = BlockRenderer(style=BlockStyle.for_brand(brand), context=values, link=linker.url).render(
            fields["blocks"] or []
        )
        recipient = values["links"]
        rendered = RenderedContent(
            channel=channel,
            subject=subject,
            preheader=preheader,
            html=email_html(brand=brand, subject=subject, preheader=preheader, body_html=body.html, links=recipient),
            text=email_text(brand=brand, body_text=body.text, links=recipient),
            headers=email_headers(links=recipient),
            links=tuple(linker.destinations),
            problems=(*parts.problems, *body.problems),
            unknown_variables=unknown,
        )
        if shared_key is None:
            return rendered
        cache[shared_key] = rendered
        return _for_recipient(rendered, links)

    text = linker.text(parts.render(fields["body"], "body").strip())
    if channel in (ContentChannel.SMS, ContentChannel.WHATSAPP):
        info = sms_info(text, country=customer.country, cache=cache) if channel == ContentChannel.SMS else None
        return RenderedContent(
            channel=channel,
            text=text,
            links=tuple(linker.destinations),
            sms=info,
            problems=tuple(parts.problems),
            unknown_variables=unknown,
        )
    image_alt = _one_line(parts.render(fields["image_alt"], "image alt"))
    return RenderedContent(
        channel=channel,
        text=text,
        image_url=absolute_media_url(template.image),
        image_alt=image_alt,
        links=tuple(linker.destinations),
        problems=tuple(parts.problems),
        unknown_variables=unknown,
    )


def _for_recipient(shared: RenderedContent, links: dict[str, str]) -> RenderedContent:
    """The shared rendering of an email, with this recipient's headers and tag values."""
    return replace(shared, headers=email_headers(links=links), substitutions=_tag_values(links))


def _tag_values(links: dict[str, str]) -> dict[str, str]:
    return {tag: links[name] for name, tag in RECIPIENT_TAGS.items()}


def recipient_substitutions(*, customer_id: int, channel: str, message_id: int) -> dict[str, str]:
    """The values a shared email's ``RECIPIENT_TAGS`` took for the recipient of message ``message_id``."""
    channel = CONSENT_CHANNEL.get(channel, channel)
    return _tag_values(recipient_links(customer_id=customer_id, channel=channel, message_id=message_id))


__all__ = [
    "ContentChannel",
    "RenderedContent",
    "SmsInfo",
    "content_fields",
    "recipient_substitutions",
    "render_template",
    "shares_content",
    "substitute",
]
