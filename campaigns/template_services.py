"""Saving templates and their persona variants: one validation for the editor and the API.

Which fields a channel uses, which are required, Liquid syntax (with line and
column) and the email's blocks are checked here, so the UI and the API accept
and refuse the same content with the same words. ``template_save`` writes the
template and every variant in one transaction, or nothing at all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import transaction

from campaigns.content.blocks import BLOCK_TYPES, validate_blocks
from campaigns.content.liquid import ContentError, check_source
from campaigns.models import ContentChannel, Template, TemplateVariant

logger = logging.getLogger(__name__)

# The content fields each channel uses; the others stay empty.
CHANNEL_FIELDS: dict[str, tuple[str, ...]] = {
    ContentChannel.EMAIL: ("subject", "preheader", "blocks"),
    ContentChannel.SMS: ("body",),
    ContentChannel.WHATSAPP: ("body",),
    ContentChannel.MASTODON: ("body", "image_alt"),
    ContentChannel.BLUESKY: ("body", "image_alt"),
}
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    ContentChannel.EMAIL: ("subject", "blocks"),
    ContentChannel.SMS: ("body",),
    ContentChannel.WHATSAPP: ("body",),
    ContentChannel.MASTODON: ("body",),
    ContentChannel.BLUESKY: ("body",),
}
# Channels whose template may carry an uploaded image.
IMAGE_CHANNELS = frozenset({ContentChannel.MASTODON, ContentChannel.BLUESKY})
_BODY_LABELS = {
    ContentChannel.SMS: "Message",
    ContentChannel.WHATSAPP: "Message",
    ContentChannel.MASTODON: "Post text",
    ContentChannel.BLUESKY: "Post text",
}


def field_label(channel: str, field: str) -> str:
    """What the editor calls ``field`` on ``channel`` ("Subject", "Message", "Post text" ...)."""
    if field == "body":
        return _BODY_LABELS.get(channel, "Body")
    return {"subject": "Subject", "preheader": "Preheader", "blocks": "Blocks", "image_alt": "Image alt text"}.get(
        field, field
    )


def block_label(index: int, block: object) -> str:
    """ "Block 2 (text)": how a marketer finds a block in the editor."""
    kind = block.get("type") if isinstance(block, dict) else None
    return f"Block {index + 1} ({kind})" if kind in BLOCK_TYPES else f"Block {index + 1}"


@dataclass(frozen=True)
class Problem:
    """Why some content cannot be saved: the field, the message, and which persona's variant or block."""

    field: str
    message: str
    persona: str = ""  # the persona's slug when the problem is in its variant
    block: int | None = None  # 0-based index for a problem in one email block
    block_field: str = ""  # the block's field ("text", "url" ...), "" for the block itself

    def __str__(self) -> str:
        return self.message


class TemplateInvalid(Exception):
    """The content was not saved; ``problems`` says everything that is wrong."""

    def __init__(self, problems: list[Problem]):
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems


def _blocks_problems(blocks: object, *, persona: str) -> list[Problem]:
    problems = []
    for error in validate_blocks(blocks):
        block = blocks[error.index] if isinstance(blocks, list) and error.index < len(blocks) else None
        where = block_label(error.index, block) + (f", {error.field}" if error.field else "")
        problems.append(
            Problem("blocks", f"{where}: {error.message}", persona, block=error.index, block_field=error.field)
        )
    return problems


def content_problems(channel: str, content: dict, *, variant: bool = False, persona: str = "") -> list[Problem]:
    """What is wrong with ``content`` (field -> value) for a template on ``channel``.

    A variant's ``None`` fields inherit the template's and are not checked; a
    template's required fields must be filled in.
    """
    problems: list[Problem] = []
    for field in CHANNEL_FIELDS[channel]:
        value = content.get(field)
        label = field_label(channel, field)
        if variant and value is None:
            continue
        if field == "blocks":
            if not value and not variant:
                problems.append(
                    Problem(field, "Blocks: add at least one block (a heading, text, button ...).", persona)
                )
            elif value is not None:
                problems += _blocks_problems(value, persona=persona)
            continue
        if not isinstance(value, str):
            if value is None and not (field in REQUIRED_FIELDS[channel] and not variant):
                continue
            problems.append(Problem(field, f"{label}: must be text.", persona))
            continue
        if not value.strip() and field in REQUIRED_FIELDS[channel] and not variant:
            problems.append(
                Problem(field, f"{label}: required for {ContentChannel(channel).label} templates.", persona)
            )
            continue
        limit = Template._meta.get_field(field).max_length
        if limit and len(value) > limit:
            problems.append(Problem(field, f"{label}: at most {limit} characters; this is {len(value)}.", persona))
            continue
        try:
            check_source(value, label)
        except ContentError as exc:
            problems.append(Problem(field, exc.message, persona))
    return problems


def template_problems(template: Template, content: dict, variants: dict | None = None) -> list[Problem]:
    """Everything wrong with ``content`` and the persona ``variants`` ({persona: {field: value}}) of ``template``."""
    problems = content_problems(template.channel, content)
    for persona, fields in (variants or {}).items():
        problems += content_problems(template.channel, fields, variant=True, persona=persona.slug)
    return problems


def template_save(*, template: Template, content: dict, variants: dict | None = None, by=None) -> Template:
    """Validate and write ``template`` (new or existing) with ``content`` and its persona ``variants``.

    ``content`` maps content fields to values (fields the channel does not use
    are cleared); ``image`` may be an uploaded file, or ``False`` to remove the
    image. ``variants`` maps each persona to its overrides ({field: value or
    None}); a variant whose fields are all ``None`` is deleted; personas not in
    ``variants`` keep theirs. ``variants=None`` leaves every variant as it is.
    Raises ``TemplateInvalid`` and writes nothing if anything is wrong.
    """
    problems = template_problems(template, content, variants)
    if problems:
        raise TemplateInvalid(problems)
    used = CHANNEL_FIELDS[template.channel]
    for field in Template.CONTENT_FIELDS:
        if field in used:
            if field in content:
                setattr(template, field, content[field])
        else:
            setattr(template, field, [] if field == "blocks" else "")
    if template.channel not in IMAGE_CHANNELS:
        template.image = ""
    elif "image" in content:
        template.image = content["image"] or ""
    if template.pk is None and by is not None and getattr(by, "is_authenticated", False):
        template.created_by = by
    with transaction.atomic():
        template.save()
        for persona, fields in (variants or {}).items():
            overrides = {field: fields.get(field) for field in used}
            if all(value is None for value in overrides.values()):
                TemplateVariant.objects.filter(template=template, persona=persona).delete()
                continue
            TemplateVariant.objects.update_or_create(template=template, persona=persona, defaults=overrides)
    logger.info("Template %s (%s) saved by %s", template.pk, template.channel, by)
    return template
