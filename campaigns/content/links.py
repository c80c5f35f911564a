"""Links in content: UTM parameters, Chorus short links with click tracking, and the recipient's own links.

* Every http(s) link gets the brand's UTM parameters, ``utm_medium`` = the
  channel and ``utm_campaign`` = the campaign's slug; parameters already in the
  URL win, fragments stay.
* Email keeps its links (SendGrid's click tracking counts them). SMS, WhatsApp
  and social posts carry ``/l/<code>`` short links instead: one ``ShortLink``
  row per (step, URL), and in a real message ``/l/<code>/<message>.<signature>``
  so the click lands on that message and customer. The signature is a short
  HMAC over code and message id: a click cannot be forged for another message.
* ``/u/`` (unsubscribe), ``/p/`` (preferences) and ``/m/`` (view in browser)
  carry signed tokens (``django.core.signing``, one salt each).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets
import string
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.conf import settings
from django.core import signing
from django.db import IntegrityError, transaction
from django.utils.crypto import constant_time_compare, salted_hmac
from django.utils.html import escape
from django.utils.text import slugify

from campaigns.models import Brand, Campaign, ContentChannel, ShortLink

SHORTENED_CHANNELS = frozenset(
    {ContentChannel.SMS, ContentChannel.WHATSAPP, ContentChannel.MASTODON, ContentChannel.BLUESKY}
)
CODE_ALPHABET = string.ascii_letters + string.digits
CODE_LENGTH = 8
SIGNATURE_LENGTH = 8
MAX_URL_LENGTH = 2000  # ShortLink.url
# A preview has no message: its short links carry this sample id, so they are as long as a real one.
SAMPLE_MESSAGE_ID = 10**7
PREVIEW_TOKEN = "preview"  # noqa: S105 - not a secret: the stand-in token of preview links

# http(s) URLs in plain text; trailing punctuation belongs to the sentence, not the link.
URL_RE = re.compile(r"https?://[^\s<>\"'`]+", re.IGNORECASE)
_TRAILING = ".,;:!?)]}'\""

_UNSUBSCRIBE_SALT = "chorus.links.unsubscribe"
_PREFERENCES_SALT = "chorus.links.preferences"
_VIEW_SALT = "chorus.links.view"
_CLICK_SALT = "chorus.links.click"


class BadToken(ValueError):
    """A link token that was not made by Chorus (or was changed)."""


# --- ids and tokens ----------------------------------------------------------------------


def to_base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    if number < 0:
        raise ValueError("negative id")
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if not number:
            return out


def from_base36(text: str) -> int:
    if not text or len(text) > 13 or not text.isalnum() or not text.isascii():
        raise BadToken(f"{text!r} is not an id")
    return int(text, 36)


def _public(path: str) -> str:
    return f"{settings.CHORUS_PUBLIC_URL}{path}"


def is_chorus_url(url: str) -> bool:
    """Chorus's own links (unsubscribe, preferences, short links) get no UTM and are not shortened."""
    base = settings.CHORUS_PUBLIC_URL
    return url == base or url.startswith(f"{base}/")


@functools.lru_cache(maxsize=16)
def _signer_key(salt: str, secret: str) -> bytes:
    """The HMAC key ``signing.Signer(salt=salt)`` derives from ``secret`` on every call."""
    return hashlib.sha256(f"{salt}signer{secret}".encode()).digest()


def _sign(salt: str, value: str) -> str:
    """``signing.Signer(salt=salt).sign(value)``, byte for byte, without deriving the key each time:
    an email batch signs three tokens per recipient. ``Signer.unsign`` reads them (key rotation included)."""
    digest = hmac.new(_signer_key(salt, settings.SECRET_KEY), value.encode(), hashlib.sha256).digest()
    return f"{value}:{base64.urlsafe_b64encode(digest).rstrip(b'=').decode()}"


def unsubscribe_token(*, customer_id: int, channel: str, message_id: int | None = None) -> str:
    value = f"{to_base36(customer_id)}.{channel}.{to_base36(message_id) if message_id else ''}"
    return _sign(_UNSUBSCRIBE_SALT, value)


def read_unsubscribe_token(token: str) -> tuple[int, str, int | None]:
    """(customer id, channel, message id or None) from an unsubscribe token; ``BadToken`` if forged."""
    try:
        value = signing.Signer(salt=_UNSUBSCRIBE_SALT).unsign(token)
        customer, channel, message = value.split(".")
    except (signing.BadSignature, ValueError):
        raise BadToken("This unsubscribe link is not valid.") from None
    return from_base36(customer), channel, (from_base36(message) if message else None)


def preferences_token(*, customer_id: int) -> str:
    return _sign(_PREFERENCES_SALT, to_base36(customer_id))


def read_preferences_token(token: str) -> int:
    try:
        return from_base36(signing.Signer(salt=_PREFERENCES_SALT).unsign(token))
    except signing.BadSignature:
        raise BadToken("This preferences link is not valid.") from None


def view_token(*, message_id: int) -> str:
    return _sign(_VIEW_SALT, to_base36(message_id))


def read_view_token(token: str) -> int:
    try:
        return from_base36(signing.Signer(salt=_VIEW_SALT).unsign(token))
    except signing.BadSignature:
        raise BadToken("This link is not valid.") from None


def _click_signature(code: str, message_id: int) -> str:
    digest = salted_hmac(_CLICK_SALT, f"{code}.{message_id}", algorithm="sha256").digest()
    return base64.urlsafe_b64encode(digest).decode()[:SIGNATURE_LENGTH]


def click_token(*, code: str, message_id: int) -> str:
    return f"{to_base36(message_id)}.{_click_signature(code, message_id)}"


def read_click_token(code: str, token: str) -> int:
    """The message id a click token names, if it was made for ``code``; else ``BadToken``."""
    message, _, signature = token.partition(".")
    message_id = from_base36(message)
    if not constant_time_compare(signature, _click_signature(code, message_id)):
        raise BadToken("The click signature does not match.")
    return message_id


def recipient_links(*, customer_id: int | None, channel: str, message_id: int | None) -> dict[str, str]:
    """The recipient's unsubscribe, preferences and view-in-browser URLs.

    Without a real message (previews, test sends) they point at a page saying
    the link comes from a preview: nobody can be unsubscribed from a preview.
    """
    if message_id is None or customer_id is None:
        return {
            "unsubscribe": _public(f"/u/{PREVIEW_TOKEN}"),
            "preferences": _public(f"/p/{PREVIEW_TOKEN}"),
            "view_in_browser": _public(f"/m/{PREVIEW_TOKEN}"),
        }
    return {
        "unsubscribe": _public(
            f"/u/{unsubscribe_token(customer_id=customer_id, channel=channel, message_id=message_id)}"
        ),
        "preferences": _public(f"/p/{preferences_token(customer_id=customer_id)}"),
        "view_in_browser": _public(f"/m/{view_token(message_id=message_id)}"),
    }


# --- UTM -----------------------------------------------------------------------------------


def utm_parameters(*, brand: Brand, channel: str, campaign: Campaign | None) -> dict[str, str]:
    """The brand's UTM defaults with ``utm_medium`` = channel and ``utm_campaign`` = the campaign's slug."""
    params = {**brand.utm_defaults, "utm_medium": channel}
    if campaign is not None:
        params["utm_campaign"] = slugify(campaign.name) or f"campaign-{campaign.pk}"
    return params


def add_utm(url: str, params: dict[str, str]) -> str:
    """``url`` with ``params`` added to its query; parameters already there are kept as they are.

    Only http(s) links to other sites: ``mailto:``, ``tel:``, Liquid left in a
    URL and Chorus's own links come back unchanged.
    """
    if not params or is_chorus_url(url):
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return url
    present = {key for key, _ in parse_qsl(parts.query, keep_blank_values=True)}
    missing = {key: value for key, value in params.items() if key not in present}
    if not missing:
        return url
    query = f"{parts.query}&{urlencode(missing)}" if parts.query else urlencode(missing)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def split_urls(text: str) -> list[tuple[str, bool]]:
    """``text`` cut into (piece, is_url) runs, URLs without their trailing punctuation."""
    pieces, position = [], 0
    for match in URL_RE.finditer(text):
        url = match.group(0)
        stripped = url.rstrip(_TRAILING)
        # A closing parenthesis that has its opening one inside the URL belongs to it.
        while len(stripped) < len(url) and url[len(stripped)] == ")" and stripped.count("(") > stripped.count(")"):
            stripped += ")"
        start = match.start()
        if start > position:
            pieces.append((text[position:start], False))
        pieces.append((stripped, True))
        position = start + len(stripped)
    if position < len(text):
        pieces.append((text[position:], False))
    return pieces


# --- short links ---------------------------------------------------------------------------


def _new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def _preview_code(url: str) -> str:
    """A stable code-shaped stand-in for previews, which must not write rows."""
    digest = int.from_bytes(hashlib.sha256(url.encode()).digest()[:8], "big")
    code = ""
    for _ in range(CODE_LENGTH):
        digest, rest = divmod(digest, len(CODE_ALPHABET))
        code += CODE_ALPHABET[rest]
    return code


def short_link_code(*, url: str, step_id: int | None) -> str:
    """The code of the ``ShortLink`` for (step, url), created on first use (safe under concurrent sends)."""
    existing = (
        ShortLink.objects.filter(step_id=step_id, url=url)
        if step_id
        else ShortLink.objects.filter(step__isnull=True, url=url)
    )
    code = existing.values_list("code", flat=True).first()
    if code:
        return code
    for _ in range(5):
        try:
            with transaction.atomic():
                return ShortLink.objects.create(code=_new_code(), url=url, step_id=step_id).code
        except IntegrityError:
            # Another worker created it first, or (rarely) the random code was taken.
            code = existing.values_list("code", flat=True).first()
            if code:
                return code
    raise RuntimeError(f"Could not create a short link for {url!r}.")


class Linker:
    """Rewrites the links of one rendering: UTM for every channel, short links where the channel needs them.

    ``store`` decides whether short links are real rows: a send (``message_id``)
    or a test send stores them; a preview only shows code-shaped stand-ins.
    ``cache`` (a dict the caller keeps for a batch of renders) saves a query
    per link per message.
    """

    def __init__(
        self,
        *,
        brand: Brand,
        channel: str,
        campaign: Campaign | None,
        step_id: int | None = None,
        message_id: int | None = None,
        store: bool = False,
        cache: dict | None = None,
    ):
        self.channel = channel
        self.params = utm_parameters(brand=brand, channel=channel, campaign=campaign)
        self.step_id = step_id
        self.message_id = message_id
        self.store = store or message_id is not None
        self.cache = cache if cache is not None else {}
        self.shorten = channel in SHORTENED_CHANNELS
        self.destinations: list[str] = []

    def url(self, url: str) -> str:
        """The link as it goes out: with UTM, shortened on SMS, WhatsApp and social."""
        url = url.strip()
        if is_chorus_url(url):
            return url
        destination = add_utm(url, self.params)
        if not destination.lower().startswith(("http://", "https://")):
            return destination  # mailto:, tel:
        if destination not in self.destinations:
            self.destinations.append(destination)
        if not self.shorten or len(destination) > MAX_URL_LENGTH:
            return destination
        return self._short(destination)

    def _short(self, destination: str) -> str:
        if self.store:
            key = ("short-link", self.step_id, destination)
            code = self.cache.get(key)
            if code is None:
                code = self.cache[key] = short_link_code(url=destination, step_id=self.step_id)
        else:
            code = _preview_code(destination)
        message_id = self.message_id if self.message_id is not None else (None if self.store else SAMPLE_MESSAGE_ID)
        if message_id is None:
            return _public(f"/l/{code}")
        return _public(f"/l/{code}/{click_token(code=code, message_id=message_id)}")

    def text(self, text: str, *, link_html: Callable[[str, str], str] | None = None) -> str:
        """``text`` with each URL in it rewritten.

        With ``link_html`` the result is HTML: the text is escaped and each URL
        becomes ``link_html(shown, href)`` (shown: the URL as written).
        """
        if "://" not in text:
            return escape(text) if link_html else text
        out = []
        for piece, is_url in split_urls(text):
            if not is_url:
                out.append(escape(piece) if link_html else piece)
            elif link_html:
                out.append(link_html(piece, self.url(piece)))
            else:
                out.append(self.url(piece))
        return "".join(out)
