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
# Django's EmailValidator patterns (user dot-atom, host, domain labels, TLD) with
# the character classes restricted to ASCII: whatever this matches (after
# lower-casing), validate_email accepts too. Quoted local parts, IP literals,
# "localhost" and IDN domains are left to validate_email itself.
_PLAIN_EMAIL = re.compile(
    r"[-!#$%&'*+/=?^_`{}|~0-9a-z]+(?:\.[-!#$%&'*+/=?^_`{}|~0-9a-z]+)*"
    r"@[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
    r"(?:\.(?!-)[a-z0-9-]{1,63}(?<!-))*"
    r"\.(?!-)(?:[a-z-]{2,63}|xn--[a-z0-9]{1,59})(?<!-)"
)
_EMAIL_MAX_LENGTH = 320  # EmailValidator's own limit (RFC 3696)
_PLAIN_PHONE = re.compile(r"\+?[0-9]{3,20}")
_PHONE_REASONS = {
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
    phonenumbers.ValidationResult.TOO_SHORT: "too short",
    phonenumbers.ValidationResult.TOO_LONG: "too long",
    phonenumbers.ValidationResult.INVALID_LENGTH: "wrong length for its country",
}


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def normalize_email(value: str | None) -> str | None:
    """Lower-cased ``value`` if Django's ``validate_email`` accepts it, else ``ValidationError``.

    Plain ASCII addresses are checked with one precompiled regex (``_PLAIN_EMAIL``,
    Django's own patterns restricted to ASCII, so it accepts a subset of what
    ``validate_email`` accepts); anything else takes the full validator.
    """
    if _blank(value):
        return None
    email = str(value).strip().lower()
    if len(email) <= _EMAIL_MAX_LENGTH and email.isascii() and _PLAIN_EMAIL.fullmatch(email):
        return email
    return _normalize_email_slow(value, email)


def _normalize_email_slow(value: object, email: str) -> str:
    try:
        validate_email(email)
    except ValidationError:
        raise ValidationError(f"{value!r} is not a valid email address.") from None
    return email


def normalize_phone(value: str | None, *, region: str | None = None) -> str | None:
    """E.164 form of ``value``; national numbers need ``region`` (ISO country code).

    Numbers written as plain digits (``+48600100200``, ``+48 600 100 200``, or a
    national ``600 100 200`` with ``region``) are checked against the
    ``phonenumbers`` metadata directly (see ``_phone_fast``), with exactly the
    result of the full parse; anything else, and every invalid number (for its
    reason), goes through ``phonenumbers.parse``.
    """
    if _blank(value):
        return None
    raw = str(value).strip()
    fast = _phone_fast(raw, region)
    if fast is not None:
        return fast
    return _normalize_phone_slow(raw, region)


def _normalize_phone_slow(raw: str, region: str | None) -> str:
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


# --- Fast path for phone numbers --------------------------------------------
#
# ``phonenumbers.parse`` + ``is_possible_number_with_reason`` + ``is_valid_number``
# cost 30-45 µs a number; an import validates a million. For input that is just
# digits (optionally after "+", with spaces) the same decisions reduce to a few
# dictionary look-ups and precompiled regexes over the same metadata. Every step
# below mirrors phonenumbers (parse: ``_maybe_extract_country_code``,
# ``_maybe_strip_national_prefix_carrier_code``, the leading-zero handling;
# ``_test_number_length``; ``region_code_for_number``; ``_number_type_helper``),
# and wherever phonenumbers would take a less common branch (a national or IDD
# prefix to strip, leading zeros, a non-geographic calling code, an impossible or
# invalid number) the fast path returns None and the full parse decides.


class _RegionRules:
    """One region's validity check: ``_number_type_helper(nsn, metadata) != UNKNOWN``.

    That is: the general description matches and so does some number type, each
    description being "length among its possible lengths (if it lists any) and
    the pattern matches in full". Per length of national number this is folded
    into one precompiled regex, ``(?=general$)(?:type1|type2|...)``.
    """

    __slots__ = ("by_length", "general", "leading_digits", "types")

    def __init__(self, metadata: phonenumbers.PhoneMetadata) -> None:
        self.general = _desc_rule(metadata.general_desc)
        self.leading_digits = re.compile(metadata.leading_digits) if metadata.leading_digits else None
        descs = [
            metadata.fixed_line,
            metadata.premium_rate,
            metadata.toll_free,
            metadata.shared_cost,
            metadata.voip,
            metadata.personal_number,
            metadata.pager,
            metadata.uan,
            metadata.voicemail,
        ]
        if not metadata.same_mobile_and_fixed_line_pattern:
            descs.insert(1, metadata.mobile)
        self.types = [rule for rule in map(_desc_rule, descs) if rule is not None]
        self.by_length: dict[int, re.Pattern | None] = {}

    def has_type(self, nsn: str) -> bool:
        length = len(nsn)
        try:
            check = self.by_length[length]
        except KeyError:
            check = self.by_length[length] = self._compile(length)
        return check is not None and check.fullmatch(nsn) is not None

    def _compile(self, length: int) -> re.Pattern | None:
        def applies(rule: tuple[frozenset, str | None] | None) -> bool:
            return rule is not None and rule[1] is not None and (not rule[0] or length in rule[0])

        if not applies(self.general):
            return None
        types = [rule[1] for rule in self.types if applies(rule)]
        if not types:
            return None
        return re.compile(f"(?=(?:{self.general[1]})$)(?:{'|'.join(f'(?:{t})' for t in types)})")


class _ParseRules:
    """How ``parse()`` treats a national number under one region's metadata: the national prefix it strips."""

    __slots__ = ("general", "local_lengths", "possible_lengths", "prefix", "simple_prefix")

    def __init__(self, metadata: phonenumbers.PhoneMetadata) -> None:
        general = metadata.general_desc
        self.general = re.compile(general.national_number_pattern) if general.national_number_pattern else None
        self.possible_lengths = sorted(general.possible_length or ())
        self.local_lengths = frozenset(general.possible_length_local_only or ())
        pattern = metadata.national_prefix_for_parsing
        self.prefix = re.compile(pattern) if pattern else None
        # A plain digit prefix (0 in most of Europe, 8 in Russia, 1 in the US) without a transform rule
        # is stripped by a rule simple enough to mirror; anything fancier is left to phonenumbers.
        self.simple_prefix = bool(pattern and pattern.isdigit() and not metadata.national_prefix_transform_rule)

    def strip(self, nsn: str) -> str | None:
        """``nsn`` after parse()'s national prefix handling, or None when phonenumbers must decide.

        Mirrors ``_maybe_strip_national_prefix_carrier_code`` and parse()'s rule that
        the stripped number is kept unless its length test says too short, local
        only or invalid length.
        """
        if self.prefix is None:
            return nsn
        match = self.prefix.match(nsn)
        if match is None:
            return nsn
        if not self.simple_prefix or not self.possible_lengths:
            return None
        rest = nsn[match.end() :]
        general = self.general
        if general is not None and general.fullmatch(nsn) and not general.fullmatch(rest):
            return nsn  # the original is a viable number and the stripped one is not
        length, lengths = len(rest), self.possible_lengths
        if length in self.local_lengths:
            return nsn  # IS_POSSIBLE_LOCAL_ONLY
        if length < lengths[0]:
            return nsn  # TOO_SHORT
        if length == lengths[0] or length > lengths[-1] or length in lengths[1:]:
            return rest  # IS_POSSIBLE or TOO_LONG
        return nsn  # INVALID_LENGTH


class _CallingCode:
    """What the fast path needs about one country calling code."""

    __slots__ = ("code", "local_lengths", "parse", "possible_lengths", "regions")

    def __init__(self, code: int, main: phonenumbers.PhoneMetadata, regions: list) -> None:
        self.code = code
        self.possible_lengths = frozenset(main.general_desc.possible_length)
        self.local_lengths = frozenset(main.general_desc.possible_length_local_only or ())
        self.parse = _ParseRules(main)  # "+<code>..." is parsed with the main region's metadata
        self.regions = regions  # [(region code, _RegionRules)] in phonenumbers' order


class _DefaultRegion:
    """A default region for national numbers: its calling code and the prefixes parse() strips."""

    __slots__ = ("calling_code", "code_digits", "idd", "parse")

    def __init__(self, metadata: phonenumbers.PhoneMetadata, calling_code: _CallingCode) -> None:
        self.calling_code = calling_code
        self.code_digits = str(metadata.country_code)
        self.idd = re.compile(metadata.international_prefix) if metadata.international_prefix else None
        self.parse = _ParseRules(metadata)


def _desc_rule(desc: phonenumbers.PhoneNumberDesc | None) -> tuple[frozenset, str | None] | None:
    if desc is None:
        return None
    return frozenset(desc.possible_length or ()), desc.national_number_pattern or None


_CODES_BY_DIGITS = {str(code): code for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE}
_CALLING_CODES: dict[int, _CallingCode | None] = {}
_DEFAULT_REGIONS: dict[str, _DefaultRegion | None] = {}


def _calling_code(code: int) -> _CallingCode | None:
    """Rules for ``code``, built on first use; None for codes the fast path leaves to phonenumbers."""
    try:
        return _CALLING_CODES[code]
    except KeyError:
        pass
    info = None
    region_codes = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(code)
    main_region = phonenumbers.region_code_for_country_code(code)
    main = phonenumbers.PhoneMetadata.metadata_for_region(main_region, None)
    if region_codes and main_region != phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY and main is not None:
        regions = []
        for region in region_codes:
            metadata = phonenumbers.PhoneMetadata.metadata_for_region(region.upper(), None)
            if metadata is not None:
                regions.append((region, _RegionRules(metadata)))
        info = _CallingCode(code, main, regions)
    _CALLING_CODES[code] = info
    return info


def _default_region(region: str) -> _DefaultRegion | None:
    try:
        return _DEFAULT_REGIONS[region]
    except KeyError:
        pass
    info = None
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region, None)
    if region in phonenumbers.SUPPORTED_REGIONS and metadata is not None:
        calling_code = _calling_code(metadata.country_code)
        if calling_code is not None:
            info = _DefaultRegion(metadata, calling_code)
    _DEFAULT_REGIONS[region] = info
    return info


def _phone_fast(raw: str, region: str | None) -> str | None:
    """The E.164 form ``phonenumbers`` would give ``raw``, or None to let it decide."""
    if len(raw) > 40:
        return None
    compact = raw.replace(" ", "") if " " in raw else raw
    if not _PLAIN_PHONE.fullmatch(compact):
        return None
    if compact[0] == "+":
        digits = compact[1:]
        if digits[0] == "0":
            return None
        # Calling codes are prefix-free; phonenumbers tries 1, 2, then 3 digits.
        for size in (1, 2, 3):
            code = _CODES_BY_DIGITS.get(digits[:size])
            if code is not None:
                calling_code = _calling_code(code)
                if calling_code is None:
                    return None
                nsn = digits[size:]
                parse = calling_code.parse
                break
        else:
            return None
    else:
        default = _default_region(region.upper()) if region else None
        if default is None:
            return None
        if default.idd is not None and default.idd.match(compact):
            return None  # an international prefix such as 00: parse() strips it
        if compact.startswith(default.code_digits):
            return None  # maybe the calling code written without "+": parse() decides
        calling_code, nsn, parse = default.calling_code, compact, default.parse
    if len(nsn) < 2:
        return None  # too short to parse
    nsn = parse.strip(nsn)
    if nsn is None or not 2 <= len(nsn) <= 17 or nsn[0] == "0":
        return None  # an unusual prefix, too short or long, or Italian-style leading zeros
    length = len(nsn)
    if length in calling_code.local_lengths or length not in calling_code.possible_lengths:
        return None  # not a possible number: the full path says why
    regions = calling_code.regions
    if len(regions) == 1:
        rules = regions[0][1]
    else:
        # region_code_for_number: leading digits when the region has them, else a full type check.
        for _, candidate in regions:
            if candidate.leading_digits is not None:
                if candidate.leading_digits.match(nsn):
                    rules = candidate
                    break
            elif candidate.has_type(nsn):
                rules = candidate
                break
        else:
            return None
    if not rules.has_type(nsn):
        return None
    return f"+{calling_code.code}{nsn}"
