"""Brand checks: the consistency guard every rendered piece of content goes through.

``check_content`` runs every rule on one ``RenderedContent``; ``check_template``
renders a template for a generic sample customer and for each persona that has
a variant or members, and ``check_campaign`` does that for every step. A
``Finding`` says what is wrong and where, in words a marketer can act on.

Error findings stop a campaign from being submitted for review unless a brand
manager overrides them (``FindingOverride``, keyed by ``Finding.fingerprint``);
warnings are shown, never block.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from html.parser import HTMLParser
from urllib.parse import urlsplit

import regex
from django.conf import settings
from django.db.models import Exists, OuterRef, Q, prefetch_related_objects

from campaigns.content.render import RenderedContent, render_template
from campaigns.models import Brand, Campaign, ContentChannel, Template

ERROR, WARNING = "error", "warning"

BANNED_PHRASE = "banned_phrase"
REQUIRED_PHRASE = "required_phrase"
LENGTH = "length"
LINK_DOMAIN = "link_domain"
ALT_TEXT = "alt_text"
UNSUBSCRIBE = "unsubscribe"
LEGAL_FOOTER = "legal_footer"
UNKNOWN_VARIABLE = "unknown_variable"
LIQUID_ERROR = "liquid_error"
SENDER = "sender_identity"
SMS_ENCODING = "sms_encoding"

# Content that does not render, or a channel with no sender, cannot be sent, whatever anyone decides.
NOT_OVERRIDABLE = frozenset({LIQUID_ERROR, SENDER})

# Mastodon counts every link as 23 characters and a mention by its local part.
MASTODON_URL_LENGTH = 23
_URL = re.compile(r"https?://[^\s<>\"']+", re.IGNORECASE)
_MENTION = re.compile(r"(@[\w.-]+)@[\w.-]+\.\w+")

_TEXT_WHERE = {
    ContentChannel.EMAIL: "body",
    ContentChannel.SMS: "SMS text",
    ContentChannel.WHATSAPP: "WhatsApp message",
    ContentChannel.MASTODON: "post",
    ContentChannel.BLUESKY: "post",
}
_SENDER_NAMES = {
    ContentChannel.EMAIL: "email sender address",
    ContentChannel.SMS: "SMS sender number or messaging service",
    ContentChannel.WHATSAPP: "WhatsApp sender number",
    ContentChannel.MASTODON: "Mastodon account",
    ContentChannel.BLUESKY: "Bluesky account",
}


@dataclass(frozen=True)
class Finding:
    """One thing wrong with a piece of content.

    ``where`` names the part (subject, preheader, body, post, links, …) and,
    for Liquid, the line and column; ``step_position`` and ``persona`` (the
    persona's name) say which rendering produced it. ``key`` is the finding's
    stable essence (the phrase, the domain, the variable path …); it makes the
    fingerprint survive unrelated edits, such as a subject growing by one
    character or a variable moving to another line.
    """

    rule: str
    severity: str
    message: str
    where: str
    step_position: int | None = None
    persona: str | None = None
    key: str = ""

    @property
    def fingerprint(self) -> str:
        """sha256 hex (64 chars) of rule, step, persona and essence: what a ``FindingOverride`` refers to."""
        step = "" if self.step_position is None else str(self.step_position)
        essence = self.key or f"{self.where}|{self.message}"
        raw = "|".join((self.rule, step, self.persona or "", essence))
        return hashlib.sha256(raw.encode()).hexdigest()

    @property
    def overridable(self) -> bool:
        return self.severity == ERROR and self.rule not in NOT_OVERRIDABLE

    @property
    def blocking(self) -> bool:
        return self.severity == ERROR


# --- HTML --------------------------------------------------------------------

_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
)
_BREAKS = frozenset(
    {"br", "p", "div", "tr", "td", "th", "li", "table", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "section"}
)
_INVISIBLE = frozenset({"head", "style", "script", "title", "template"})


@dataclass(frozen=True)
class _Html:
    text: str  # what a reader sees: hidden elements (the preheader), styles and scripts left out
    images: tuple[tuple[str, str | None], ...]  # (src, alt or None when the attribute is absent)
    anchors: tuple[tuple[str, str], ...]  # (href, link text)


class _HtmlScanner(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.images: list[tuple[str, str | None]] = []
        self.anchors: list[tuple[str, str]] = []
        self._open: list[tuple[str, bool]] = []  # (tag, hidden)
        self._anchor: tuple[str, list[str]] | None = None

    def _hidden(self) -> bool:
        return bool(self._open) and self._open[-1][1]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.images.append((values.get("src") or "", values.get("alt")))
        if tag in _BREAKS:
            self.text.append("\n")
        if tag in _VOID:
            return
        style = (values.get("style") or "").replace(" ", "").lower()
        hidden = (
            self._hidden()
            or tag in _INVISIBLE
            or "display:none" in style
            or "hidden" in values
            or values.get("aria-hidden") == "true"
        )
        self._open.append((tag, hidden))
        if tag == "a":
            self._anchor = (values.get("href") or "", [])

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return
        for index in range(len(self._open) - 1, -1, -1):
            if self._open[index][0] == tag:
                del self._open[index:]
                break
        if tag == "a" and self._anchor is not None:
            self.anchors.append((self._anchor[0], "".join(self._anchor[1])))
            self._anchor = None
        if tag in _BREAKS:
            self.text.append("\n")

    def handle_data(self, data: str) -> None:
        if self._anchor is not None:
            self._anchor[1].append(data)
        if not self._hidden():
            self.text.append(data)


@lru_cache(maxsize=64)
def _scan_html(html: str) -> _Html:
    scanner = _HtmlScanner()
    scanner.feed(html)
    scanner.close()
    return _Html("".join(scanner.text), tuple(scanner.images), tuple(scanner.anchors))


# --- Text helpers -------------------------------------------------------------


def _normalize(text: str) -> str:
    """Typographic apostrophes as plain ones and runs of whitespace as one space, for matching."""
    return " ".join(text.replace("\u2019", "'").replace("\u2018", "'").split())


@lru_cache(maxsize=1024)
def _phrase_pattern(phrase: str) -> re.Pattern:
    """``phrase`` as a case-insensitive whole-word pattern; any whitespace between its words."""
    words = _normalize(phrase).split(" ")
    body = r"\s+".join(re.escape(word) for word in words)
    start = r"(?<!\w)" if re.match(r"\w", words[0]) else ""
    end = r"(?!\w)" if re.search(r"\w$", words[-1]) else ""
    return re.compile(f"{start}{body}{end}", re.IGNORECASE)


def _contains(text: str, phrase: str) -> bool:
    return bool(_phrase_pattern(phrase).search(_normalize(text)))


_GRAPHEME = regex.compile(r"\X")


def graphemes(text: str) -> int:
    """User-perceived characters (extended grapheme clusters): 👨‍👩‍👧‍👦 and 🇵🇱 are one each, as Bluesky counts."""
    return len(_GRAPHEME.findall(text))


def mastodon_length(text: str) -> int:
    """The length Mastodon checks: links count 23, ``@user@host`` counts as ``@user``, graphemes otherwise."""
    countable = _MENTION.sub(r"\1", _URL.sub("x" * MASTODON_URL_LENGTH, text))
    return graphemes(countable)


def _quote(items) -> str:
    return ", ".join(f"“{item}”" for item in items)


def _location(part: str, line: int | None, column: int | None) -> str:
    if line is None:
        return part
    return f"{part}, line {line}:{column}" if column is not None else f"{part}, line {line}"


# --- The rules ----------------------------------------------------------------


def _places(rendered: RenderedContent) -> list[tuple[str, str]]:
    """(where, text) for every part a reader sees, in reading order."""
    places = []
    if rendered.subject:
        places.append(("subject", rendered.subject))
    if rendered.preheader:
        places.append(("preheader", rendered.preheader))
    if rendered.html:
        html = _scan_html(rendered.html)
        places.append(("body", html.text))
        places.append(("plain-text part", rendered.text))
        alts = [alt for _src, alt in html.images if alt]
        if alts:
            places.append(("image alt text", "\n".join(alts)))
    else:
        places.append((_TEXT_WHERE.get(rendered.channel, "text"), rendered.text))
    if rendered.image_alt:
        places.append(("image alt text", rendered.image_alt))
    return places


def _block_of(template: Template | None, phrase: str) -> str:
    """ " (block 2, text)" when ``phrase`` sits in one of ``template``'s email blocks, so the writer finds it."""
    if template is None or not isinstance(template.blocks, list):
        return ""
    for index, block in enumerate(template.blocks):
        if not isinstance(block, dict):
            continue
        values = " ".join(str(value) for name, value in block.items() if name != "type" and isinstance(value, str))
        if _contains(values, phrase):
            return f", block {index + 1} ({block.get('type', '?')})"
    return ""


def _banned_phrases(rendered: RenderedContent, brand: Brand, template: Template | None) -> list[Finding]:
    findings = []
    places = _places(rendered)
    for phrase in brand.banned_phrase_list:
        found = [where for where, text in places if _contains(text, phrase)]
        if "body" in found and "plain-text part" in found:
            found.remove("plain-text part")  # generated from the body: one finding is enough
        for where in dict.fromkeys(found):
            located = where + (_block_of(template, phrase) if where == "body" else "")
            findings.append(
                Finding(
                    BANNED_PHRASE,
                    ERROR,
                    f"Banned phrase “{phrase}” in the {located}: {brand.name} does not use it; reword that part.",
                    located,
                    key=f"{where}|{phrase.casefold()}",
                )
            )
    return findings


def _required_phrases(rendered: RenderedContent, brand: Brand) -> list[Finding]:
    seen = "\n".join(text for _where, text in _places(rendered))
    channel = ContentChannel(rendered.channel).label
    return [
        Finding(
            REQUIRED_PHRASE,
            ERROR,
            f"Required phrase “{phrase}” is missing: {brand.name} needs it in every {channel} message; add it.",
            _TEXT_WHERE.get(rendered.channel, "text"),
            key=phrase.casefold(),
        )
        for phrase in brand.required_phrases_for(rendered.channel)
        if not _contains(seen, phrase)
    ]


@dataclass(frozen=True)
class _LengthLimit:
    """How a channel's length is counted, which ``Brand`` field caps it, and what to say when it is over."""

    measure: Callable[[RenderedContent], int]
    brand_field: str
    where: str
    unit: str  # the finding's key: "<unit>><limit>"
    message: str  # str.format: size, limit, over, brand, and for SMS characters and encoding


_LENGTH_LIMITS = {
    ContentChannel.EMAIL: _LengthLimit(
        lambda r: len(r.subject),
        "email_subject_max_chars",
        "subject",
        "subject",
        "The subject is {size} characters, over {brand}'s limit of {limit}: "
        "cut {over} (long subjects are clipped in the inbox).",
    ),
    ContentChannel.SMS: _LengthLimit(
        lambda r: r.sms.segments,
        "sms_max_segments",
        "SMS text",
        "segments",
        "The SMS is {size} segments ({characters} {encoding} characters), "
        "over {brand}'s limit of {limit}: shorten the text.",
    ),
    ContentChannel.WHATSAPP: _LengthLimit(
        lambda r: len(r.text),
        "whatsapp_max_chars",
        "WhatsApp message",
        "chars",
        "The WhatsApp message is {size} characters, over the limit of {limit}: cut {over}.",
    ),
    ContentChannel.MASTODON: _LengthLimit(
        lambda r: mastodon_length(r.text),
        "mastodon_max_chars",
        "post",
        "chars",
        "The post is {size} characters as Mastodon counts them (a link counts 23), "
        "over the limit of {limit}: cut {over}.",
    ),
    ContentChannel.BLUESKY: _LengthLimit(
        lambda r: graphemes(r.text),
        "bluesky_max_graphemes",
        "post",
        "graphemes",
        "The post is {size} characters (graphemes, as Bluesky counts them), over the limit of {limit}: cut {over}.",
    ),
}


def length_and_limit(rendered: RenderedContent, brand: Brand) -> tuple[int, int] | None:
    """The content's length as its channel's limit counts it (email: the subject; SMS: segments), and the
    brand's limit; None when the channel has no limit or an SMS was not measured."""
    limit = _LENGTH_LIMITS.get(rendered.channel)
    if limit is None or (rendered.channel == ContentChannel.SMS and rendered.sms is None):
        return None
    return limit.measure(rendered), getattr(brand, limit.brand_field)


def _length(rendered: RenderedContent, brand: Brand) -> list[Finding]:
    measured = length_and_limit(rendered, brand)
    if measured is None or measured[0] <= measured[1]:
        return []
    size, limit = measured
    rule = _LENGTH_LIMITS[rendered.channel]
    sms = rendered.sms
    message = rule.message.format(
        size=size,
        limit=limit,
        over=size - limit,
        brand=brand.name,
        characters=sms.characters if sms else "",
        encoding=sms.encoding if sms else "",
    )
    return [Finding(LENGTH, ERROR, message, rule.where, key=f"{rule.unit}>{limit}")]


def _sms_encoding(rendered: RenderedContent) -> list[Finding]:
    sms = rendered.sms
    if rendered.channel != ContentChannel.SMS or sms is None or sms.encoding != "UCS-2":
        return []
    shown = _quote(sms.non_gsm[:5]) or "some characters"
    return [
        Finding(
            SMS_ENCODING,
            WARNING,
            f"The SMS is sent as UCS-2 because of {shown}: a segment then holds 70 characters instead of 160. "
            "Replace them if you can.",
            "SMS text",
            key="ucs-2",
        )
    ]


def _own_hosts() -> set[str]:
    """Chorus's own links (unsubscribe, preferences, /l/ redirects) pass whatever the allowlist says."""
    host = urlsplit(settings.CHORUS_PUBLIC_URL).hostname
    return {host} if host else set()


def _link_domains(rendered: RenderedContent, brand: Brand) -> list[Finding]:
    allowed = brand.link_domain_list
    if not allowed:
        return []
    urls = list(rendered.links)
    if rendered.html:
        urls += [href for href, _text in _scan_html(rendered.html).anchors]
    own = _own_hosts()
    findings, reported = [], set()
    for url in urls:
        try:
            parts = urlsplit(url.strip())
        except ValueError:
            continue  # not a URL at all: the block validation reports it
        if parts.scheme.lower() not in ("http", "https"):
            continue  # mailto:, tel:, anchors
        host = (parts.hostname or "").rstrip(".").lower()
        if not host or host in own or host in reported:
            continue
        if any(host == domain or host.endswith(f".{domain}") for domain in allowed):
            continue
        reported.add(host)
        findings.append(
            Finding(
                LINK_DOMAIN,
                ERROR,
                f"The link to {parts.scheme}://{parts.netloc}{parts.path} goes to {host}, "
                f"which is not one of {brand.name}'s link domains "
                f"({', '.join(allowed)}): link to an allowed domain or ask a brand manager to add it.",
                "links",
                key=host,
            )
        )
    return findings


def _alt_text(rendered: RenderedContent) -> list[Finding]:
    findings = []
    if rendered.html:
        for src, alt in _scan_html(rendered.html).images:
            if alt is None or not alt.strip():
                name = src.rsplit("/", 1)[-1].split("?", 1)[0] or src or "an image"
                findings.append(
                    Finding(
                        ALT_TEXT,
                        ERROR,
                        f"The image {name} has no alt text: describe it for screen readers and blocked images.",
                        "body",
                        key=src,
                    )
                )
    if rendered.image_url and not rendered.image_alt.strip():
        findings.append(
            Finding(
                ALT_TEXT,
                ERROR,
                "The post's image has no alt text: describe it for people using screen readers.",
                "image alt text",
                key="post image",
            )
        )
    return findings


def _unsubscribe_url(rendered: RenderedContent) -> str:
    header = rendered.headers.get("List-Unsubscribe", "")
    urls = [url for url in re.findall(r"<([^>]+)>", header) if url.lower().startswith("http")]
    return urls[0] if urls else ""


def _email_footer(rendered: RenderedContent, brand: Brand) -> list[Finding]:
    if rendered.channel != ContentChannel.EMAIL:
        return []
    findings = []
    html = _scan_html(rendered.html) if rendered.html else None
    header_url = _unsubscribe_url(rendered)
    if html is not None:
        has_link = any(
            (header_url and href == header_url) or "unsubscribe" in f"{href} {text}".lower()
            for href, text in html.anchors
        )
    else:
        has_link = bool(header_url and header_url in rendered.text) or "unsubscribe" in rendered.text.lower()
    if not has_link:
        findings.append(
            Finding(
                UNSUBSCRIBE,
                ERROR,
                "The email has no unsubscribe link: add {{ links.unsubscribe }} (the brand layout's footer has one).",
                "footer",
                key="unsubscribe",
            )
        )
    seen = _normalize(html.text if html is not None else rendered.text).casefold()
    missing = [
        piece
        for piece in (brand.legal_company_name, *brand.postal_address.splitlines())
        if _normalize(piece).strip(" ,").casefold() not in seen
    ]
    if missing:
        findings.append(
            Finding(
                LEGAL_FOOTER,
                ERROR,
                f"The email's legal footer is missing {_quote(m.strip() for m in missing)}: "
                f"every email must show “{brand.legal_footer}”.",
                "footer",
                key="legal footer",
            )
        )
    return findings


def _liquid(rendered: RenderedContent) -> list[Finding]:
    findings = []
    for problem in rendered.problems:
        detail = (getattr(problem, "message", "") or str(problem)).strip().splitlines()[0].rstrip(".")
        if problem.part and detail.startswith(problem.part) and ": " in detail:
            detail = detail.split(": ", 1)[1]  # "body, line 2, column 5: ..." -> the problem alone
        where = _location(problem.part or "content", problem.line, problem.column)
        findings.append(
            Finding(
                LIQUID_ERROR,
                ERROR,
                f"Liquid error in the {where}: {detail}. Fix the tag or expression there."
                if problem.line is not None
                else f"The {where} cannot be rendered: {detail}. Fix it there.",
                where,
                key=f"{problem.part}|{detail}",
            )
        )
    for use in rendered.unknown_variables:
        where = _location(use.part, use.line, use.column)
        findings.append(
            Finding(
                UNKNOWN_VARIABLE,
                ERROR,
                f"Unknown variable “{use.path}” in the {where}: it would print nothing. "
                "Check the spelling against the documented context, or add a fallback with | default.",
                where,
                key=f"{use.part}|{use.path}",
            )
        )
    return findings


def _sender(channel: str, brand: Brand) -> list[Finding]:
    if brand.sender_for(channel):
        return []
    label = ContentChannel(channel).label
    return [
        Finding(
            SENDER,
            ERROR,
            f"{brand.name} has no {_SENDER_NAMES[channel]}: a brand manager sets it under "
            f"Sender identities before {label} can be sent.",
            "sender",
            key=channel,
        )
    ]


def check_content(rendered: RenderedContent, *, brand: Brand, template: Template | None = None) -> list[Finding]:
    """Every brand rule applied to one rendered piece of content, errors first then warnings.

    ``template`` (optional) lets a finding in an email body name the block it
    sits in.
    """
    findings = [
        *_liquid(rendered),
        *_banned_phrases(rendered, brand, template),
        *_required_phrases(rendered, brand),
        *_length(rendered, brand),
        *_link_domains(rendered, brand),
        *_alt_text(rendered),
        *_email_footer(rendered, brand),
        *_sender(rendered.channel, brand),
        *_sms_encoding(rendered),
    ]
    return sorted(findings, key=lambda f: f.severity != ERROR)


# --- Templates and campaigns ------------------------------------------------------


def _personas_to_check(template: Template):
    """Personas with a variant of ``template`` or with members, by priority: each gets its own rendering.

    The variants are read from ``template.variants.all()``, prefetched by ``check_template`` (or held in
    memory by an unsaved draft, such as the editor's), so a variant typed but not saved counts too.
    """
    from customers.models import Customer, Persona

    with_variant = [variant.persona_id for variant in template.variants.all()] if template.pk else []
    members = Exists(Customer.objects.live().filter(persona=OuterRef("pk")))
    return list(Persona.objects.filter(members | Q(pk__in=with_variant)))


def _dedupe_key(finding: Finding) -> tuple[str, str]:
    return (finding.rule, finding.key or f"{finding.where}|{finding.message}")


def check_template(
    template: Template, *, brand: Brand | None = None, campaign: Campaign | None = None
) -> list[Finding]:
    """Findings for ``template`` rendered for a sample customer and for each persona that could receive it.

    A persona's rendering only adds the findings the generic one does not have
    (its variant's own content, or its sample customer's data); those carry the
    persona's name. ``template`` may be an unsaved draft whose variants are
    already in its prefetch cache.
    """
    brand = brand or (campaign.brand if campaign is not None else template.brand)
    if brand.pk:
        prefetch_related_objects([brand], "required_phrases")
    if template.pk:
        prefetch_related_objects([template], "variants")  # one query for every persona's rendering
    findings = check_content(render_template(template, brand=brand, campaign=campaign), brand=brand, template=template)
    generic = {_dedupe_key(f) for f in findings}
    for persona in _personas_to_check(template):
        rendered = render_template(template, brand=brand, campaign=campaign, persona=persona)
        seen = set(generic)
        for finding in check_content(rendered, brand=brand, template=template):
            key = _dedupe_key(finding)
            if key not in seen:
                seen.add(key)
                findings.append(replace(finding, persona=persona.name))
    return findings


def check_campaign(campaign: Campaign) -> list[Finding]:
    """``check_template`` over every step of ``campaign``, in the campaign's brand; each finding names its step."""
    findings = []
    steps = campaign.steps.select_related("template").prefetch_related("template__variants").order_by("position")
    for step in steps:
        for finding in check_template(step.template, brand=campaign.brand, campaign=campaign):
            findings.append(replace(finding, step_position=step.position))
    return findings
