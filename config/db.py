"""Database helpers shared by the apps."""

from __future__ import annotations

from collections.abc import Collection

from django.db import connection
from django.db.models.expressions import RawSQL


def in_values(values: Collection, db_type: str = "bigint") -> Collection | RawSQL:
    """``values`` for an ``__in`` lookup over a batch (hundreds or thousands of values).

    On PostgreSQL one array parameter (``IN (SELECT unnest(%s::bigint[]))``): building,
    quoting and parsing a query with a placeholder per value costs more than the lookup
    itself. Elsewhere the values as they are.
    """
    if connection.vendor != "postgresql":
        return values
    return RawSQL(f"SELECT unnest(%s::{db_type}[])", [list(values)])  # noqa: S611 - the type is ours, values bound
