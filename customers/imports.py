"""CSV import of customers: inspect the file, map its columns, validate every row, upsert by identity.

The flow (UI, API and ``manage.py chorus_import`` all use these services):

1. ``import_create`` reads the whole upload once before anything is stored and
   refuses a file that is not a CSV: binary or not UTF-8 (naming the line),
   no header row, duplicate column names, inconsistent quoting. It stores the
   file on an ``ImportJob`` with the row count and a suggested mapping
   (``mapping_suggest``); status ``mapping``, or ``queued`` when a mapping was given.
2. ``import_confirm`` validates a mapping (``mapping_validate``: every column
   known, every target valid and used once, at least one identity) and queues
   the job; the Celery task ``customers.tasks.import_run`` runs ``import_run``
   after the transaction commits.
3. ``import_run`` streams the file in chunks of rows. Each row is validated in
   Python (identities through ``customers.identity``, time zone, country,
   locale, lengths, consent values, duplicates of an earlier row); each chunk
   is then upserted in one transaction, together with the job's progress
   counters, so progress is what is really committed and memory stays flat.

Mapping targets: ``email``, ``phone``, ``external_id``, ``mastodon_handle``,
``bluesky_handle`` (identities), ``first_name``, ``last_name``, ``locale``,
``timezone``, ``country``, ``city``, ``attributes.<key>``, ``consent.<channel>``
(values opted_in/opted_out, yes/no, true/false, 1/0, subscribed/unsubscribed)
or ``""`` to skip the column.

Row semantics: a row matches the existing customer holding any of its
identities and updates it (only the non-empty cells: an empty cell never
clears a stored value; attributes are merged key by key, numbers and
true/false stored as JSON numbers and booleans); a row matching no one
creates a customer. Rejected, with the reason, and never written: invalid
values; no identity; identities of two different customers (reported, never
merged); an erased customer; a second row for the same identity or the same
customer as an earlier row of the file (both line numbers reported; the first
row is imported). Consent cells append a ledger row with source ``import``
only where the state changes, with a ``consent.changed`` activity, like
``consent_record``. Personas are recomputed for the customers touched.

On PostgreSQL a chunk is validated in Python while the previous one is in the
database: COPY into a temporary staging table, identities resolved by index
look-ups, then ``INSERT ... SELECT`` / ``UPDATE ... FROM`` and set-based consent
inserts. SQLite gets the same validation and outcomes through the ORM in
smaller chunks: correct, not fast.
"""

# SQL in this module is assembled from fixed identifiers only (model tables, the
# temporary tables below, mapping targets from a fixed list); values are parameters.
# ruff: noqa: S608

from __future__ import annotations

import bisect
import codecs
import csv
import io
import itertools
import json
import logging
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePath
from typing import IO, Any

from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import DEFAULT_DB_ALIAS, DatabaseError, IntegrityError, connections, models, transaction
from django.db.models import F
from django.utils import timezone

from customers import tasks
from customers.identity import IDENTITY_FIELDS, NORMALIZERS
from customers.models import Activity, Channel, Consent, Customer, ImportJob, Persona, iana_timezones
from customers.querysets import consent_status_subquery
from customers.services.customers import LOCALE, PROFILE_FIELDS
from customers.services.personas import personas_assign

logger = logging.getLogger(__name__)

FIELD_TARGETS = (*IDENTITY_FIELDS, *PROFILE_FIELDS)
ATTRIBUTE_PREFIX = "attributes."
CONSENT_PREFIX = "consent."
SKIP = ""
PREVIEW_ROWS = 10
# Rows per transaction. PostgreSQL: big enough that per-statement overhead vanishes,
# small enough that two chunks in flight stay well inside the worker's memory budget.
PG_CHUNK_ROWS = 50_000
SQLITE_CHUNK_ROWS = 1_000
# Above this many rows, personas are recomputed once at the end (one UPDATE over all
# customers) instead of per chunk for the ids touched.
PERSONAS_BY_ID_MAX_ROWS = 200_000
PIPELINE_SWITCH_INTERVAL = 0.0005  # seconds, see _pipelined
TEMP_BUFFERS = "256MB"  # PostgreSQL session memory for the staging tables (allocated as used)
# How often an IntegrityError (another writer took an identity between our look-up and
# our write) makes a chunk start over with fresh look-ups.
CHUNK_ATTEMPTS = 3

CONSENT_VALUES = {
    **dict.fromkeys(
        ("opted_in", "opted-in", "opted in", "opt_in", "opt-in", "opt in", "optin", "in", "yes", "y", "true", "t",
         "1", "subscribed", "granted"),
        Consent.Status.OPTED_IN.value,
    ),
    **dict.fromkeys(
        ("opted_out", "opted-out", "opted out", "opt_out", "opt-out", "opt out", "optout", "out", "no", "n", "false",
         "f", "0", "unsubscribed", "revoked", "denied"),
        Consent.Status.OPTED_OUT.value,
    ),
}  # fmt: skip

# ISO 3166-1 alpha-2, officially assigned codes.
COUNTRY_CODES = frozenset((
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ", "BA", "BB", "BD",
    "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS", "BT", "BV", "BW", "BY", "BZ", "CA",
    "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN", "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE",
    "DJ", "DK", "DM", "DO", "DZ", "EC", "EE", "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA",
    "GB", "GD", "GE", "GF", "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK",
    "HM", "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM", "JO", "JP",
    "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC", "LI", "LK", "LR", "LS", "LT",
    "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK", "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS",
    "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA", "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ",
    "OM", "PA", "PE", "PF", "PG", "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS",
    "RU", "RW", "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS", "ST",
    "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO", "TR", "TT", "TV", "TW",
    "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI", "VN", "VU", "WF", "WS", "YE", "YT", "ZA",
    "ZM", "ZW",
))  # fmt: skip
_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]{0,14})")
_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]{0,14})\.[0-9]{1,15}")
_BAD_ATTRIBUTE_KEY = re.compile(r'["\\\x00-\x1f\x7f]')
_NUMERIC_START = frozenset("-0123456789")
_json_string = json.encoder.encode_basestring  # JSON string literal of a str (the C version when available)
# A header cell that is an email address, a phone number or a plain number is data, not a column name.
_LOOKS_LIKE_DATA = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+|\+?[0-9][0-9 ().-]{5,}|-?[0-9]+(?:\.[0-9]+)?")
_DELIMITERS = (",", ";", "\t", "|")
_PACK = "\x1f"  # ASCII unit separator: joins a row's values while it waits for its chunk
_SIGNATURES = (
    (b"PK\x03\x04", "an Excel workbook or ZIP archive; save it as “CSV UTF-8” first"),
    (b"\xd0\xcf\x11\xe0", "an old Excel (.xls) workbook; save it as “CSV UTF-8” first"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive; unpack it first"),
    (b"\xff\xfe", "UTF-16 text; save it as UTF-8 (“CSV UTF-8”)"),
    (b"\xfe\xff", "UTF-16 text; save it as UTF-8 (“CSV UTF-8”)"),
)
_HEADER_ALIASES = {
    "email": ("email", "e mail", "email address", "e mail address", "mail", "emailaddress"),
    "phone": ("phone", "phone number", "mobile", "mobile phone", "mobile number", "cell", "cell phone", "telephone",
              "tel", "msisdn", "phonenumber"),
    "external_id": ("external id", "externalid", "customer id", "customerid", "crm id", "client id", "id"),
    "mastodon_handle": ("mastodon", "mastodon handle"),
    "bluesky_handle": ("bluesky", "bluesky handle", "bsky"),
    "first_name": ("first name", "firstname", "given name", "forename", "first"),
    "last_name": ("last name", "lastname", "surname", "family name", "last"),
    "locale": ("locale", "language", "lang"),
    "timezone": ("timezone", "time zone", "tz"),
    "country": ("country", "country code", "countrycode"),
    "city": ("city", "town"),
}  # fmt: skip
_ALIAS_TARGET = {alias: target for target, aliases in _HEADER_ALIASES.items() for alias in aliases}
_CHANNEL_WORDS = {"email": "email", "e mail": "email", "newsletter": "email", "sms": "sms", "text": "sms",
                  "whatsapp": "whatsapp", "social": "social"}  # fmt: skip
_CONSENT_WORDS = ("consent", "opt in", "optin", "opted in", "subscribed", "subscription", "marketing", "permission")
_CONSENT_HEADER = re.compile(
    rf"^(?:(?P<a>{'|'.join(_CHANNEL_WORDS)})(?: marketing)? (?:{'|'.join(_CONSENT_WORDS)})"
    rf"|(?:{'|'.join(_CONSENT_WORDS)}) (?P<b>{'|'.join(_CHANNEL_WORDS)}))$"
)


class ImportRejected(Exception):
    """The file or the mapping is refused before any row is touched; ``str(exc)`` says why."""

    def __init__(self, message: str, *, field: str = "file") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass
class CsvInspection:
    """What a readable CSV looks like: its columns, first rows and number of data rows."""

    headers: list[str]
    rows: list[list[str]]
    total_rows: int
    delimiter: str


# --- Reading the file ----------------------------------------------------------


def _detect_delimiter(first_line: str) -> str:
    counts = [(first_line.count(d), -i, d) for i, d in enumerate(_DELIMITERS)]
    best = max(counts)
    return best[2] if best[0] else ","


class _Records:
    """The data records of a CSV text stream as ``(line, fields)``.

    ``line`` is where the record starts (the header is line 1; a quoted value may
    span lines). Blank records (empty lines, or only delimiters) are skipped.
    """

    def __init__(self, text: IO[str]) -> None:
        first = text.readline()
        self.delimiter = _detect_delimiter(first)
        self.reader = csv.reader(itertools.chain([first], text), delimiter=self.delimiter, strict=True)
        self.headers: list[str] | None = None
        try:
            header = next(self.reader, None)
        except csv.Error as exc:
            raise ImportRejected(f"Line 1 (the header row) is not valid CSV: {exc}.") from None
        if header is not None:
            self.headers = [name.strip().lstrip("\ufeff").strip() for name in header]

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        reader = self.reader
        last = reader.line_num
        try:
            for fields in reader:
                line, last = last + 1, reader.line_num
                if any(fields):
                    yield line, fields
        except csv.Error as exc:
            raise ImportRejected(f"Line {last + 1} is not valid CSV: {exc} (check the quotes on that line).") from None


@contextmanager
def _open_text(binary: IO[bytes]) -> Iterator[IO[str]]:
    """``binary`` from its start as UTF-8 text (a BOM is dropped), left open afterwards."""
    binary.seek(0)
    text = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="strict", newline="")
    try:
        yield text
    finally:
        text.detach()  # a wrapper that is garbage-collected closes its file; the caller owns it


def _check_bytes(binary: IO[bytes]) -> int:
    """Refuse binary and non-UTF-8 content, naming the line; returns the size in bytes."""
    binary.seek(0)
    head = binary.read(8)
    for signature, what in _SIGNATURES:
        if head.startswith(signature):
            raise ImportRejected(f"This file is {what}, not a CSV.")
    binary.seek(0)
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines = size = 0
    while block := binary.read(1 << 20):
        nul = block.find(b"\x00")
        if nul >= 0:
            line = lines + block.count(b"\n", 0, nul) + 1
            raise ImportRejected(f"This looks like a binary file, not a CSV (line {line} contains a NUL byte).")
        try:
            decoder.decode(block)
        except UnicodeDecodeError as exc:
            line = lines + block.count(b"\n", 0, max(exc.start, 0)) + 1
            raise ImportRejected(
                f"The file is not UTF-8 text (line {line} has bytes that are not UTF-8); "
                "save it as “CSV UTF-8” and upload it again."
            ) from None
        lines += block.count(b"\n")
        size += len(block)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise ImportRejected(
            "The file is not UTF-8 text (it ends in the middle of a character); save it as “CSV UTF-8”."
        ) from None
    return size


def _check_headers(headers: list[str] | None) -> list[str]:
    if not headers or not any(headers):
        raise ImportRejected("The file has no header row: its first line must name the columns (email, phone, ...).")
    for name in headers:
        if _LOOKS_LIKE_DATA.fullmatch(name):
            raise ImportRejected(
                f"The first line looks like data ({name!r}), not column names: add a header row naming the columns."
            )
    seen: dict[str, int] = {}
    for position, name in enumerate(headers, start=1):
        if not name:
            continue
        if name in seen:
            raise ImportRejected(
                f"Column {name!r} appears twice in the header row (columns {seen[name]} and {position})."
            )
        seen[name] = position
    return headers


def csv_inspect(*, file: IO[bytes]) -> CsvInspection:
    """Read the whole of ``file`` and describe it, or raise ``ImportRejected`` saying why it is not a usable CSV.

    Checks, in order: a known non-CSV signature (Excel, ZIP, PDF, gzip, UTF-16),
    NUL bytes, UTF-8, a header row of unique names, and CSV structure (quoting)
    of every record. Counts the data records (blank lines do not count) and
    keeps the first ``PREVIEW_ROWS``.
    """
    if _check_bytes(file) == 0:
        raise ImportRejected("The file is empty.")
    rows: list[list[str]] = []
    total = 0
    with _open_text(file) as text:
        records = _Records(text)
        headers = _check_headers(records.headers)
        for _, fields in records:
            total += 1
            if total <= PREVIEW_ROWS:
                rows.append(fields)
    if total == 0:
        raise ImportRejected("The file has a header row but no data rows.")
    return CsvInspection(headers=headers, rows=rows, total_rows=total, delimiter=records.delimiter)


def import_preview(*, job: ImportJob, rows: int = PREVIEW_ROWS) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The stored file's header and first ``rows`` data rows as ``(line, values)`` (for the mapping page)."""
    with job.file.open("rb") as binary, _open_text(binary) as text:
        records = _Records(text)
        preview: list[tuple[int, list[str]]] = []
        if rows > 0:
            for line, fields in records:
                preview.append((line, fields))
                if len(preview) >= rows:
                    break
        return records.headers or [], preview


# --- Mapping -------------------------------------------------------------------


def _header_key(name: str) -> str:
    return " ".join(re.sub(r"[-_.:/]+", " ", name.strip().lower()).split())


def attribute_target(column: str) -> str:
    """The ``attributes.<key>`` target a column becomes by default: its name in lower-case snake form."""
    return ATTRIBUTE_PREFIX + (_header_key(column).replace(" ", "_") or "column")


def attribute_key_error(key: str) -> str | None:
    """Why ``key`` cannot be an attribute name (same rule as the segment rule language), or None."""
    if not key:
        return "an attribute needs a name"
    if len(key) > 100:
        return "attribute names are at most 100 characters"
    if _BAD_ATTRIBUTE_KEY.search(key):
        return "attribute names cannot contain '\"', '\\' or control characters"
    return None


def _suggest_one(name: str) -> str:
    key = _header_key(name)
    if not key:
        return SKIP
    if name in FIELD_TARGETS:
        return name
    lowered = name.strip().lower()
    if lowered.startswith(CONSENT_PREFIX) and lowered[len(CONSENT_PREFIX) :] in Channel.values:
        return lowered
    if lowered.startswith(ATTRIBUTE_PREFIX) and not attribute_key_error(name.strip()[len(ATTRIBUTE_PREFIX) :]):
        return ATTRIBUTE_PREFIX + name.strip()[len(ATTRIBUTE_PREFIX) :]
    if match := _CONSENT_HEADER.match(key):
        return CONSENT_PREFIX + _CHANNEL_WORDS[match["a"] or match["b"]]
    if key in _ALIAS_TARGET:
        return _ALIAS_TARGET[key]
    return attribute_target(name)


def mapping_suggest(headers: list[str]) -> dict[str, str]:
    """A first guess at the mapping: known names and aliases, consent-looking columns, the rest as attributes.

    A target is suggested once (the first column wins); later columns that would
    map to it become attributes, so the suggestion always passes ``mapping_validate``
    apart from, possibly, the identity requirement.
    """
    mapping: dict[str, str] = {}
    used: set[str] = set()
    for name in headers:
        if not name:
            continue
        target = _suggest_one(name)
        if target in used:
            target = attribute_target(name)
            if target in used:
                target = SKIP
        if target:
            used.add(target)
        mapping[name] = target
    return mapping


def target_error(target: str) -> str | None:
    """Why ``target`` is not a mapping target, or None if it is one."""
    if target == SKIP or target in FIELD_TARGETS:
        return None
    if target.startswith(ATTRIBUTE_PREFIX):
        return attribute_key_error(target[len(ATTRIBUTE_PREFIX) :])
    if target.startswith(CONSENT_PREFIX):
        channel = target[len(CONSENT_PREFIX) :]
        if channel in Channel.values:
            return None
        return f"unknown consent channel {channel!r}; use one of {', '.join(Channel.values)}"
    return (
        f"unknown target {target!r}; use one of {', '.join(FIELD_TARGETS)}, "
        f"attributes.<name>, consent.<channel> or leave it empty to skip the column"
    )


def mapping_validate(*, headers: list[str], mapping: Any) -> dict[str, str]:
    """The mapping for every named column (unmapped ones skipped), or ``ImportRejected`` naming the problem.

    Every key must be a column of the file, every target valid (``target_error``)
    and used by one column only, and at least one column must map to an identity.
    """
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
        raise ImportRejected(
            'The mapping must be an object of column name to target, e.g. {"E-mail": "email"}.', field="mapping"
        )
    columns = [name for name in headers if name]
    unknown = [name for name in mapping if name not in columns]
    if unknown:
        raise ImportRejected(
            f"The file has no column {unknown[0]!r}; its columns are {', '.join(map(repr, columns))}.", field="mapping"
        )
    cleaned = {name: mapping.get(name, SKIP).strip() for name in columns}
    by_target: dict[str, str] = {}
    for name, target in cleaned.items():
        if problem := target_error(target):
            raise ImportRejected(f"Column {name!r}: {problem}.", field="mapping")
        if target == SKIP:
            continue
        if target in by_target:
            raise ImportRejected(
                f"Columns {by_target[target]!r} and {name!r} both map to {target}: map one of them to something else "
                "or skip it.",
                field="mapping",
            )
        by_target[target] = name
    if not any(target in IDENTITY_FIELDS for target in by_target):
        raise ImportRejected(
            f"Map at least one column to an identity ({', '.join(IDENTITY_FIELDS)}) so rows can be matched to "
            "customers.",
            field="mapping",
        )
    return cleaned


# --- Creating and queueing jobs -------------------------------------------------


def _safe_name(name: str) -> str:
    base = PurePath(name or "customers.csv").name.strip() or "customers.csv"
    return base[: ImportJob._meta.get_field("original_name").max_length]


@transaction.atomic
def import_create(
    *,
    file: IO[bytes],
    name: str,
    user=None,
    mapping: dict | None = None,
    start: bool = False,
    enqueue: bool = True,
) -> ImportJob:
    """Check ``file`` (``csv_inspect``), store it and create its ``ImportJob``; raise ``ImportRejected`` otherwise.

    The job's mapping is the suggestion (``mapping_suggest``) overridden by
    ``mapping``. Without ``start`` the job waits in status ``mapping`` for the
    user to review it (the UI, then ``import_confirm``). With ``start`` (API,
    management command) the mapping is validated now and the job queued: its
    task runs after this transaction commits, unless ``enqueue`` is false (the
    caller then runs ``import_run`` itself).
    """
    inspection = csv_inspect(file=file)
    merged = {**mapping_suggest(inspection.headers), **(mapping or {})}
    if start or mapping is not None:
        merged = mapping_validate(headers=inspection.headers, mapping=merged)
    job = ImportJob(
        original_name=_safe_name(name),
        mapping=merged,
        total_rows=inspection.total_rows,
        created_by=user if getattr(user, "is_authenticated", False) else None,
        status=ImportJob.Status.QUEUED if start else ImportJob.Status.MAPPING,
    )
    file.seek(0)
    job.file.save(job.original_name, File(file, name=job.original_name), save=False)
    job.save()
    if start and enqueue:
        _enqueue(job)
    return job


@transaction.atomic
def import_confirm(*, job: ImportJob, mapping: Any) -> ImportJob:
    """Validate ``mapping`` against the job's file and queue the job (only from status ``mapping``)."""
    job = ImportJob.objects.select_for_update().get(pk=job.pk)
    if job.status != ImportJob.Status.MAPPING:
        raise ImportRejected(f"This import is already {job.get_status_display().lower()}.", field="mapping")
    headers, _ = import_preview(job=job, rows=0)
    job.mapping = mapping_validate(headers=headers, mapping=mapping)
    job.status = ImportJob.Status.QUEUED
    job.save(update_fields=["mapping", "status"])
    _enqueue(job)
    return job


def _enqueue(job: ImportJob) -> None:
    job_id = job.pk
    transaction.on_commit(lambda: tasks.import_run.delay(job_id))


# --- Row validation --------------------------------------------------------------


def _max_length(name: str) -> int:
    return Customer._meta.get_field(name).max_length


def _attribute_json(value: str) -> str:
    """CSV text as JSON text: integers and decimals as numbers (as written), true/false as booleans, else a string."""
    if value[0] in _NUMERIC_START:
        if _INTEGER.fullmatch(value) or _DECIMAL.fullmatch(value):
            return value
    elif len(value) in (4, 5):
        lowered = value.lower()
        if lowered in ("true", "false"):
            return lowered
    return _json_string(value)


@dataclass
class _Plan:
    """A validated mapping turned into what the row loop needs."""

    headers: list[str]
    identities: list[tuple[int, str]]  # (column index, field)
    profile: list[tuple[int, str]]
    attributes: list[tuple[int, str]]  # (column index, key)
    consents: list[tuple[int, str]]  # (column index, channel)
    column_of: dict[str, str]  # target -> CSV column name

    @classmethod
    def build(cls, headers: list[str], mapping: dict[str, str]) -> _Plan:
        index = {name: i for i, name in enumerate(headers) if name}
        plan = cls(headers, [], [], [], [], {})
        for name, target in mapping.items():
            if not target or name not in index:
                continue
            i = index[name]
            plan.column_of[target] = name
            if target in IDENTITY_FIELDS:
                plan.identities.append((i, target))
            elif target in PROFILE_FIELDS:
                plan.profile.append((i, target))
            elif target.startswith(ATTRIBUTE_PREFIX):
                plan.attributes.append((i, target[len(ATTRIBUTE_PREFIX) :]))
            else:
                plan.consents.append((i, target[len(CONSENT_PREFIX) :]))
        order = {name: n for n, name in enumerate(FIELD_TARGETS)}
        plan.identities.sort(key=lambda pair: order[pair[1]])
        plan.profile.sort(key=lambda pair: order[pair[1]])
        return plan

    @property
    def identity_fields(self) -> list[str]:
        return [name for _, name in self.identities]

    @property
    def profile_fields(self) -> list[str]:
        return [name for _, name in self.profile]

    @property
    def consent_channels(self) -> list[str]:
        return [channel for _, channel in self.consents]

    @property
    def staged_columns(self) -> list[str]:
        """The staged row's columns after ``line``: identities, profile, attributes (JSON), consents."""
        columns = [*self.identity_fields, *self.profile_fields]
        if self.attributes:
            columns.append("attributes")
        columns += [f"consent_{channel}" for channel in self.consent_channels]
        return columns


def _problem(problems: list[str] | None, text: str) -> list[str]:
    problems = problems or []
    problems.append(text)
    return problems


def _invalid(problems: list[str] | None, column: str, exc: ValidationError) -> list[str]:
    return _problem(problems, f"{column}: {' '.join(message.rstrip('.') for message in exc.messages)}")


def _make_row_checker(plan: _Plan) -> Callable[[int, list[str]], tuple[tuple | None, str | None]]:
    """A function ``(line, values) -> (staged row, None) | (None, reason)`` for this plan.

    The staged row is ``(line, *identities, *profile, attributes JSON, *consents)``
    with ``None`` for empty cells ("not given": never overwrites a stored value).
    Every reason a row is bad is collected, named by its CSV column.

    The function is generated for the mapping as straight-line code, one block
    per mapped column: at a million rows, the loops and dispatch of a generic
    version cost more than the checks themselves.
    """
    headers = plan.headers
    env: dict[str, Any] = {
        "ValidationError": ValidationError,
        "COUNTRY_CODES": COUNTRY_CODES,
        "CONSENT_VALUES": CONSENT_VALUES,
        "TIMEZONES": iana_timezones(),
        "LOCALE": LOCALE,
        "attribute_json": _attribute_json,
        "problem": _problem,
        "invalid": _invalid,
    }
    names: dict[str, str] = {}

    def const(value: Any) -> str:
        """A name bound to ``value`` in the generated function's globals."""
        name = names.get(repr(value))
        if name is None:
            name = names[repr(value)] = f"K{len(names)}"
            env[name] = value
        return name

    width = len(headers)
    code = [
        "def check(line, f):",
        f"    if len(f) != {width}:",
        f"        return None, f'has {{len(f)}} values but the header has {width} columns'",
        "    problems = None",
        "    region = None",
    ]
    country = next((i for i, name in plan.profile if name == "country"), None)
    if country is not None:
        code += [
            f"    region = f[{country}].strip().upper() or None",
            "    if region is not None and region not in COUNTRY_CODES:",
            "        region = None  # reported with the profile fields; a phone on this row then needs a '+'",
        ]
    out = ["line"]
    for i, name in plan.identities:
        env[f"normalize_{name}"] = NORMALIZERS[name]
        column, var = headers[i], f"v{i}"
        out.append(var)
        call = f"normalize_{name}(value, region=region)" if name == "phone" else f"normalize_{name}(value)"
        code += [
            f"    value = f[{i}]",
            f"    {var} = None",
            "    if value:",
            "        try:",
            f"            {var} = {call}",
            "        except ValidationError as exc:",
            f"            problems = invalid(problems, {const(column)}, exc)",
            f"        if {var} is not None and len({var}) > {_max_length(name)}:",
            f"            problems = problem(problems, {const(column)} + f': at most {_max_length(name)} characters '"
            f"f'(got {{len({var})}})')",
        ]
    for i, name in plan.profile:
        column, var = headers[i], f"v{i}"
        out.append(var)
        code += [f"    {var} = f[{i}].strip() or None", f"    if {var} is not None:"]
        if name == "country":
            code += [
                f"        {var} = {var}.upper()",
                f"        if {var} not in COUNTRY_CODES:",
                f"            problems = problem(problems, {const(column)} + f': {{f[{i}]!r}} is not an ISO 3166-1 "
                "alpha-2 country code (e.g. PL)')",
            ]
        elif name == "timezone":
            code += [
                f"        if {var} not in TIMEZONES:",
                f"            problems = problem(problems, {const(column)} + f': {{{var}!r}} is not an IANA time zone "
                "(e.g. Europe/Warsaw)')",
            ]
        else:
            max_length = _max_length(name)
            code += [
                f"        if len({var}) > {max_length}:",
                f"            problems = problem(problems, {const(column)} + f': at most {max_length} characters "
                f"(got {{len({var})}})')",
            ]
            if name == "locale":
                code += [
                    f"        elif not LOCALE.match({var}):",
                    f"            problems = problem(problems, {const(column)} + f': {{{var}!r}} is not a locale "
                    "(e.g. pl or en-GB)')",
                ]
    if plan.attributes:
        out.append("attributes")
        code.append("    parts = []")
        for i, key in plan.attributes:
            code += [
                f"    value = f[{i}].strip()",
                "    if value:",
                f"        parts.append({const(_json_string(key) + ':')} + attribute_json(value))",
            ]
        code.append("    attributes = '{' + ','.join(parts) + '}' if parts else None")
    for i, _ in plan.consents:
        column, var = headers[i], f"v{i}"
        out.append(var)
        code += [
            f"    value = f[{i}].strip()",
            f"    {var} = None",
            "    if value:",
            f"        {var} = CONSENT_VALUES.get(value.lower())",
            f"        if {var} is None:",
            f"            problems = problem(problems, {const(column)} + f': {{value!r}} is not a consent value "
            "(use opted_in/opted_out, yes/no, true/false or 1/0)')",
        ]
    identity_vars = [f"v{i}" for i, _ in plan.identities]
    identity_names = ", ".join(headers[i] for i, _ in plan.identities)
    empty = "is" if len(identity_vars) == 1 else "are all"
    code += [
        "    if problems:",
        "        return None, '; '.join(problems)",
        f"    if {' is None and '.join(identity_vars)} is None:",
        f"        return None, {const(f'no identity: {identity_names} {empty} empty')}",
        f"    return ({', '.join(out)},), None",
    ]
    exec(compile("\n".join(code), "<import row check>", "exec"), env)  # noqa: S102 - generated from fixed templates
    return env["check"]


# --- Chunks ----------------------------------------------------------------------


@dataclass
class _Chunk:
    """A batch of rows: the valid ones staged for the database, the rejected ones with their reasons."""

    records: int = 0  # data rows read (valid + rejected)
    lines: list[int] = field(default_factory=list)  # of the staged rows, ascending
    # Their values as read, each row's joined into one string (a tenth of the memory of
    # a list of strings); a row containing the separator itself is kept as its list.
    packed: list[str | list[str]] = field(default_factory=list)
    staged: list[tuple] = field(default_factory=list)
    rejected: list[tuple[int, str, list[str]]] = field(default_factory=list)  # (line, reason, values)
    payload: bytes = b""  # staged rows as COPY CSV (PostgreSQL)

    def values_of(self, line: int) -> list[str]:
        packed = self.packed[bisect.bisect_left(self.lines, line)]
        return packed.split(_PACK) if isinstance(packed, str) else packed


@dataclass
class _ChunkOutcome:
    created: int
    updated: int
    rejected: list[tuple[int, str]]  # (line, reason) found in the database step
    customer_ids: list[int] = field(default_factory=list)


def _chunks(records: _Records, plan: _Plan, size: int, *, csv_payload: bool) -> Iterator[_Chunk]:
    """Validate ``records`` into chunks of ``size`` data rows.

    Duplicates inside a chunk are caught here (same identity value as an earlier
    row); the database step catches those across chunks and rows that resolve
    to the same customer through different identities.
    """
    check = _make_row_checker(plan)
    identity_positions = [(1 + n, plan.headers[i]) for n, (i, _) in enumerate(plan.identities)]
    chunk = _Chunk()
    seen: list[dict[str, int]] = [{} for _ in identity_positions]
    for line, fields in records:
        chunk.records += 1
        staged, reason = check(line, fields)
        if staged is None:
            chunk.rejected.append((line, reason, fields))
        else:
            duplicate = None
            for (position, column), values in zip(identity_positions, seen, strict=True):
                value = staged[position]
                if value is not None:
                    first = values.get(value)
                    if first is not None:
                        duplicate = f"duplicate: {column} {value!r} is already on line {first}"
                        break
            if duplicate:
                chunk.rejected.append((line, duplicate, fields))
            else:
                for (position, _), values in zip(identity_positions, seen, strict=True):
                    value = staged[position]
                    if value is not None:
                        values[value] = line
                chunk.lines.append(line)
                packed = _PACK.join(fields)
                chunk.packed.append(packed if packed.count(_PACK) == len(fields) - 1 else fields)
                chunk.staged.append(staged)
        if chunk.records >= size:
            yield _finish(chunk, csv_payload)
            chunk = _Chunk()
            seen = [{} for _ in identity_positions]
    if chunk.records:
        yield _finish(chunk, csv_payload)


def _finish(chunk: _Chunk, csv_payload: bool) -> _Chunk:
    if csv_payload and chunk.staged:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(chunk.staged)
        chunk.payload = buffer.getvalue().encode()
        chunk.staged = []  # the payload replaces them
    return chunk


# --- Reasons for rows rejected in the database step ------------------------------------


def _conflict_reason(plan: _Plan, matches: dict[str, int]) -> str:
    detail = ", ".join(f"{plan.column_of[name]} matches customer #{pk}" for name, pk in matches.items())
    return f"identity conflict: {detail}; merge the customers or correct the row (nothing was merged)"


def _same_customer_reason(customer_id: int, first_line: int) -> str:
    return f"duplicate: matches the same customer (#{customer_id}) as line {first_line}"


def _erased_reason(customer_id: int) -> str:
    return f"customer #{customer_id} was erased (GDPR) and is never updated"


def _db_reason(plan: _Plan, matches: dict[str, int | None], erased: bool, earlier_line: int | None) -> str:
    """Why the database step rejected a row, from what its identities resolved to."""
    found = {name: pk for name, pk in matches.items() if pk is not None}
    if len(set(found.values())) > 1:
        return _conflict_reason(plan, found)
    customer_id = next(iter(found.values()))
    if erased:
        return _erased_reason(customer_id)
    if earlier_line is not None:
        return _same_customer_reason(customer_id, earlier_line)
    raise AssertionError(f"row rejected without a reason: {matches}")  # pragma: no cover


# --- Running ----------------------------------------------------------------------------


class _ErrorsFile:
    """The downloadable errors CSV: line, reason, then the row as it was in the file."""

    def __init__(self, headers: list[str]) -> None:
        self.file = tempfile.TemporaryFile("w+b")  # noqa: SIM115 - closed by close()
        self.text = io.TextIOWrapper(self.file, encoding="utf-8", newline="", write_through=True)
        self.writer = csv.writer(self.text)
        self.writer.writerow(["line", "reason", *headers])
        self.count = 0

    def write(self, rows: list[tuple[int, str, list[str]]]) -> None:
        rows.sort(key=lambda row: row[0])
        self.writer.writerows([line, reason, *values] for line, reason, values in rows)
        self.count += len(rows)

    def save_to(self, job: ImportJob) -> None:
        self.text.flush()
        self.file.seek(0)
        stem = PurePath(job.original_name).stem or "import"
        job.errors_file.save(f"{stem}-errors.csv", File(self.file, name="errors.csv"), save=False)

    def close(self) -> None:
        self.text.close()


@dataclass
class ImportProgress:
    """Counts so far, handed to ``on_progress`` after every committed chunk."""

    total_rows: int
    processed_rows: int = 0
    created: int = 0
    updated: int = 0
    rejected: int = 0
    # Seconds spent per step of the database side, summed over chunks (for benchmarks).
    seconds: dict[str, float] = field(default_factory=dict)


def import_run(*, job_id: int, on_progress: Callable[[ImportProgress], None] | None = None) -> ImportJob:
    """Run a queued import to the end; the service behind the Celery task and ``chorus_import --sync``.

    Claims the job (``queued`` -> ``running``, so two workers never run it twice),
    imports chunk by chunk, each chunk's rows and the job's counters committed
    together, then stores the errors file and marks the job ``done``. A job found
    ``running`` was interrupted (the worker died; the broker redelivered the task):
    it is marked ``failed`` saying how far it got; re-importing the file finishes
    it, since rows already imported are matched and updated, not duplicated.
    Returns the job as it ended.
    """
    now = timezone.now()
    claimed = ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.QUEUED).update(
        status=ImportJob.Status.RUNNING,
        started_at=now,
        processed_rows=0,
        created_count=0,
        updated_count=0,
        rejected_count=0,
        error="",
    )
    job = ImportJob.objects.get(pk=job_id)
    if not claimed:
        if job.status == ImportJob.Status.RUNNING:
            job.status = ImportJob.Status.FAILED
            job.error = (
                f"The import stopped after {job.processed_rows:,} of {job.total_rows:,} rows (the worker was "
                "interrupted). Those rows are in; import the same file again to finish: rows already imported "
                "are matched and updated, not duplicated."
            )
            job.finished_at = timezone.now()
            job.save(update_fields=["status", "error", "finished_at"])
        return job
    errors = None
    try:
        with job.file.open("rb") as binary, _open_text(binary) as text:
            records = _Records(text)
            headers = _check_headers(records.headers)
            plan = _Plan.build(headers, mapping_validate(headers=headers, mapping=job.mapping))
            errors = _ErrorsFile(headers)
            progress = ImportProgress(total_rows=job.total_rows)
            _run(job, plan, records, errors, progress, on_progress)
        job.refresh_from_db()
        if errors.count:
            errors.save_to(job)
        job.status = ImportJob.Status.DONE
        job.finished_at = timezone.now()
        job.save(update_fields=["status", "finished_at", "errors_file"])
    except ImportRejected as exc:
        _fail(job_id, exc.message)
    except Exception as exc:
        logger.exception("Import %s failed", job_id)
        _fail(
            job_id,
            f"The import stopped on an unexpected error ({type(exc).__name__}); rows committed before it are in.",
        )
        raise
    finally:
        if errors is not None:
            errors.close()
    return ImportJob.objects.get(pk=job_id)


def _fail(job_id: int, message: str) -> None:
    ImportJob.objects.filter(pk=job_id).update(
        status=ImportJob.Status.FAILED, error=message, finished_at=timezone.now()
    )


def _run(
    job: ImportJob,
    plan: _Plan,
    records: _Records,
    errors: _ErrorsFile,
    progress: ImportProgress,
    on_progress: Callable[[ImportProgress], None] | None,
) -> None:
    connection = connections[DEFAULT_DB_ALIAS]
    by_ids = Persona.objects.exists() and job.total_rows <= PERSONAS_BY_ID_MAX_ROWS
    if connection.vendor == "postgresql":
        loader: _Loader = _PostgresLoader(job, plan, by_ids)
        chunks = _chunks(records, plan, PG_CHUNK_ROWS, csv_payload=True)
    else:
        loader = _OrmLoader(job, plan, by_ids)
        chunks = _chunks(records, plan, SQLITE_CHUNK_ROWS, csv_payload=False)

    def settle(chunk: _Chunk, outcome: _ChunkOutcome) -> None:
        rejected = chunk.rejected + [(line, reason, chunk.values_of(line)) for line, reason in outcome.rejected]
        errors.write(rejected)
        progress.processed_rows += chunk.records
        progress.created += outcome.created
        progress.updated += outcome.updated
        progress.rejected += len(rejected)
        if on_progress:
            on_progress(progress)

    progress.seconds = loader.seconds
    loader.start()
    try:
        if connection.vendor == "postgresql":
            _pipelined(connection, loader, chunks, settle)
        else:
            for chunk in chunks:
                settle(chunk, loader.load(chunk))
    finally:
        loader.stop()
    # Asked again: a persona created during the import must also cover the rows imported after its own recompute.
    if Persona.objects.exists() and not by_ids:
        personas_assign()


def _pipelined(connection, loader: _Loader, chunks: Iterator[_Chunk], settle) -> None:
    """Validate the next chunk in this thread while the database thread writes the previous one.

    The database thread uses this thread's connection (so the import sees and joins
    the caller's transaction, as in tests); this thread touches the database only
    when the other one is idle.
    """

    def bind() -> None:
        connections[DEFAULT_DB_ALIAS] = connection

    connection.inc_thread_sharing()
    # The database thread needs the GIL back every time the socket drains during COPY; the
    # default 5 ms switch interval would let this CPU-bound thread starve it.
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(PIPELINE_SWITCH_INTERVAL)
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="chorus-import-db", initializer=bind) as pool:
            pending = None
            for chunk in chunks:  # validating this chunk overlaps the database writing the previous one
                if pending is not None:
                    settle(pending[0], pending[1].result())
                pending = (chunk, pool.submit(loader.load, chunk))
            if pending is not None:
                settle(pending[0], pending[1].result())
    finally:
        sys.setswitchinterval(switch_interval)
        connection.dec_thread_sharing()


# --- Writing: shared pieces -------------------------------------------------------------


class _Loader:
    """Writes one validated chunk in one transaction and returns its outcome."""

    def __init__(self, job: ImportJob, plan: _Plan, personas_by_id: bool) -> None:
        self.job = job
        self.plan = plan
        self.personas_by_id = personas_by_id
        self.seconds: dict[str, float] = {}
        self._clock = 0.0

    def lap(self, step: str) -> None:
        """Charge the time since the previous lap to ``step``."""
        now = time.perf_counter()
        self.seconds[step] = self.seconds.get(step, 0.0) + now - self._clock
        self._clock = now

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def load(self, chunk: _Chunk) -> _ChunkOutcome:
        for attempt in range(1, CHUNK_ATTEMPTS + 1):
            try:
                self._clock = time.perf_counter()
                with transaction.atomic():
                    outcome = self.write(chunk, timezone.now())
                    rejected = len(chunk.rejected) + len(outcome.rejected)
                    ImportJob.objects.filter(pk=self.job.pk).update(
                        processed_rows=F("processed_rows") + chunk.records,
                        created_count=F("created_count") + outcome.created,
                        updated_count=F("updated_count") + outcome.updated,
                        rejected_count=F("rejected_count") + rejected,
                    )
                    if self.personas_by_id and outcome.customer_ids:
                        personas_assign(customer_ids=outcome.customer_ids)
                    self.lap("progress and personas")
                self.lap("commit")
                return outcome
            except IntegrityError:
                # Another writer took an identity between our look-up and our write: look again.
                if attempt == CHUNK_ATTEMPTS:
                    raise
                logger.info("Import %s: chunk hit a concurrent write, retrying (%s)", self.job.pk, attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def write(self, chunk: _Chunk, now: datetime) -> _ChunkOutcome:
        raise NotImplementedError

    def consent_evidence(self, line: int) -> dict:
        return {"import_job": self.job.pk, "line": line}


def _insert_defaults(model: type[models.Model], provided: set[str]) -> dict[str, Any]:
    """Column -> value for the NOT NULL columns an INSERT does not provide (the field defaults)."""
    defaults = {}
    for model_field in model._meta.concrete_fields:
        if model_field.primary_key or model_field.name in provided or model_field.attname in provided:
            continue
        if model_field.null:
            continue
        defaults[model_field.column] = model_field.get_db_prep_save(
            model_field.get_default(), connections[DEFAULT_DB_ALIAS]
        )
    return defaults


# --- Writing: PostgreSQL -------------------------------------------------------------------


class _PostgresLoader(_Loader):
    """COPY into a temporary staging table, then set-based SQL for the whole chunk."""

    STAGE = "_chorus_import_stage"
    ROWS = "_chorus_import_rows"
    TOUCHED = "_chorus_import_touched"

    def start(self) -> None:
        plan = self.plan
        column_types = [
            *(f"{name} text" for name in (*plan.identity_fields, *plan.profile_fields)),
            *(["attributes jsonb"] if plan.attributes else []),
            *(f"consent_{channel} text" for channel in plan.consent_channels),
        ]
        self.columns = ", ".join(["line", *plan.staged_columns])
        match_columns = ", ".join(f"m_{name} bigint" for name in plan.identity_fields)
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            self.stop()
            try:
                # Room for a chunk's staging rows in memory (the default, 8MB, spills them to disk).
                # PostgreSQL only allows it before the session's first temporary table.
                with transaction.atomic():
                    cursor.execute(f"SET temp_buffers = '{TEMP_BUFFERS}'")
            except DatabaseError:
                pass  # this connection used temporary tables before: keep its setting
            cursor.execute(f"CREATE TEMP TABLE {self.STAGE} (line integer, {', '.join(column_types)})")
            cursor.execute(
                f"CREATE TEMP TABLE {self.ROWS} (line integer, {', '.join(column_types)}, {match_columns}, "
                "customer_id bigint, outcome char(1), erased boolean, earlier_line integer)"
            )
            cursor.execute(f"CREATE TEMP TABLE {self.TOUCHED} (customer_id bigint PRIMARY KEY, line integer)")
            cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [Customer._meta.db_table])
            self.sequence = cursor.fetchone()[0]
        self.insert_sql, self.insert_params = self._insert_customers_sql()
        self.resolve_sql = self._resolve_sql()

    def stop(self) -> None:
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {self.STAGE}, {self.ROWS}, {self.TOUCHED}")

    def write(self, chunk: _Chunk, now: datetime) -> _ChunkOutcome:
        if not chunk.payload:
            return _ChunkOutcome(created=0, updated=0, rejected=[])
        plan = self.plan
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            # Compiling these row-at-a-time statements costs more than it saves; the
            # chunk's sorts and hashes fit in memory with a little more than the default.
            cursor.execute("SET LOCAL jit = off")
            cursor.execute("SET LOCAL work_mem = '64MB'")
            cursor.execute(f"TRUNCATE {self.STAGE}, {self.ROWS}")
            with cursor.cursor.copy(f"COPY {self.STAGE} ({self.columns}) FROM STDIN WITH (FORMAT csv)") as copy:
                view = memoryview(chunk.payload)
                for start in range(0, len(view), 1 << 20):
                    copy.write(view[start : start + (1 << 20)])
            self.lap("copy to staging")
            cursor.execute(self.resolve_sql, [self.sequence])
            self.lap("resolve identities")
            cursor.execute(
                f"SELECT line, {', '.join(f'm_{n}' for n in plan.identity_fields)}, erased, earlier_line "
                f"FROM {self.ROWS} WHERE outcome = 'x' ORDER BY line"
            )
            rejected = []
            for line, *matches, erased, earlier_line in cursor.fetchall():
                # Ids come negated for erased customers (see _resolve_sql).
                found = {
                    name: abs(pk) if pk is not None else None
                    for name, pk in zip(plan.identity_fields, matches, strict=True)
                }
                rejected.append((line, _db_reason(plan, found, erased, earlier_line)))
            cursor.execute(self.insert_sql, [now, now, *self.insert_params])
            created = cursor.rowcount
            self.lap("insert customers")
            updated = self._update(cursor, now)
            self.lap("update customers")
            for channel in plan.consent_channels:
                self._consents(cursor, channel, now)
            self.lap("consents and activities")
            returning = " RETURNING customer_id" if self.personas_by_id else ""
            cursor.execute(
                f"INSERT INTO {self.TOUCHED} SELECT customer_id, line FROM {self.ROWS} "
                f"WHERE outcome IN ('c', 'u'){returning}"
            )
            customer_ids = [row[0] for row in cursor.fetchall()] if self.personas_by_id else []
        return _ChunkOutcome(created=created, updated=updated, rejected=rejected, customer_ids=customer_ids)

    def _resolve_sql(self) -> str:
        """Classify every staged row: 'c' create (with a new id), 'u' update, 'x' rejected.

        One index look-up per identity gives the holder's id, negated when that
        customer was erased (so no second look-up is needed for it). Rows whose
        identities point at two customers are conflicts; a row for a customer an
        earlier row wrote (in an earlier chunk: the touched table; in this one:
        the lowest line per customer) is a duplicate.
        """
        plan = self.plan
        table = Customer._meta.db_table
        fields = plan.identity_fields
        lookups = ", ".join(
            f"(SELECT CASE WHEN c.erased_at IS NULL THEN c.id ELSE -c.id END FROM {table} c WHERE c.{n} = s.{n}) "
            f"AS m_{n}"
            for n in fields
        )
        cid = f"abs(COALESCE({', '.join(f'm_{n}' for n in fields)}))"
        conflict = " OR ".join(f"abs(m_{n}) <> {cid}" for n in fields)
        erased = " OR ".join(f"m_{n} < 0" for n in fields)
        staged = ", ".join(["line", *plan.staged_columns])
        matches = ", ".join(f"m_{n}" for n in fields)
        # m is MATERIALIZED so each look-up runs once per row; k is only cheap expressions over it.
        return f"""
            WITH m AS MATERIALIZED (
                SELECT s.*, {lookups} FROM {self.STAGE} s
            ), k AS NOT MATERIALIZED (
                SELECT m.*, {cid} AS cid, COALESCE({conflict}, false) AS conflict,
                       COALESCE({erased}, false) AS erased
                FROM m
            ), firsts AS (
                SELECT cid, min(line) AS line FROM k
                WHERE cid IS NOT NULL AND NOT conflict AND NOT erased
                GROUP BY cid HAVING count(*) > 1
            ), d AS (
                SELECT k.*,
                       CASE WHEN k.cid IS NOT NULL AND NOT k.conflict AND NOT k.erased THEN COALESCE(
                           (SELECT t.line FROM {self.TOUCHED} t WHERE t.customer_id = k.cid),
                           NULLIF(f.line, k.line)
                       ) END AS earlier_line
                FROM k LEFT JOIN firsts f ON f.cid = k.cid
            )
            INSERT INTO {self.ROWS} ({staged}, {matches}, customer_id, outcome, erased, earlier_line)
            SELECT {staged}, {matches},
                   CASE WHEN cid IS NULL THEN nextval(%s::regclass) ELSE cid END,
                   CASE WHEN conflict OR erased OR earlier_line IS NOT NULL THEN 'x'
                        WHEN cid IS NULL THEN 'c' ELSE 'u' END,
                   erased, earlier_line
            FROM d
        """

    def _insert_customers_sql(self) -> tuple[str, list[Any]]:
        plan = self.plan
        table = Customer._meta.db_table
        columns = ["id", *plan.identity_fields]
        values = ["customer_id", *plan.identity_fields]
        for name in plan.profile_fields:
            columns.append(name)
            values.append(f"COALESCE({name}, '')")
        columns += ["attributes", "created_at", "updated_at"]
        values += ["COALESCE(attributes, '{}'::jsonb)" if plan.attributes else "'{}'::jsonb", "%s", "%s"]
        defaults = _insert_defaults(Customer, {*columns, "persona"})
        columns += list(defaults)
        values += ["%s"] * len(defaults)
        sql = (
            f"INSERT INTO {table} ({', '.join(columns)}) "
            f"SELECT {', '.join(values)} FROM {self.ROWS} WHERE outcome = 'c' ORDER BY customer_id"
        )
        return sql, list(defaults.values())

    def _update(self, cursor, now: datetime) -> int:
        """Update the matched customers whose provided values differ; returns the matched count."""
        plan = self.plan
        table = Customer._meta.db_table
        sets, changed = [], []
        for name in (*plan.identity_fields, *plan.profile_fields):
            sets.append(f"{name} = COALESCE(r.{name}, c.{name})")
            changed.append(f"(r.{name} IS NOT NULL AND r.{name} IS DISTINCT FROM c.{name})")
        if plan.attributes:
            sets.append(
                "attributes = CASE WHEN r.attributes IS NULL THEN c.attributes ELSE c.attributes || r.attributes END"
            )
            changed.append("(r.attributes IS NOT NULL AND c.attributes || r.attributes <> c.attributes)")
        cursor.execute(f"SELECT count(*) FROM {self.ROWS} WHERE outcome = 'u'")
        matched = cursor.fetchone()[0]
        if matched and sets:
            cursor.execute(
                f"UPDATE {table} c SET {', '.join(sets)}, updated_at = %s "
                f"FROM {self.ROWS} r WHERE r.outcome = 'u' AND c.id = r.customer_id AND ({' OR '.join(changed)})",
                [now],
            )
        return matched

    def _consents(self, cursor, channel: str, now: datetime) -> None:
        """Append a consent row (and a consent.changed activity) where the file changes the current state."""
        column = f"consent_{channel}"
        consent_table = Consent._meta.db_table
        activity_table = Activity._meta.db_table
        consent_defaults = _insert_defaults(
            Consent, {"customer", "channel", "status", "source", "occurred_at", "evidence"}
        )
        activity_defaults = _insert_defaults(Activity, {"customer", "occurred_at", "kind", "channel", "properties"})
        source = Consent.Source.IMPORT.value
        cursor.execute(
            f"""
            WITH current AS (
                SELECT r.customer_id, r.line, r.{column} AS status,
                       CASE WHEN r.outcome = 'u' THEN (
                           SELECT k.status FROM {consent_table} k
                           WHERE k.customer_id = r.customer_id AND k.channel = %(channel)s
                           ORDER BY k.occurred_at DESC, k.id DESC LIMIT 1
                       ) END AS previous
                FROM {self.ROWS} r
                WHERE r.outcome IN ('c', 'u') AND r.{column} IS NOT NULL
            ), changed AS (
                SELECT * FROM current WHERE previous IS DISTINCT FROM status
            ), ledger AS (
                INSERT INTO {consent_table} (customer_id, channel, status, source, occurred_at, evidence
                                             {"".join(f", {c}" for c in consent_defaults)})
                SELECT customer_id, %(channel)s, status, %(source)s, %(now)s,
                       jsonb_build_object('import_job', %(job)s::bigint, 'line', line)
                       {"".join(f", %(cd_{c})s" for c in consent_defaults)}
                FROM changed
            )
            INSERT INTO {activity_table} (customer_id, occurred_at, kind, channel, properties
                                          {"".join(f", {c}" for c in activity_defaults)})
            SELECT customer_id, %(now)s, %(kind)s, %(channel)s,
                   jsonb_build_object('from', COALESCE(previous, 'unknown'), 'to', status, 'source', %(source)s)
                   {"".join(f", %(ad_{c})s" for c in activity_defaults)}
            FROM changed
            """,
            {
                "channel": channel,
                "source": source,
                "now": now,
                "job": self.job.pk,
                "kind": Activity.Kind.CONSENT_CHANGED.value,
                **{f"cd_{c}": v for c, v in consent_defaults.items()},
                **{f"ad_{c}": v for c, v in activity_defaults.items()},
            },
        )


# --- Writing: other databases (SQLite) through the ORM -------------------------------------------


class _OrmLoader(_Loader):
    """The same outcomes as ``_PostgresLoader`` through the ORM: correct, not fast."""

    LOOKUP_BATCH = 500

    def start(self) -> None:
        self.touched: dict[int, int] = {}  # customer id -> line that wrote it

    def write(self, chunk: _Chunk, now: datetime) -> _ChunkOutcome:
        plan = self.plan
        fields = plan.identity_fields
        profile = plan.profile_fields
        n_identities = len(fields)
        attributes_at = 1 + n_identities + len(profile) if plan.attributes else None
        consents_at = 1 + n_identities + len(profile) + (1 if plan.attributes else 0)

        holders: dict[str, dict[str, int]] = {}
        for position, name in enumerate(fields, start=1):
            values = [row[position] for row in chunk.staged if row[position] is not None]
            found: dict[str, int] = {}
            for start in range(0, len(values), self.LOOKUP_BATCH):
                batch = values[start : start + self.LOOKUP_BATCH]
                found.update(Customer.objects.filter(**{f"{name}__in": batch}).values_list(name, "pk"))
            holders[name] = found
        matched_ids = {pk for found in holders.values() for pk in found.values()}
        existing = Customer.objects.in_bulk(list(matched_ids))

        rejected: list[tuple[int, str]] = []
        creates: list[tuple[tuple, Customer]] = []
        updates: list[tuple[tuple, Customer]] = []
        first_in_chunk: dict[int, int] = {}
        for row in chunk.staged:
            line = row[0]
            matches = {name: holders[name].get(row[p]) for p, name in enumerate(fields, start=1)}
            found = {name: pk for name, pk in matches.items() if pk is not None}
            ids = set(found.values())
            if len(ids) > 1:
                rejected.append((line, _conflict_reason(plan, found)))
                continue
            if not ids:
                customer = Customer(created_at=now, updated_at=now)
                for p, name in enumerate((*fields, *profile), start=1):
                    setattr(customer, name, row[p] if row[p] is not None else (None if name in fields else ""))
                customer.attributes = json.loads(row[attributes_at]) if attributes_at and row[attributes_at] else {}
                creates.append((row, customer))
                continue
            customer_id = ids.pop()
            customer = existing[customer_id]
            if customer.erased_at is not None:
                rejected.append((line, _erased_reason(customer_id)))
                continue
            earlier = self.touched.get(customer_id, first_in_chunk.get(customer_id))
            if earlier is not None:
                rejected.append((line, _same_customer_reason(customer_id, earlier)))
                continue
            first_in_chunk[customer_id] = line
            updates.append((row, customer))

        created = [customer for _, customer in creates]
        Customer.objects.bulk_create(created)
        changed = []
        for row, customer in updates:
            dirty = False
            for p, name in enumerate((*fields, *profile), start=1):
                if row[p] is not None and getattr(customer, name) != row[p]:
                    setattr(customer, name, row[p])
                    dirty = True
            if attributes_at and row[attributes_at]:
                merged = {**(customer.attributes or {}), **json.loads(row[attributes_at])}
                if merged != customer.attributes:
                    customer.attributes = merged
                    dirty = True
            if dirty:
                customer.updated_at = now
                changed.append(customer)
        if changed:
            Customer.objects.bulk_update(
                changed, [*fields, *profile, "attributes", "updated_at"], batch_size=self.LOOKUP_BATCH
            )

        written = [*creates, *updates]
        for offset, channel in enumerate(plan.consent_channels):
            self._consents(channel, consents_at + offset, written, updates, now)
        for row, customer in written:
            self.touched[customer.pk] = row[0]
        return _ChunkOutcome(
            created=len(creates),
            updated=len(updates),
            rejected=rejected,
            customer_ids=[customer.pk for _, customer in written],
        )

    def _consents(self, channel: str, position: int, written, updates, now: datetime) -> None:
        """Append a consent row (and a consent.changed activity) where the file changes the current state.

        ``written`` are the chunk's (row, customer) pairs; of ``updates`` (the existing
        customers among them) the current state is looked up, new customers have none.
        """
        asked = [customer.pk for row, customer in updates if row[position] is not None]
        current: dict[int, str | None] = {}
        for start in range(0, len(asked), self.LOOKUP_BATCH):
            current.update(
                Customer.objects.filter(pk__in=asked[start : start + self.LOOKUP_BATCH])
                .annotate(current_consent=consent_status_subquery(channel))
                .values_list("pk", "current_consent")
            )
        consents, activities = [], []
        for row, customer in written:
            status = row[position]
            if status is None:
                continue
            previous = current.get(customer.pk)
            if previous == status:
                continue
            consents.append(
                Consent(
                    customer=customer,
                    channel=channel,
                    status=status,
                    source=Consent.Source.IMPORT,
                    occurred_at=now,
                    evidence=self.consent_evidence(row[0]),
                )
            )
            activities.append(
                Activity(
                    customer=customer,
                    kind=Activity.Kind.CONSENT_CHANGED,
                    channel=channel,
                    occurred_at=now,
                    properties={"from": previous or "unknown", "to": status, "source": Consent.Source.IMPORT.value},
                )
            )
        Consent.objects.bulk_create(consents, batch_size=self.LOOKUP_BATCH)
        Activity.objects.bulk_create(activities, batch_size=self.LOOKUP_BATCH)
