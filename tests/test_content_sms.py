"""SMS billing: GSM-7 vs UCS-2, character and segment counts, cost per country."""

from __future__ import annotations

from decimal import Decimal

import pytest

from campaigns.content.sms import GSM7, UCS2, sms_info
from campaigns.models import SmsPrice


def info(text: str, country: str = ""):
    # No country: no price lookup (the counting tests need no database).
    return sms_info(text, country=country, cache=None if country else {("sms-price", ""): None})


@pytest.mark.parametrize(
    ("text", "encoding", "characters"),
    [
        ("Hello! 20% off @ Northwind, ends 31/05. Reply STOP to opt out", GSM7, 61),
        ("Zürich, Ñoño, Ærø: £5, ¥6, €7", GSM7, 30),  # € is an extension character: 2
        ("Ñandú", UCS2, 5),  # GSM-7 has ù but not ú
        ("{brackets} [and] ~tilde~ ^caret^ |pipe| \\back", GSM7, 56),  # 11 extension characters
        ("Kraków", UCS2, 6),  # ó is not in GSM-7
        ("Wiśniewski", UCS2, 10),
        ("Hi 😀", UCS2, 5),  # an emoji outside the BMP is two UTF-16 code units
        ("“Smart quotes”", UCS2, 14),
        ("", GSM7, 0),
    ],
)
def test_encoding_and_character_count(text, encoding, characters):
    result = info(text)
    assert (result.encoding, result.characters) == (encoding, characters)


def test_non_gsm_characters_are_named_once_in_order():
    assert info("Kraków, Łódź, ó again 😀").non_gsm == ("ó", "Ł", "ź", "😀")
    assert info("plain").non_gsm == ()


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("", 0),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),  # 160 units
        ("€" * 81, 2),
        ("ó" * 70, 1),
        ("ó" * 71, 2),
        ("ó" * 134, 2),
        ("ó" * 135, 3),
        ("😀" * 35, 1),  # 70 code units
        ("😀" * 36, 2),
    ],
)
def test_segment_count_at_the_boundaries(text, segments):
    assert info(text).segments == segments


def test_an_extension_character_is_never_split_across_segments():
    # 306 units would fill two segments exactly, but the escape and its € cannot straddle them.
    text = "a" * 152 + "€" + "b" * 152
    assert info(text).characters == 306
    assert info(text).segments == 3


def test_a_surrogate_pair_is_never_split_across_segments():
    text = "ó" * 66 + "😀" + "ó" * 66  # 134 code units, but the emoji cannot straddle units 67 and 68
    assert info(text).characters == 134
    assert info(text).segments == 3


@pytest.mark.django_db
def test_cost_is_segments_times_the_countrys_price():
    SmsPrice.objects.create(country="DE", price_per_segment=Decimal("0.0850"), currency="EUR")
    assert info("a" * 200, country="DE").cost == "0.1700 EUR"
    assert info("a" * 200, country="de").cost == "0.1700 EUR"


@pytest.mark.django_db
def test_without_a_price_row_the_default_price_applies(settings):
    settings.CHORUS_SMS_DEFAULT_PRICE = "0.0079 USD"
    assert info("a" * 400, country="PL").cost == "0.0237 USD"
    settings.CHORUS_SMS_DEFAULT_PRICE = ""
    assert info("hello", country="PL").cost == ""


@pytest.mark.django_db
def test_prices_are_read_once_per_batch(django_assert_num_queries):
    SmsPrice.objects.create(country="GB", price_per_segment=Decimal("0.0400"), currency="GBP")
    cache: dict = {}
    with django_assert_num_queries(1):
        for _ in range(5):
            assert sms_info("hi", country="GB", cache=cache).cost == "0.0400 GBP"
