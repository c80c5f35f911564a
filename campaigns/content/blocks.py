"""The email body's structured blocks: validation, table-based HTML with inline CSS, plain text.

A template's ``blocks`` is a list of dicts, each with a ``type``:

=========  ==============================  ==================
type       required fields                 optional fields
=========  ==============================  ==================
heading    text
text       text
image      src                             alt, href
button     text, url
divider
offer      title, text                     code, url, image
html       html
=========  ==============================  ==================

Every field is Liquid. Text fields render as plain text: the result is
HTML-escaped, blank lines make paragraphs and URLs become links. The ``html``
block is for experts: the marketer's markup is kept as written, while every
value Liquid puts into it is HTML-escaped (customer data can never inject markup).
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urlsplit

from django.utils.html import escape

from campaigns.content.links import split_urls
from campaigns.content.liquid import ContentError, check_source, render_source

# type -> (required fields, optional fields)
BLOCK_TYPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "heading": (("text",), ()),
    "text": (("text",), ()),
    "image": (("src",), ("alt", "href")),
    "button": (("text", "url"), ()),
    "divider": ((), ()),
    "offer": (("title", "text"), ("code", "url", "image")),
    "html": (("html",), ()),
}
# Keys a block may carry besides its fields (an editor's stable id for each block).
_META_KEYS = frozenset({"type", "id"})
# Fields holding a link (any scheme below) or an image (http(s) only).
LINK_FIELDS = frozenset({"url", "href"})
IMAGE_FIELDS = frozenset({"src", "image"})
LINK_SCHEMES = ("http", "https", "mailto", "tel")

CONTENT_WIDTH = 552  # 600 minus the side padding


@dataclass(frozen=True)
class BlockError:
    """A problem with one block: its index (0-based), the field (or "" for the block), what is wrong."""

    index: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"Block {self.index + 1}" + (f" {self.field}" if self.field else "")
        return f"{where}: {self.message}"


def _url_problem(value: str, *, image: bool) -> str:
    """Why ``value`` is not a usable link or image address, or ""."""
    value = value.strip()
    if "{{" in value or "{%" in value:
        return ""  # checked once rendered
    try:
        parts = urlsplit(value)
    except ValueError:
        return f"{value!r} is not a URL."
    schemes = ("http", "https") if image else LINK_SCHEMES
    if parts.scheme.lower() not in schemes:
        wanted = "an http(s) address" if image else "an http(s), mailto: or tel: link"
        return f"{value!r} is not {wanted}."
    if parts.scheme.lower() in ("http", "https") and not parts.netloc:
        return f"{value!r} has no host."
    if parts.scheme.lower() in ("mailto", "tel") and not parts.path:
        return f"{value!r} is empty."
    return ""


def validate_blocks(blocks: object) -> list[BlockError]:
    """Every problem with ``blocks``: unknown types, missing or unknown fields, bad URLs, invalid Liquid."""
    if not isinstance(blocks, list):
        return [BlockError(0, "", "The body must be a list of blocks.")]
    errors: list[BlockError] = []
    for index, block in enumerate(blocks):
        if not isinstance(block, dict):
            errors.append(BlockError(index, "", "A block must be an object with a type."))
            continue
        kind = block.get("type")
        if kind not in BLOCK_TYPES:
            known = ", ".join(BLOCK_TYPES)
            errors.append(BlockError(index, "type", f"Unknown block type {kind!r}; use one of {known}."))
            continue
        required, optional = BLOCK_TYPES[kind]
        for name in sorted(set(block) - _META_KEYS - set(required) - set(optional)):
            errors.append(BlockError(index, name, f"A {kind} block has no field {name!r}."))
        for name in (*required, *optional):
            value = block.get(name)
            if value is None or value == "":
                if name in required:
                    errors.append(BlockError(index, name, f"A {kind} block needs a {name}."))
                continue
            if not isinstance(value, str):
                errors.append(BlockError(index, name, "Must be text."))
                continue
            is_url = name in LINK_FIELDS or name in IMAGE_FIELDS
            if is_url and (problem := _url_problem(value, image=name in IMAGE_FIELDS)):
                errors.append(BlockError(index, name, problem))
                continue
            try:
                check_source(value, f"block {index + 1} {name}", html=kind == "html")
            except ContentError as exc:
                position = f"line {exc.line}, column {exc.column}: " if exc.line else ""
                message = exc.message.split(": ", 1)[-1]
                errors.append(BlockError(index, name, f"{position}{message}"))
    return errors


# --- rendering ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockStyle:
    """The brand's look, as inline CSS needs it."""

    font_stack: str
    text_colour: str
    heading_colour: str
    link_colour: str
    button_colour: str
    button_text_colour: str

    @classmethod
    def for_brand(cls, brand) -> BlockStyle:
        return cls(
            font_stack=brand.font_stack,
            text_colour=brand.text_colour,
            heading_colour=brand.secondary_colour,
            link_colour=brand.primary_colour,
            button_colour=brand.primary_colour,
            button_text_colour=readable_on(brand.primary_colour),
        )


def readable_on(background: str) -> str:
    """White or near-black, whichever reads better on ``background`` (#RRGGBB)."""
    try:
        red, green, blue = (int(background[i : i + 2], 16) / 255 for i in (1, 3, 5))
    except (ValueError, IndexError):
        return "#FFFFFF"

    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    luminance = 0.2126 * linear(red) + 0.7152 * linear(green) + 0.0722 * linear(blue)
    # Contrast with white vs with #111111 (luminance ~0.0056).
    return "#FFFFFF" if (1.05 / (luminance + 0.05)) >= ((luminance + 0.05) / 0.0556) else "#111111"


@dataclass
class RenderedBlocks:
    html: str = ""
    text: str = ""
    problems: list[ContentError] = field(default_factory=list)


_TAGS = re.compile(r"<[^>]+>")


def _attr(value: str) -> str:
    return escape(value)


def _safe_href(url: str, part: str) -> str:
    """A rendered link is http(s), mailto: or tel:, never ``javascript:`` from data."""
    problem = _url_problem(url, image=False) if url else f"{url!r} is empty."
    if problem:
        raise ContentError(f"{part}: the link {problem[:-1]} once rendered.", part=part)
    return url


def _safe_src(url: str, part: str) -> str:
    problem = _url_problem(url, image=True) if url else f"{url!r} is empty."
    if problem:
        raise ContentError(f"{part}: the image address {problem[:-1]} once rendered.", part=part)
    return url


def _row(inner: str, padding: str = "0 24px 16px") -> str:
    return f'<tr><td class="chorus-px" style="padding:{padding};">{inner}</td></tr>'


class _HtmlToText(HTMLParser):
    """The plain-text reading of the raw-HTML block: text, line breaks, links as "text (url)"."""

    _BREAKS = frozenset({"br", "p", "div", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "li", "table", "hr"})

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.hrefs: list[str | None] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("style", "script", "head", "title"):
            self.skip += 1
        elif tag in self._BREAKS:
            self.out.append("\n")
        if tag == "a":
            self.hrefs.append(dict(attrs).get("href"))
        elif tag == "img" and (alt := dict(attrs).get("alt")):
            self.out.append(alt)

    def handle_endtag(self, tag):
        if tag in ("style", "script", "head", "title"):
            self.skip = max(0, self.skip - 1)
        elif tag in self._BREAKS:
            self.out.append("\n")
        elif tag == "a" and self.hrefs:
            href = self.hrefs.pop()
            if href and href.lower().startswith(("http://", "https://", "mailto:", "tel:")):
                self.out.append(f" ({href})")

    def handle_data(self, data):
        if not self.skip:
            self.out.append(re.sub(r"\s+", " ", data))

    def text(self) -> str:
        lines = [" ".join(line.split()) for line in "".join(self.out).splitlines()]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def html_to_text(markup: str) -> str:
    parser = _HtmlToText()
    parser.feed(markup)
    parser.close()
    return parser.text()


_HREF = re.compile(r"""(\bhref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)


class BlockRenderer:
    """Renders blocks for one recipient: Liquid per field, then HTML and plain text.

    ``link`` rewrites each destination (UTM parameters; see ``links.Linker.url``).
    A block whose Liquid fails is left out and its problem collected, so one
    broken block does not hide the others'.
    """

    def __init__(self, *, style: BlockStyle, context: dict, link: Callable[[str], str]):
        self.style = style
        self.context = context
        self.link = link

    def render(self, blocks: list[dict]) -> RenderedBlocks:
        result = RenderedBlocks()
        html_parts, text_parts = [], []
        for index, block in enumerate(blocks or []):
            kind = block.get("type") if isinstance(block, dict) else None
            method = getattr(self, f"_{kind}", None) if kind in BLOCK_TYPES else None
            if method is None:
                result.problems.append(
                    ContentError(f"block {index + 1}: unknown block type {kind!r}.", part=f"block {index + 1}")
                )
                continue
            try:
                values = {
                    name: self._field(block, name, index, html=kind == "html")
                    for name in (*BLOCK_TYPES[kind][0], *BLOCK_TYPES[kind][1])
                }
                html, text = method(values, index)
            except ContentError as exc:
                result.problems.append(exc)
                continue
            html_parts.append(html)
            if text:
                text_parts.append(text)
        result.html = "".join(html_parts)
        result.text = "\n\n".join(text_parts)
        return result

    def _field(self, block: dict, name: str, index: int, *, html: bool = False) -> str:
        value = block.get(name) or ""
        if not isinstance(value, str):
            raise ContentError(f"block {index + 1} {name}: must be text.", part=f"block {index + 1} {name}")
        return render_source(value, self.context, part=f"block {index + 1} {name}", html=html)

    # Each block type: values (rendered Liquid, not yet escaped) -> (html row, plain text).

    def _font(self) -> str:
        return f"font-family:{self.style.font_stack};"

    def _paragraphs(self, text: str, *, size: int = 16) -> tuple[str, str]:
        style = self.style

        def anchor(shown: str, href: str) -> str:
            return (
                f'<a href="{_attr(href)}" style="color:{style.link_colour};text-decoration:underline;">'
                f"{escape(shown)}</a>"
            )

        html_paragraphs, text_paragraphs = [], []
        for paragraph in re.split(r"\n\s*\n", text.strip()):
            if not paragraph.strip():
                continue
            lines = paragraph.strip().split("\n")
            html_paragraphs.append(
                f'<p style="margin:0 0 16px;{_attr(self._font())}font-size:{size}px;line-height:1.6;'
                f'color:{style.text_colour};">' + "<br>".join(self._linked(line, anchor) for line in lines) + "</p>"
            )
            text_paragraphs.append("\n".join(self._plain_links(line) for line in lines))
        return "".join(html_paragraphs), "\n\n".join(text_paragraphs)

    def _linked(self, line: str, anchor: Callable[[str, str], str]) -> str:
        return "".join(
            anchor(piece, self.link(piece)) if is_url else escape(piece) for piece, is_url in split_urls(line)
        )

    def _plain_links(self, line: str) -> str:
        return "".join(self.link(piece) if is_url else piece for piece, is_url in split_urls(line))

    def _heading(self, values: dict, index: int) -> tuple[str, str]:
        text = " ".join(values["text"].split())
        html = (
            f'<h1 style="margin:8px 0 16px;{_attr(self._font())}font-size:26px;line-height:1.25;font-weight:bold;'
            f'color:{self.style.heading_colour};">{escape(text)}</h1>'
        )
        return _row(html, "8px 24px 0"), text

    def _text(self, values: dict, index: int) -> tuple[str, str]:
        html, text = self._paragraphs(values["text"])
        return _row(html, "0 24px 0"), text

    def _image(self, values: dict, index: int) -> tuple[str, str]:
        src = _safe_src(values["src"].strip(), f"block {index + 1} src")
        alt = " ".join(values["alt"].split())
        img = (
            f'<img src="{_attr(src)}" alt="{_attr(alt)}" width="{CONTENT_WIDTH}" '
            f'style="display:block;width:100%;max-width:{CONTENT_WIDTH}px;height:auto;border:0;outline:none;">'
        )
        text = alt
        if values["href"].strip():
            href = self.link(_safe_href(values["href"].strip(), f"block {index + 1} href"))
            img = f'<a href="{_attr(href)}" style="display:block;">{img}</a>'
            text = f"{alt or 'Image'} ({href})"
        return _row(img), text

    def _button_html(self, label: str, href: str) -> str:
        style = self.style
        return (
            '<table role="presentation" cellpadding="0" cellspacing="0" border="0" style="margin:8px 0 16px;">'
            f'<tr><td align="center" bgcolor="{style.button_colour}" style="border-radius:6px;">'
            f'<a href="{_attr(href)}" style="display:inline-block;padding:14px 28px;{_attr(self._font())}'
            f"font-size:16px;font-weight:bold;line-height:1.2;color:{style.button_text_colour};"
            f'text-decoration:none;border-radius:6px;background:{style.button_colour};">{escape(label)}</a>'
            "</td></tr></table>"
        )

    def _button(self, values: dict, index: int) -> tuple[str, str]:
        label = " ".join(values["text"].split())
        href = self.link(_safe_href(values["url"].strip(), f"block {index + 1} url"))
        return _row(self._button_html(label, href)), f"{label} ({href})"

    def _divider(self, values: dict, index: int) -> tuple[str, str]:
        line = (
            '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0">'
            '<tr><td style="border-top:1px solid #E5E7EB;font-size:0;line-height:0;height:1px;">&nbsp;</td></tr>'
            "</table>"
        )
        return _row(line, "8px 24px 24px"), "----"

    def _offer(self, values: dict, index: int) -> tuple[str, str]:
        style = self.style
        title = " ".join(values["title"].split())
        body_html, body_text = self._paragraphs(values["text"], size=15)
        inner, text = [], [title, body_text]
        if values["image"].strip():
            src = _safe_src(values["image"].strip(), f"block {index + 1} image")
            inner.append(
                f'<img src="{_attr(src)}" alt="{_attr(title)}" width="{CONTENT_WIDTH - 42}" '
                'style="display:block;width:100%;height:auto;border:0;margin:0 0 12px;border-radius:4px;">'
            )
        inner.append(
            f'<h2 style="margin:0 0 8px;{_attr(self._font())}font-size:20px;line-height:1.3;'
            f'color:{style.heading_colour};">{escape(title)}</h2>'
        )
        inner.append(body_html)
        if code := values["code"].strip():
            inner.append(
                f'<p style="margin:0 0 12px;{_attr(self._font())}font-size:15px;color:{style.text_colour};">'
                f'Code: <span style="display:inline-block;padding:4px 10px;border:2px dashed {style.button_colour};'
                f'font-weight:bold;letter-spacing:1px;">{escape(code)}</span></p>'
            )
            text.append(f"Code: {code}")
        if values["url"].strip():
            href = self.link(_safe_href(values["url"].strip(), f"block {index + 1} url"))
            inner.append(self._button_html("Get the offer", href))
            text.append(f"Get the offer ({href})")
        box = (
            '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0" '
            f'style="border:2px solid {style.button_colour};border-radius:8px;">'
            f'<tr><td style="padding:18px 20px 6px;">{"".join(inner)}</td></tr></table>'
        )
        return _row(box), "\n".join(part for part in text if part)

    def _html(self, values: dict, index: int) -> tuple[str, str]:
        markup = values["html"]

        def rewrite(match: re.Match) -> str:
            url = html_lib.unescape(match.group(3)).strip()
            if not url.lower().startswith(("http://", "https://")):
                return match.group(0)
            return f"{match.group(1)}{match.group(2)}{_attr(self.link(url))}{match.group(2)}"

        markup = _HREF.sub(rewrite, markup)
        return _row(markup), html_to_text(markup)
