"""Normalising and validating a customer's identity keys.

Every way in (API, bulk upsert, CSV import, admin) goes through these, so the
same person always ends up under the same key: emails lower-cased, phones in
E.164 (parsed by ``phonenumbers``), Mastodon handles as ``@user@host``, Bluesky
handles as a lower-case domain name. Each raises ``ValidationError`` with the
reason a marketer can act on.
"""

from __future__ import annotations

import re

import phonenumbers
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

IDENTITY_FIELDS = ("email", "phone", "external_id", "mastodon_handle", "bluesky_handle")

_MASTODON = re.compile(r"^@?(?P<user>[a-z0-9_]{1,30})@(?P<host>[a-z0-9-]+(\.[a-z0-9-]+)+)$")
_BLUESKY = re.compile(r"^(?=.{3,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
_PHONE_REASONS = {
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
    phonenumbers.ValidationResult.TOO_SHORT: "too short",
    phonenumbers.ValidationResult.TOO_LONG: "too long",
    phonenumbers.ValidationResult.INVALID_LENGTH: "wrong length for its country",
}


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def normalize_email(value: str | None) -> str | None:
    if _blank(value):
        return None
    email = str(value).strip().lower()
    try:
        validate_email(email)
    except ValidationError:
        raise ValidationError(f"{value!r} is not a valid email address.") from None
    return email


def normalize_phone(value: str | None, *, region: str | None = None) -> str | None:
    """E.164 form of ``value``; national numbers need ``region`` (ISO country code)."""
    if _blank(value):
        return None
    raw = str(value).strip()
    try:
        number = phonenumbers.parse(raw, (region or "").upper() or None)
    except phonenumbers.NumberParseException as exc:
        reason = {
            phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: "no country code (start with +)",
            phonenumbers.NumberParseException.NOT_A_NUMBER: "not a phone number",
            phonenumbers.NumberParseException.TOO_SHORT_NSN: "too short",
            phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
            phonenumbers.NumberParseException.TOO_LONG: "too long",
        }.get(exc.error_type, "not a phone number")
        raise ValidationError(f"{raw!r} is not a valid phone number: {reason}.") from None
    possible = phonenumbers.is_possible_number_with_reason(number)
    if possible != phonenumbers.ValidationResult.IS_POSSIBLE:
        reason = _PHONE_REASONS.get(possible, "not a possible number")
        raise ValidationError(f"{raw!r} is not a valid phone number: {reason}.")
    if not phonenumbers.is_valid_number(number):
        raise ValidationError(f"{raw!r} is not a valid phone number: no such number range in its country.")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_external_id(value: str | None) -> str | None:
    if _blank(value):
        return None
    external_id = str(value).strip()
    if len(external_id) > 128:
        raise ValidationError("external_id is longer than 128 characters.")
    return external_id


def normalize_mastodon(value: str | None) -> str | None:
    if _blank(value):
        return None
    handle = str(value).strip().lower()
    match = _MASTODON.match(handle)
    if not match:
        raise ValidationError(f"{value!r} is not a Mastodon handle (for example @anna@mastodon.social).")
    return f"@{match['user']}@{match['host']}"


def normalize_bluesky(value: str | None) -> str | None:
    if _blank(value):
        return None
    handle = str(value).strip().lower().removeprefix("@")
    if not _BLUESKY.match(handle):
        raise ValidationError(f"{value!r} is not a Bluesky handle (for example anna.bsky.social).")
    return handle


NORMALIZERS = {
    "email": normalize_email,
    "phone": normalize_phone,
    "external_id": normalize_external_id,
    "mastodon_handle": normalize_mastodon,
    "bluesky_handle": normalize_bluesky,
}


def normalize_identities(data: dict, *, region: str | None = None) -> dict:
    """Normalise every identity key present in ``data``; errors are collected per field."""
    result, errors = {}, {}
    for field, normalize in NORMALIZERS.items():
        if field not in data:
            continue
        try:
            result[field] = normalize(data[field], region=region) if field == "phone" else normalize(data[field])
        except ValidationError as exc:
            errors[field] = exc.messages
    if errors:
        raise ValidationError(errors)
    return result
