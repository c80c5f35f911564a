"""Creating and updating customer records, one at a time or 10,000 at a time.

Every write resolves identity the same way. Each identity key present in the
input (email, phone, external_id, mastodon_handle, bluesky_handle) is
normalised (``customers.identity``; a phone without ``+`` is read in the row's
``country``) and looked up: no match creates a customer, one match updates it,
matches on two or more customers raise ``IdentityConflict`` naming them.
Customers are merged only by the explicit merge service, never silently here.
Erased customers are never matched or updated.

Update semantics: the fields given overwrite the stored ones (a blank identity
clears it); ``attributes`` are merged shallowly, a key set to ``null`` removes
it. Consents given with a write are appended to the ledger (a change of state
also lands on the timeline), and personas are recomputed once per call.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from config.db import chunks, insert_many, update_many
from customers.identity import IDENTITY_FIELDS, normalize_identities
from customers.models import Channel, Consent, Customer, iana_timezones
from customers.services.consent import ConsentChange, consents_record
from customers.services.personas import personas_assign

PROFILE_FIELDS = ("first_name", "last_name", "locale", "timezone", "country", "city")
WRITABLE_FIELDS = (*IDENTITY_FIELDS, *PROFILE_FIELDS, "attributes")
BULK_LIMIT = 10_000
# Rows per IN (...) lookup: well under SQLite's and PostgreSQL's parameter limits.
_CHUNK = 2_000

_COUNTRY = re.compile(r"^[A-Z]{2}$")
LOCALE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")
_CHANNELS = frozenset(Channel.values)
_STATUSES = frozenset(Consent.Status.values)
_NEEDS_IDENTITY = f"A customer needs at least one of {', '.join(IDENTITY_FIELDS)}."


class IdentityConflict(ValidationError):
    """The identities given belong to other customers than the one being written.

    ``matches`` maps each identity field to the id of the customer holding that
    value; the message names them all ("email matches customer 12, phone
    matches customer 40").
    """

    def __init__(self, matches: dict[str, int]):
        self.matches = dict(matches)
        detail = ", ".join(f"{name} matches customer {pk}" for name, pk in self.matches.items())
        super().__init__(
            f"Identity conflict: {detail}. Merge the customers or correct the identities.", code="identity_conflict"
        )


class RowStatus:
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    ERROR = "error"
    CONFLICT = "conflict"


@dataclass
class RowResult:
    """What happened to one row of a bulk upsert (``index`` is its position in the input)."""

    index: int
    status: str
    id: int | None = None
    errors: dict[str, list[str]] = field(default_factory=dict)
    conflicts: dict[str, int] = field(default_factory=dict)


@dataclass
class _Row:
    index: int
    cleaned: dict[str, Any]
    identities: dict[str, str]
    consents: dict[str, str]


# --- validation ----------------------------------------------------------------


NUL_MESSAGE = "Contains a NUL character (\\u0000), which cannot be stored."


def contains_nul(value: Any) -> bool:
    """Whether any text in ``value`` (dict keys and nested values included) holds a NUL, which PostgreSQL refuses."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(contains_nul(key) or contains_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(contains_nul(item) for item in value)
    return False


def error_dict(exc: ValidationError) -> dict[str, list[str]]:
    """A ValidationError as ``{field: [messages]}``; errors not about one field go under non_field_errors."""
    if hasattr(exc, "error_dict"):
        detail = exc.message_dict
        if "__all__" in detail:
            detail["non_field_errors"] = detail.pop("__all__")
        return detail
    return {"non_field_errors": exc.messages}


def _clean_profile(name: str, value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValidationError("Must be text.")
    value = value.strip()
    if name == "country":
        value = value.upper()
        if value and not _COUNTRY.match(value):
            raise ValidationError(f"{value!r} is not an ISO 3166-1 alpha-2 country code (for example PL).")
        return value
    max_length = Customer._meta.get_field(name).max_length
    if len(value) > max_length:
        raise ValidationError(f"At most {max_length} characters (got {len(value)}).")
    if name == "timezone" and value and value not in iana_timezones():
        raise ValidationError(f"{value!r} is not an IANA time zone (for example Europe/Warsaw).")
    elif name == "locale" and value and not LOCALE.match(value):
        raise ValidationError(f"{value!r} is not a locale (for example pl or en-GB).")
    return value


def _clean_consents(consents: Any) -> dict[str, str]:
    if consents is None:
        return {}
    if not isinstance(consents, dict):
        raise ValidationError({"consents": ['Must be an object of channel to status, e.g. {"email": "opted_in"}.']})
    problems = []
    for channel, status in consents.items():
        if channel not in _CHANNELS:
            problems.append(f"Unknown channel {channel!r}; use one of {', '.join(Channel.values)}.")
        elif status not in _STATUSES:
            problems.append(f"{channel}: {status!r} is not a consent status; use opted_in or opted_out.")
    if problems:
        raise ValidationError({"consents": problems})
    return dict(consents)


def customer_clean(data: Any, *, default_country: str = "") -> dict[str, Any]:
    """Validated, normalised values for the writable fields in ``data``.

    Only the fields present come back (identities as ``None`` when blank).
    Raises ``ValidationError`` naming every bad field; unknown keys are errors
    too, so a typo never disappears silently. A phone without ``+`` is read in
    ``data["country"]``, or ``default_country`` when the data has none.
    """
    if not isinstance(data, dict):
        raise ValidationError("Each customer must be a JSON object.")
    errors: dict[str, list[str]] = {}
    for name, value in data.items():
        if name not in WRITABLE_FIELDS:
            errors[name] = [f"Unknown or read-only field; writable fields are {', '.join(WRITABLE_FIELDS)}."]
        elif contains_nul(value):
            errors[name] = [NUL_MESSAGE]
    data = {name: value for name, value in data.items() if name not in errors}
    cleaned: dict[str, Any] = {}
    for name in PROFILE_FIELDS:
        if name in data:
            try:
                cleaned[name] = _clean_profile(name, data[name])
            except ValidationError as exc:
                errors[name] = exc.messages
    if "attributes" in data:
        if isinstance(data["attributes"], dict):
            cleaned["attributes"] = data["attributes"]
        else:
            errors["attributes"] = ['Must be a JSON object, e.g. {"tier": "gold"}.']
    region = cleaned.get("country") or default_country or None
    try:
        identities = normalize_identities({k: data[k] for k in IDENTITY_FIELDS if k in data}, region=region)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    else:
        for name, value in identities.items():
            max_length = Customer._meta.get_field(name).max_length
            if value is not None and len(value) > max_length:
                errors[name] = [f"At most {max_length} characters (got {len(value)})."]
        cleaned.update(identities)
    if errors:
        raise ValidationError(errors)
    return cleaned


def _check_source(source: str) -> None:
    if source not in Consent.Source.values:
        raise ValueError(f"Unknown consent source {source!r}.")


# --- resolution ----------------------------------------------------------------


def _holders(identities: dict[str, str | None], *, exclude_pk: int | None = None) -> dict[str, Customer]:
    """identity field -> the customer holding the given value (erased ones included, so callers can refuse)."""
    query = Q()
    for name, value in identities.items():
        if value:
            query |= Q(**{name: value})
    if not query:
        return {}
    customers = Customer.objects.filter(query)
    if exclude_pk is not None:
        customers = customers.exclude(pk=exclude_pk)
    found = {}
    for customer in customers.only("pk", "erased_at", *IDENTITY_FIELDS):
        for name, value in identities.items():
            if value and getattr(customer, name) == value:
                found[name] = customer
    return {name: found[name] for name in IDENTITY_FIELDS if name in found}


def _refuse_erased(holders: dict[str, Customer]) -> None:
    erased = {name: [f"This {name} belonged to an erased customer."] for name, c in holders.items() if c.erased_at}
    if erased:
        raise ValidationError(erased)


def _apply(customer: Customer, cleaned: dict[str, Any]) -> list[str]:
    """Set ``cleaned`` on ``customer`` (attributes merged); return the names of the fields that changed."""
    changed = []
    for name, value in cleaned.items():
        if name == "attributes":
            merged = dict(customer.attributes) if isinstance(customer.attributes, dict) else {}
            for key, item in value.items():
                if item is None:
                    merged.pop(key, None)
                else:
                    merged[key] = item
            if merged != customer.attributes:
                customer.attributes = merged
                changed.append(name)
        elif getattr(customer, name) != value:
            setattr(customer, name, value)
            changed.append(name)
    return changed


def _raise_if_held(identities: dict[str, str | None], *, exclude_pk: int | None = None) -> None:
    holders = _holders(identities, exclude_pk=exclude_pk)
    _refuse_erased(holders)
    if holders:
        raise IdentityConflict({name: c.pk for name, c in holders.items()})


def _save_or_conflict(customer: Customer, identities: dict[str, str | None], **kwargs) -> None:
    """Save; if a concurrent writer took one of the identities since we looked, report it as a conflict."""
    try:
        with transaction.atomic():
            customer.save(**kwargs)
    except IntegrityError:
        _raise_if_held(identities, exclude_pk=customer.pk)
        raise


def _record_consents(customer: Customer, consents: dict[str, str], source: str) -> None:
    consents_record(
        changes=[ConsentChange(customer.pk, channel, status, source) for channel, status in consents.items()]
    )


# --- one customer --------------------------------------------------------------


@transaction.atomic
def customer_create(
    *, data: dict, consents: dict[str, str] | None = None, source: str = Consent.Source.API
) -> Customer:
    """Create a customer, with optional initial consents per channel.

    Raises ``ValidationError`` for bad fields and ``IdentityConflict`` when any
    identity already belongs to a customer (creating never updates).
    """
    _check_source(source)
    cleaned = customer_clean(data)
    consents = _clean_consents(consents)
    customer = Customer()
    _apply(customer, cleaned)
    if not any(getattr(customer, name) for name in IDENTITY_FIELDS):
        raise ValidationError(_NEEDS_IDENTITY)
    identities = {name: getattr(customer, name) for name in IDENTITY_FIELDS}
    _raise_if_held(identities)
    _save_or_conflict(customer, identities)
    _record_consents(customer, consents, source)
    personas_assign(customer_ids=[customer.pk])
    customer.refresh_from_db(fields=["persona"])
    return customer


def customer_upsert(*, data: dict, consents: dict[str, str] | None = None, source: str) -> tuple[Customer, bool]:
    """Create or update the customer the identities in ``data`` resolve to; returns (customer, created).

    Raises ``ValidationError`` naming bad fields, and ``IdentityConflict`` when
    the identities match two or more different customers. A concurrent insert
    of the same identity is resolved by retrying once (it then updates).
    """
    _check_source(source)
    cleaned = customer_clean(data)
    consents = _clean_consents(consents)
    identities = {name: cleaned[name] for name in IDENTITY_FIELDS if cleaned.get(name)}
    if not identities:
        raise ValidationError(_NEEDS_IDENTITY)
    for attempt in (1, 2):
        try:
            with transaction.atomic():
                return _upsert_one(cleaned, identities, consents, source)
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _upsert_one(
    cleaned: dict[str, Any], identities: dict[str, str], consents: dict[str, str], source: str
) -> tuple[Customer, bool]:
    holders = _holders(identities)
    _refuse_erased(holders)
    if len({c.pk for c in holders.values()}) > 1:
        raise IdentityConflict({name: c.pk for name, c in holders.items()})
    if holders:
        pk = next(iter(holders.values())).pk
        customer = Customer.objects.select_for_update().get(pk=pk)
        changed = _apply(customer, cleaned)
        if changed:
            customer.save(update_fields=[*changed, "updated_at"])
        created = False
    else:
        customer = Customer()
        _apply(customer, cleaned)
        customer.save()
        created = True
    _record_consents(customer, consents, source)
    personas_assign(customer_ids=[customer.pk])
    customer.refresh_from_db(fields=["persona"])
    return customer, created


@transaction.atomic
def customer_update(*, customer: Customer, data: dict, consents: dict[str, str] | None = None, source: str) -> Customer:
    """Update ``customer`` with ``data`` (upsert semantics); returns the updated record, freshly loaded.

    Raises ``ValidationError`` for bad fields or an erased customer, and
    ``IdentityConflict`` when a new identity value belongs to another customer.
    """
    _check_source(source)
    locked = Customer.objects.select_for_update().live().filter(pk=customer.pk).first()
    if locked is None:
        raise ValidationError("This customer has been erased and cannot be changed.")
    cleaned = customer_clean(data, default_country=locked.country)
    consents = _clean_consents(consents)
    changed = _apply(locked, cleaned)
    if not any(getattr(locked, name) for name in IDENTITY_FIELDS):
        raise ValidationError(_NEEDS_IDENTITY)
    new_identities = {name: getattr(locked, name) for name in changed if name in IDENTITY_FIELDS}
    _raise_if_held(new_identities, exclude_pk=locked.pk)
    if changed:
        _save_or_conflict(locked, new_identities, update_fields=[*changed, "updated_at"])
    _record_consents(locked, consents, source)
    personas_assign(customer_ids=[locked.pk])
    locked.refresh_from_db(fields=["persona"])
    return locked


# --- many customers ------------------------------------------------------------


def customers_bulk_upsert(*, rows: list[dict], source: str) -> list[RowResult]:
    """Upsert up to ``BULK_LIMIT`` rows; one ``RowResult`` per row, in input order.

    Each row holds writable fields plus an optional ``consents`` object. Rows
    are validated in Python, identities resolved with one ``IN`` query per
    identity field, then written set-based (multi-row INSERT / UPDATE) and the
    consent ledger appended in bulk, all in one transaction. A bad row (status ``error``), a row whose
    identities match several customers (``conflict``), or a row repeating an
    identity or customer of an earlier row (``error`` naming that row) is
    skipped and never blocks the others. Rows that change nothing are
    ``unchanged``. Raises ``ValidationError`` only when there are too many rows.
    """
    _check_source(source)
    if len(rows) > BULK_LIMIT:
        raise ValidationError({"customers": [f"At most {BULK_LIMIT:,} customers per call; got {len(rows):,}."]})
    results: dict[int, RowResult] = {}
    parsed: list[_Row] = []
    first_seen: dict[tuple[str, str], int] = {}
    for index, row in enumerate(rows):
        try:
            parsed_row = _parse_row(index, row)
        except ValidationError as exc:
            results[index] = RowResult(index, RowStatus.ERROR, errors=error_dict(exc))
            continue
        duplicates = {
            name: [f"Same {name} as row {first_seen[(name, value)]} of this batch."]
            for name, value in parsed_row.identities.items()
            if (name, value) in first_seen
        }
        if duplicates:
            results[index] = RowResult(index, RowStatus.ERROR, errors=duplicates)
            continue
        for name, value in parsed_row.identities.items():
            first_seen[(name, value)] = index
        parsed.append(parsed_row)

    for attempt in (1, 2):
        try:
            with transaction.atomic():
                written = _bulk_write(parsed, source)
            break
        except IntegrityError:
            # Another writer inserted one of these identities after we looked: look again.
            if attempt == 2:
                raise
    results.update(written)
    return [results[index] for index in range(len(rows))]


def _parse_row(index: int, row: Any) -> _Row:
    if not isinstance(row, dict):
        raise ValidationError("Each customer must be a JSON object.")
    fields = {name: value for name, value in row.items() if name != "consents"}
    errors: dict[str, list[str]] = {}
    cleaned: dict[str, Any] = {}
    consents: dict[str, str] = {}
    try:
        cleaned = customer_clean(fields)
    except ValidationError as exc:
        errors.update(error_dict(exc))
    try:
        consents = _clean_consents(row.get("consents"))
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if errors:
        raise ValidationError(errors)
    identities = {name: cleaned[name] for name in IDENTITY_FIELDS if cleaned.get(name)}
    if not identities:
        raise ValidationError(_NEEDS_IDENTITY)
    return _Row(index, cleaned, identities, consents)


def _bulk_write(parsed: list[_Row], source: str) -> dict[int, RowResult]:
    results: dict[int, RowResult] = {}
    holders: dict[tuple[str, str], tuple[int, bool]] = {}
    for name in IDENTITY_FIELDS:
        values = {row.identities[name] for row in parsed if name in row.identities}
        for chunk in chunks(values, _CHUNK):
            for value, pk, erased_at in Customer.objects.filter(**{f"{name}__in": chunk}).values_list(
                name, "pk", "erased_at"
            ):
                holders[(name, value)] = (pk, erased_at is not None)

    to_create: list[_Row] = []
    to_update: dict[int, _Row] = {}
    for row in parsed:
        matches = {name: holders[(name, value)] for name, value in row.identities.items() if (name, value) in holders}
        erased = {name: [f"This {name} belonged to an erased customer."] for name, (_, e) in matches.items() if e}
        pks = {pk for pk, _ in matches.values()}
        if erased:
            results[row.index] = RowResult(row.index, RowStatus.ERROR, errors=erased)
        elif len(pks) > 1:
            conflict = IdentityConflict({name: pk for name, (pk, _) in matches.items()})
            results[row.index] = RowResult(
                row.index, RowStatus.CONFLICT, errors=error_dict(conflict), conflicts=conflict.matches
            )
        elif pks:
            pk = pks.pop()
            if pk in to_update:
                message = f"Matches the same customer ({pk}) as row {to_update[pk].index} of this batch."
                errors = {"non_field_errors": [message]}
                results[row.index] = RowResult(row.index, RowStatus.ERROR, id=pk, errors=errors)
            else:
                to_update[pk] = row
        else:
            to_create.append(row)

    now = timezone.now()
    customers: dict[int, Customer] = {}
    for chunk in chunks(to_update, _CHUNK):
        customers.update((c.pk, c) for c in Customer.objects.select_for_update().live().filter(pk__in=chunk))
    changes: list[tuple[int, dict[str, Any]]] = []
    changed_rows: set[int] = set()
    pairs: list[tuple[int, _Row]] = []
    for pk, row in to_update.items():
        customer = customers.get(pk)
        if customer is None:  # erased after we looked it up
            results[row.index] = RowResult(
                row.index, RowStatus.ERROR, errors={"non_field_errors": ["This customer has been erased."]}
            )
            continue
        pairs.append((pk, row))
        if changed := _apply(customer, row.cleaned):
            changes.append((pk, {name: getattr(customer, name) for name in changed} | {"updated_at": now}))
            changed_rows.add(row.index)
    update_many(Customer, changes)

    new_rows = []
    for row in to_create:
        values = {**row.cleaned, "created_at": now, "updated_at": now}
        if "attributes" in values:  # as _apply does for a new customer: null means absent
            values["attributes"] = {k: v for k, v in values["attributes"].items() if v is not None}
        new_rows.append(values)
    insert_many(Customer, new_rows)
    new_ids = _ids_by_identity([row.identities for row in to_create])
    pairs += list(zip(new_ids, to_create, strict=True))

    consent_changed = consents_record(
        changes=[
            ConsentChange(pk, channel, status, source, at=now)
            for pk, row in pairs
            for channel, status in row.consents.items()
        ],
        new=new_ids,
    )
    created = {row.index for row in to_create}
    touched = []
    for pk, row in pairs:
        if row.index in created:
            status = RowStatus.CREATED
        elif row.index in changed_rows or pk in consent_changed:
            status = RowStatus.UPDATED
        else:
            status = RowStatus.UNCHANGED
        if status != RowStatus.UNCHANGED:
            touched.append(pk)
        results[row.index] = RowResult(row.index, status, id=pk)
    personas_assign(customer_ids=touched)
    return results


def _ids_by_identity(identities: list[dict[str, str]]) -> list[int]:
    """The ids of just-inserted customers, in order, found by one of their (unique) identities."""
    wanted: dict[str, list[str]] = defaultdict(list)
    keys = []
    for row in identities:
        name, value = next(iter(row.items()))
        wanted[name].append(value)
        keys.append((name, value))
    found = {}
    for name, values in wanted.items():
        for chunk in chunks(values, _CHUNK):
            found.update(
                ((name, v), pk) for v, pk in Customer.objects.filter(**{f"{name}__in": chunk}).values_list(name, "pk")
            )
    return [found[key] for key in keys]
