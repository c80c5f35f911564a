"""Streamed CSV export of any customer queryset.

``customers_csv_response(queryset, filename=...)`` answers with a
``StreamingHttpResponse`` whose body is produced chunk by chunk: rows are read
with keyset pagination (``pk > last ORDER BY pk LIMIT n``), so a million-row
segment never sits in memory, no server-side cursor has to outlive a request
(connection poolers in transaction mode break those), and every chunk is an
index range scan rather than an ever-growing ``OFFSET``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal

from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.utils.http import content_disposition_header

from customers.models import Customer

CHUNK_SIZE = 2000

# (CSV header, queryset lookup). Identities first: that is what a re-import matches on.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "pk"),
    ("email", "email"),
    ("phone", "phone"),
    ("external_id", "external_id"),
    ("mastodon_handle", "mastodon_handle"),
    ("bluesky_handle", "bluesky_handle"),
    ("first_name", "first_name"),
    ("last_name", "last_name"),
    ("locale", "locale"),
    ("timezone", "timezone"),
    ("country", "country"),
    ("city", "city"),
    ("persona", "persona__slug"),
    ("lifetime_value", "lifetime_value"),
    ("orders_count", "orders_count"),
    ("last_purchase_at", "last_purchase_at"),
    ("created_at", "created_at"),
    ("attributes", "attributes"),
)
# Identity columns are validated on the way in (E.164, @user@host), so they can
# start with "+" or "@" without being a spreadsheet formula; free text cannot.
_FORMULA_SAFE = {"id", "phone", "mastodon_handle", "lifetime_value", "orders_count"}
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class _Echo:
    """A file-like object whose write() hands the line back instead of storing it."""

    def write(self, value: str) -> str:
        return value


def _cell(header: str, value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict | list):
        text = json.dumps(value, ensure_ascii=False, sort_keys=True) if value else ""
    else:
        text = str(value)
    # A cell starting with "=" (or "+", "-", "@") is run as a formula by spreadsheet
    # applications; a leading apostrophe keeps it text (OWASP "CSV injection").
    if header not in _FORMULA_SAFE and text.startswith(_FORMULA_STARTS):
        return "'" + text
    return text


def customers_csv_rows(queryset: QuerySet[Customer], *, chunk_size: int = CHUNK_SIZE) -> Iterator[str]:
    """Yield the CSV header line, then one line per customer of ``queryset``, in id order."""
    writer = csv.writer(_Echo())
    headers = [header for header, _ in COLUMNS]
    lookups = [lookup for _, lookup in COLUMNS]
    yield writer.writerow(headers)
    rows = queryset.order_by("pk").values_list(*lookups)
    last_pk = None
    while True:
        chunk = rows.filter(pk__gt=last_pk)[:chunk_size] if last_pk is not None else rows[:chunk_size]
        chunk = list(chunk)
        if not chunk:
            return
        yield "".join(writer.writerow([_cell(h, v) for h, v in zip(headers, row, strict=True)]) for row in chunk)
        if len(chunk) < chunk_size:
            return
        last_pk = chunk[-1][0]


def customers_csv_response(queryset: QuerySet[Customer], *, filename: str) -> StreamingHttpResponse:
    """A streamed ``text/csv`` download of every customer in ``queryset``."""
    response = StreamingHttpResponse(customers_csv_rows(queryset), content_type="text/csv; charset=utf-8")
    safe_name = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in filename).strip("-") or "customers.csv"
    # ASCII names as filename="...", others as RFC 6266 filename*=utf-8''... .
    response["Content-Disposition"] = content_disposition_header(True, safe_name)
    # Proxies must pass rows on as they come rather than buffer the whole file.
    response["X-Accel-Buffering"] = "no"
    response["Cache-Control"] = "no-store"
    return response
