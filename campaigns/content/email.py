"""The brand's email: responsive table layout with inlined CSS, the plain-text part, List-Unsubscribe headers.

Hand-written table HTML (what every mail client renders the same way): a
600 px column, fluid below that through one small media query, the brand's
logo (or name) on its primary colour, its fonts and colours, a hidden
preheader, the body blocks, and a footer with the legal footer, unsubscribe
and preferences links. A "view in browser" link sits above it all.
"""

from __future__ import annotations

from django.conf import settings
from django.utils.html import escape

from campaigns.content.blocks import readable_on
from campaigns.content.context import absolute_media_url
from campaigns.models import Brand

_STYLE = (
    "body{margin:0;padding:0;-webkit-text-size-adjust:100%;}"
    "table{border-collapse:collapse;}"
    "img{-ms-interpolation-mode:bicubic;}"
    "@media only screen and (max-width:620px){"
    ".chorus-container{width:100% !important;max-width:100% !important;}"
    ".chorus-px{padding-left:16px !important;padding-right:16px !important;}"
    ".chorus-outer{padding:0 !important;}"
    "h1{font-size:22px !important;}"
    "}"
)


def _logo(brand: Brand) -> str:
    colour = readable_on(brand.primary_colour)
    if url := absolute_media_url(brand.logo):
        return (
            f'<img src="{escape(url)}" alt="{escape(brand.name)}" height="40" '
            'style="display:block;height:40px;width:auto;max-width:240px;border:0;outline:none;">'
        )
    return (
        f'<span style="font-family:{escape(brand.font_stack)};font-size:22px;font-weight:bold;'
        f'color:{colour};">{escape(brand.name)}</span>'
    )


def email_html(*, brand: Brand, subject: str, preheader: str, body_html: str, links: dict[str, str]) -> str:
    """The whole HTML document: layout around the rendered blocks (``body_html``, table rows)."""
    font = escape(brand.font_stack)
    muted = "#6B7280"
    # Padding after the preheader keeps clients from filling the preview with the body's first words.
    preheader_html = (
        '<div style="display:none;max-height:0;max-width:0;overflow:hidden;opacity:0;mso-hide:all;'
        f'font-size:1px;line-height:1px;color:{brand.background_colour};">'
        f"{escape(preheader)}{'&#847;&zwnj;&nbsp;' * 40}</div>"
        if preheader
        else ""
    )
    footer_link = f"color:{muted};text-decoration:underline;"
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="x-apple-disable-message-reformatting">'
        '<meta name="color-scheme" content="light">'
        f"<title>{escape(subject)}</title><style>{_STYLE}</style></head>"
        f'<body style="margin:0;padding:0;background:{brand.background_colour};">'
        f"{preheader_html}"
        '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0" '
        f'bgcolor="{brand.background_colour}" style="background:{brand.background_colour};">'
        '<tr><td class="chorus-outer" align="center" style="padding:16px 12px 32px;">'
        '<table class="chorus-container" role="presentation" width="600" cellpadding="0" cellspacing="0" border="0" '
        'style="width:600px;max-width:600px;">'
        f'<tr><td class="chorus-px" align="right" style="padding:0 24px 8px;font-family:{font};font-size:12px;'
        f'color:{muted};"><a href="{escape(links["view_in_browser"])}" style="{footer_link}">View in browser</a>'
        "</td></tr>"
        "</table>"
        '<table class="chorus-container" role="presentation" width="600" cellpadding="0" cellspacing="0" border="0" '
        'bgcolor="#FFFFFF" style="width:600px;max-width:600px;background:#FFFFFF;border-radius:8px;">'
        f'<tr><td class="chorus-px" bgcolor="{brand.primary_colour}" style="padding:20px 24px;'
        f'background:{brand.primary_colour};border-radius:8px 8px 0 0;">{_logo(brand)}</td></tr>'
        '<tr><td style="height:16px;font-size:0;line-height:0;">&nbsp;</td></tr>'
        f"{body_html}"
        '<tr><td style="height:8px;font-size:0;line-height:0;">&nbsp;</td></tr>'
        f'<tr><td class="chorus-px" style="padding:16px 24px 24px;border-top:1px solid #E5E7EB;font-family:{font};'
        f'font-size:12px;line-height:1.6;color:{muted};">'
        f'<p style="margin:0 0 8px;">{escape(brand.legal_footer)}</p>'
        f'<p style="margin:0;"><a href="{escape(links["unsubscribe"])}" style="{footer_link}">Unsubscribe</a>'
        f' &middot; <a href="{escape(links["preferences"])}" style="{footer_link}">Email preferences</a></p>'
        "</td></tr></table>"
        "</td></tr></table></body></html>"
    )


def email_text(*, brand: Brand, body_text: str, links: dict[str, str]) -> str:
    """The plain-text part: the blocks as text, then the legal footer and the unsubscribe URL."""
    return (
        f"{body_text.strip()}\n\n"
        "--\n"
        f"{brand.legal_footer}\n"
        f"Unsubscribe: {links['unsubscribe']}\n"
        f"Email preferences: {links['preferences']}\n"
        f"View in your browser: {links['view_in_browser']}\n"
    )


def email_headers(*, links: dict[str, str]) -> dict[str, str]:
    """RFC 2369 / RFC 8058 one-click unsubscribe headers, handed to the adapter with the message."""
    targets = [f"<{links['unsubscribe']}>"]
    if settings.CHORUS_UNSUBSCRIBE_MAILTO:
        targets.append(f"<mailto:{settings.CHORUS_UNSUBSCRIBE_MAILTO}?subject=unsubscribe>")
    return {"List-Unsubscribe": ", ".join(targets), "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
