"""Database helpers shared by the apps."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator
from itertools import islice
from typing import Any

from django.db import connection, models, transaction
from django.db.models import NOT_PROVIDED
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


def chunks(values: Iterable, size: int) -> Iterator[list]:
    """``values`` in lists of ``size`` (the last one shorter)."""
    iterator = iter(values)
    while chunk := list(islice(iterator, size)):
        yield chunk


# --- lean SQL for the bulk path ------------------------------------------------
# bulk_create/bulk_update spend most of their time compiling one expression per
# value (about 1 s per 1,000 customers); these send one parameterised statement
# through executemany, with values prepared by the model fields themselves.


def insert_many(model: type[models.Model], rows: list[dict[str, Any]]) -> None:
    """INSERT ``rows`` (attname -> value); fields left out get their model default."""
    if not rows:
        return
    conn = transaction.get_connection()
    fields = [f for f in model._meta.concrete_fields if not f.primary_key and f.db_default is NOT_PROVIDED]
    quote = conn.ops.quote_name
    prepare = _preparer(conn)
    defaults = {f.attname: prepare(f, f.get_default()) for f in fields}
    params = [[prepare(f, row[f.attname]) if f.attname in row else defaults[f.attname] for f in fields] for row in rows]
    # Identifiers come from the model's meta, quoted; every value is a parameter.
    head = f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
    with conn.cursor() as cursor:
        if conn.vendor == "postgresql":
            for chunk in chunks(params, 5_000):
                source, columns, arrays = _unnest(conn, fields, chunk)
                cursor.execute(f"{head} SELECT {', '.join(columns)} FROM {source}", arrays)  # noqa: S608
        else:
            sql = f"{head} VALUES ({', '.join(['%s'] * len(fields))})"
            for chunk in chunks(params, 1_000):
                cursor.executemany(sql, chunk)


def update_many(model: type[models.Model], changes: list[tuple[int, dict[str, Any]]]) -> None:
    """UPDATE each (pk, {attname: value}); rows changing the same fields share one statement."""
    conn = transaction.get_connection()
    meta, quote, prepare = model._meta, conn.ops.quote_name, _preparer(conn)
    groups: dict[tuple[str, ...], list[list[Any]]] = defaultdict(list)
    for pk, values in changes:
        names = tuple(sorted(values))
        groups[names].append([pk] + [prepare(meta.get_field(n), values[n]) for n in names])
    table, pk_column = quote(meta.db_table), quote(meta.pk.column)
    with conn.cursor() as cursor:
        for names, params in groups.items():
            fields = [meta.pk] + [meta.get_field(n) for n in names]
            if conn.vendor == "postgresql":
                for chunk in chunks(params, 5_000):
                    source, columns, arrays = _unnest(conn, fields, chunk)
                    assignments = ", ".join(f"{quote(f.column)} = {columns[i]}" for i, f in enumerate(fields) if i)
                    sql = f"UPDATE {table} SET {assignments} FROM {source} WHERE {table}.{pk_column} = u.c0"  # noqa: S608
                    cursor.execute(sql, arrays)
            else:
                assignments = ", ".join(f"{quote(f.column)} = %s" for f in fields[1:])
                sql = f"UPDATE {table} SET {assignments} WHERE {pk_column} = %s"  # noqa: S608
                for chunk in chunks(params, 1_000):
                    cursor.executemany(sql, [row[1:] + row[:1] for row in chunk])


def _unnest(conn, fields: list[models.Field], rows: list[list[Any]]) -> tuple[str, list[str], list[list[Any]]]:
    """PostgreSQL: rows as one array parameter per column, ``FROM unnest(...) AS u(c0, c1, ...)``.

    A short statement whatever the number of rows (a VALUES list of 10,000 rows
    costs more to build and parse than to run). JSON travels as text and is cast.
    """
    arrays, types, columns = [], [], []
    for i, model_field in enumerate(fields):
        db_type = model_field.db_type(conn)
        values = [row[i] for row in rows]
        if db_type == "jsonb":  # prepared as psycopg Jsonb wrappers
            encoder = model_field.encoder
            values = [None if v is None else json.dumps(getattr(v, "obj", v), cls=encoder) for v in values]
            types.append("text[]")
            columns.append(f"u.c{i}::jsonb")
        else:
            types.append(f"{db_type}[]")
            columns.append(f"u.c{i}")
        arrays.append(values)
    aliases = ", ".join(f"c{i}" for i in range(len(fields)))
    source = f"unnest({', '.join(f'%s::{t}' for t in types)}) AS u({aliases})"
    return source, columns, arrays


def _preparer(conn):
    """``field.get_db_prep_save`` memoised for hashable values (the same timestamp on 10,000 rows)."""
    memo: dict[tuple[str, Any], Any] = {}

    def prepare(field: models.Field, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, dict | list):
            return field.get_db_prep_save(value, conn)
        key = (field.attname, value)
        if key not in memo:
            memo[key] = field.get_db_prep_save(value, conn)
        return memo[key]

    return prepare
