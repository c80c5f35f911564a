"""How an SMS is billed: GSM-7 or UCS-2, characters, segments and the estimated cost.

A text made only of the GSM 03.38 basic alphabet and its extension table goes
as GSM-7: 160 characters in one message, 153 per segment once it is split
(the rest carries the concatenation header); an extension character (``€``,
``[``, ``{``...) takes two. Anything else (most emoji, ``ą``, ``ł``, curly
quotes) forces UCS-2 for the whole message: 70 UTF-16 code units, 67 per
segment. A character is never split across segments (an escape and its
extension character, or an emoji's surrogate pair, stay together), so
segments are counted by filling them, as the carriers do.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings

from campaigns.models import SmsPrice

GSM7 = "GSM-7"
UCS2 = "UCS-2"

# GSM 03.38 basic character set (the escape to the extension table is not a character).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: each costs an escape plus the character.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

LIMITS = {GSM7: (160, 153), UCS2: (70, 67)}


@dataclass(frozen=True)
class SmsInfo:
    """How an SMS/WhatsApp text is billed: encoding, characters, segments, estimated cost."""

    encoding: str  # "GSM-7" or "UCS-2"
    characters: int  # in the encoding's units (GSM-7 extension characters count 2)
    segments: int
    cost: str  # e.g. "0.0450 USD", or "" when no price is known for the country
    non_gsm: tuple[str, ...] = ()  # the characters that forced UCS-2


def non_gsm_characters(text: str) -> tuple[str, ...]:
    """The distinct characters of ``text`` that GSM-7 cannot carry, in order of appearance."""
    seen: dict[str, None] = {}
    for char in text:
        if char not in GSM7_BASIC and char not in GSM7_EXTENSION:
            seen.setdefault(char)
    return tuple(seen)


def _units(text: str, encoding: str) -> list[int]:
    """What each character of ``text`` costs in ``encoding``'s units."""
    if encoding == GSM7:
        return [2 if char in GSM7_EXTENSION else 1 for char in text]
    return [2 if ord(char) > 0xFFFF else 1 for char in text]


def segment_count(units: list[int], encoding: str) -> int:
    single, per_segment = LIMITS[encoding]
    total = sum(units)
    if total == 0:
        return 0
    if total <= single:
        return 1
    segments, used = 1, 0
    for unit in units:
        if used + unit > per_segment:
            segments += 1
            used = 0
        used += unit
    return segments


def _default_price() -> tuple[Decimal, str] | None:
    raw = settings.CHORUS_SMS_DEFAULT_PRICE.strip()
    if not raw:
        return None
    amount, currency = raw.split()
    return Decimal(amount), currency


def price_for(country: str, *, cache: dict | None = None) -> tuple[Decimal, str] | None:
    """(price per segment, currency) to ``country``: its ``SmsPrice`` row, else ``CHORUS_SMS_DEFAULT_PRICE``."""
    cache = cache if cache is not None else {}
    key = ("sms-price", (country or "").upper())
    if key not in cache:
        row = SmsPrice.objects.filter(country=key[1]).values_list("price_per_segment", "currency").first()
        cache[key] = (row[0], row[1]) if row else _default_price()
    return cache[key]


def sms_info(text: str, *, country: str = "", cache: dict | None = None) -> SmsInfo:
    """Encoding, characters, segments and estimated cost of ``text`` sent to a number in ``country``."""
    non_gsm = non_gsm_characters(text)
    encoding = UCS2 if non_gsm else GSM7
    units = _units(text, encoding)
    segments = segment_count(units, encoding)
    price = price_for(country, cache=cache)
    cost = f"{(price[0] * segments).quantize(Decimal('0.0001'))} {price[1]}" if price else ""
    return SmsInfo(encoding=encoding, characters=sum(units), segments=segments, cost=cost, non_gsm=non_gsm)
