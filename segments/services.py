"""Writes to segments: create, update, delete, and static member uploads.

Every entry point (UI, API, admin actions) goes through these so a segment is
always stored with rules that validate (node path and reason otherwise), and a
static list upload either lands completely or not at all.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain, islice
from typing import IO, Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from customers.identity import IDENTITY_FIELDS, NORMALIZERS
from customers.models import Customer, Persona
from segments.models import Segment, SegmentMember
from segments.rules import RuleError, validate

UPLOAD_BATCH = 2000
UNKNOWN_REPORT_LIMIT = 1000
# CSV header (normalised: lower case, "_" for spaces and dashes) -> identity field.
# Matching tries the identity columns in IDENTITY_FIELDS order and the first hit wins.
IDENTITY_HEADERS: dict[str, str] = {
    "email": "email",
    "e_mail": "email",
    "email_address": "email",
    "phone": "phone",
    "phone_number": "phone",
    "mobile": "phone",
    "msisdn": "phone",
    "external_id": "external_id",
    "externalid": "external_id",
    "customer_id": "external_id",
    "mastodon_handle": "mastodon_handle",
    "mastodon": "mastodon_handle",
    "bluesky_handle": "bluesky_handle",
    "bluesky": "bluesky_handle",
}
IDENTITY_LABELS = {
    "email": "email",
    "phone": "phone",
    "external_id": "external id",
    "mastodon_handle": "Mastodon handle",
    "bluesky_handle": "Bluesky handle",
}


class UploadMode:
    APPEND = "append"
    REPLACE = "replace"
    CHOICES = (APPEND, REPLACE)


class SegmentUploadError(ValueError):
    """The file as a whole cannot be used (not CSV, no identity column, ...); nothing was changed."""


@dataclass
class UnknownRow:
    line: int
    value: str
    reason: str


@dataclass
class MembersUploadReport:
    """What an upload did. ``unknown`` lists at most ``UNKNOWN_REPORT_LIMIT`` rows; ``unknown_count`` all."""

    mode: str
    identity_columns: list[str] = field(default_factory=list)
    rows: int = 0
    matched: int = 0
    duplicates: int = 0
    added: int = 0
    removed: int = 0
    already_members: int = 0
    unknown_count: int = 0
    unknown: list[UnknownRow] = field(default_factory=list)
    members: int = 0


# --- Create, update, delete -------------------------------------------------------


def _rules_error(exc: RuleError) -> ValidationError:
    return ValidationError({"rules": [f"{exc.path}: {exc.reason}"]})


def _check(segment: Segment) -> None:
    if segment.kind == Segment.Kind.DYNAMIC:
        try:
            validate(segment.rules, segment_id=segment.pk)
        except RuleError as exc:
            raise _rules_error(exc) from None
    elif segment.rules:
        raise ValidationError({"rules": ["A static segment has no rules: its members come from an uploaded list."]})
    segment.full_clean(exclude=["rules"])


@transaction.atomic
def segment_create(*, name: str, description: str = "", kind: str = Segment.Kind.DYNAMIC, rules: Any = None) -> Segment:
    """Create a segment; dynamic ones need a valid rule tree, static ones take none."""
    segment = Segment(name=(name or "").strip(), description=description or "", kind=kind, rules=rules or {})
    _check(segment)
    segment.save()
    return segment


@transaction.atomic
def segment_update(
    *, segment: Segment, name: str | None = None, description: str | None = None, rules: Any = None
) -> Segment:
    """Change a segment's name, description or rules. The kind is fixed at creation.

    Rules are validated with the segment's own id so a reference back to it,
    directly or through other segments, is rejected as a cycle.
    """
    if name is not None:
        segment.name = name.strip()
    if description is not None:
        segment.description = description
    if rules is not None:
        segment.rules = rules
    _check(segment)
    segment.save()
    return segment


def _referenced_segment_ids(node: Any) -> Iterator[int]:
    if isinstance(node, dict):
        if "segment" in node and isinstance(node["segment"], int):
            yield node["segment"]
        for value in node.values():
            yield from _referenced_segment_ids(value)
    elif isinstance(node, list):
        for value in node:
            yield from _referenced_segment_ids(value)


def segment_dependents(*, segment: Segment) -> list[str]:
    """What would break if ``segment`` disappeared: campaigns, segments and personas using it."""
    found = [f"campaign “{name}”" for name in segment.campaigns.values_list("name", flat=True)]
    # Rules are JSON; segments and personas number in the dozens, so read them all.
    for other in Segment.objects.exclude(pk=segment.pk).filter(kind=Segment.Kind.DYNAMIC).only("name", "rules"):
        if segment.pk in set(_referenced_segment_ids(other.rules)):
            found.append(f"segment “{other.name}”")
    for persona in Persona.objects.only("name", "rules"):
        if segment.pk in set(_referenced_segment_ids(persona.rules)):
            found.append(f"persona “{persona.name}”")
    return found


@transaction.atomic
def segment_delete(*, segment: Segment) -> None:
    """Delete a segment nobody uses; otherwise raise ``ValidationError`` naming the users."""
    dependents = segment_dependents(segment=segment)
    if dependents:
        raise ValidationError(f"“{segment.name}” is still used by {', '.join(dependents)}.")
    segment.delete()


# --- Static members ----------------------------------------------------------------


def _normalise_header(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def _text_lines(file: IO[bytes]) -> Iterator[str]:
    text = io.TextIOWrapper(file, encoding="utf-8-sig", newline="")
    try:
        for line in text:
            if "\x00" in line:
                raise SegmentUploadError("This is not a CSV file (it contains binary data).")
            yield line
    except UnicodeDecodeError:
        raise SegmentUploadError("The file is not UTF-8 text. Save the CSV as UTF-8 and upload it again.") from None
    finally:
        text.detach()


def _rows(file: IO[bytes]) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """The header and an iterator of (line number, cells) for the data rows."""
    lines = _text_lines(file)
    first = next(lines, None)
    if first is None or not first.strip():
        raise SegmentUploadError("The file is empty. Upload a CSV whose first row names the column, e.g. email.")
    delimiter = max((",", ";", "\t"), key=first.count) if any(d in first for d in ",;\t") else ","
    reader = csv.reader(chain([first], lines), delimiter=delimiter)
    header = next(reader)

    def data() -> Iterator[tuple[int, list[str]]]:
        try:
            for row in reader:
                if any(cell.strip() for cell in row):
                    yield reader.line_num, row
        except csv.Error as exc:
            raise SegmentUploadError(f"Line {reader.line_num}: this is not valid CSV ({exc}).") from None

    return header, data()


def _identity_columns(header: list[str]) -> dict[str, int]:
    columns: dict[str, int] = {}
    for index, name in enumerate(header):
        identity = IDENTITY_HEADERS.get(_normalise_header(name))
        if identity and identity not in columns:
            columns[identity] = index
    return dict(sorted(columns.items(), key=lambda item: IDENTITY_FIELDS.index(item[0])))


def _batched(iterable: Iterable, size: int) -> Iterator[list]:
    iterator = iter(iterable)
    while batch := list(islice(iterator, size)):
        yield batch


def _match_batch(
    batch: list[tuple[int, list[str]]], columns: dict[str, int], region_column: int | None
) -> Iterator[tuple[int, str, int | None, str]]:
    """For each row: (line, shown value, customer id or None, reason when None)."""
    parsed: list[tuple[int, dict[str, str], dict[str, str], str]] = []
    wanted: dict[str, set[str]] = {identity: set() for identity in columns}
    for line, row in batch:
        region = row[region_column].strip() if region_column is not None and region_column < len(row) else ""
        values, errors, shown = {}, {}, ""
        for identity, index in columns.items():
            raw = row[index].strip() if index < len(row) else ""
            if not raw:
                continue
            shown = shown or raw
            normalise = NORMALIZERS[identity]
            try:
                value = normalise(raw, region=region or None) if identity == "phone" else normalise(raw)
            except ValidationError as exc:
                errors[identity] = exc.messages[0]
                continue
            values[identity] = value
            wanted[identity].add(value)
        parsed.append((line, values, errors, shown))

    found: dict[str, dict[str, int]] = {}
    for identity, values in wanted.items():
        found[identity] = (
            dict(Customer.objects.filter(**{f"{identity}__in": values}).values_list(identity, "pk")) if values else {}
        )

    for line, values, errors, shown in parsed:
        customer_id = next((found[i][v] for i, v in values.items() if v in found[i]), None)
        if customer_id is not None:
            yield line, shown, customer_id, ""
        elif not values and not errors:
            yield line, "", None, f"no {' or '.join(IDENTITY_LABELS[i] for i in columns)} on this row"
        elif not values:
            yield line, shown, None, next(iter(errors.values()))
        else:
            keys = " or ".join(f"{IDENTITY_LABELS[i]} {v}" for i, v in values.items())
            yield line, shown, None, f"no customer with {keys}"


def segment_members_upload(*, segment: Segment, file: IO[bytes], mode: str = UploadMode.APPEND) -> MembersUploadReport:
    """Set the members of a static segment from a CSV of emails, phones or external ids.

    The first row names the columns (``email``, ``phone``, ``external_id``,
    ``mastodon_handle``, ``bluesky_handle``; an optional ``country`` column lets
    national phone numbers parse). Each row is matched to an existing customer by
    the first of its identity columns that finds one; rows that match nobody are
    reported with their line number and reason, repeated customers are counted
    once. ``append`` adds to the current members, ``replace`` makes the file the
    whole list. Either the file is applied completely or, on ``SegmentUploadError``,
    nothing changes.
    """
    if segment.kind != Segment.Kind.STATIC:
        raise SegmentUploadError("Only static segments take an uploaded list; this one is defined by rules.")
    if mode not in UploadMode.CHOICES:
        raise SegmentUploadError(f"Unknown mode {mode!r}; use append or replace.")
    header, rows = _rows(file)
    columns = _identity_columns(header)
    if not columns:
        names = ", ".join(repr(h) for h in header[:6]) or "none"
        raise SegmentUploadError(
            f"No identity column found (columns: {names}). Name one of the columns email, phone or external_id."
        )
    region_column = next((i for i, h in enumerate(header) if _normalise_header(h) in ("country", "region")), None)

    report = MembersUploadReport(mode=mode, identity_columns=list(columns))
    matched: dict[int, None] = {}  # insertion-ordered set: file order is kept
    for batch in _batched(rows, UPLOAD_BATCH):
        for line, shown, customer_id, reason in _match_batch(batch, columns, region_column):
            report.rows += 1
            if customer_id is None:
                report.unknown_count += 1
                if len(report.unknown) < UNKNOWN_REPORT_LIMIT:
                    report.unknown.append(UnknownRow(line=line, value=shown, reason=reason))
            elif customer_id in matched:
                report.duplicates += 1
            else:
                matched[customer_id] = None
    report.matched = len(matched)

    with transaction.atomic():
        # One upload at a time per segment: the second waits and then sees the first's rows.
        Segment.objects.select_for_update().filter(pk=segment.pk).first()
        existing = set(SegmentMember.objects.filter(segment=segment).values_list("customer_id", flat=True))
        to_add = [customer_id for customer_id in matched if customer_id not in existing]
        report.already_members = report.matched - len(to_add)
        if mode == UploadMode.REPLACE:
            stale = sorted(existing.difference(matched))
            for chunk in _batched(stale, UPLOAD_BATCH):
                SegmentMember.objects.filter(segment=segment, customer_id__in=chunk).delete()
            report.removed = len(stale)
        now = timezone.now()
        SegmentMember.objects.bulk_create(
            (SegmentMember(segment=segment, customer_id=customer_id, added_at=now) for customer_id in to_add),
            batch_size=UPLOAD_BATCH,
            ignore_conflicts=True,
        )
        report.added = len(to_add)
        Segment.objects.filter(pk=segment.pk).update(updated_at=now)
        report.members = len(existing) - report.removed + report.added
    return report
