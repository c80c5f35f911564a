"""Fill the benchmark database with customers, consents and activities at COPY speed.

Contract of :func:`generate`:

* Targets only a ``chorus_bench*`` database (see :mod:`benchmarks.db`); creates it
  and applies Django migrations when needed (``migrate`` is a no-op when current).
* Replaces, never appends: the customer, consent and activity tables are
  truncated (``CASCADE``: rows in other bench tables that point at customers go
  too) and refilled with ``customers`` customers, about 1.4 consents each and
  ``customers * activities_per_customer`` activities (see :mod:`benchmarks.data`).
* The load is one transaction: truncate, drop secondary indexes, unique and
  foreign-key constraints (primary keys stay), ``COPY ... WITH (FREEZE)`` each
  table in streamed chunks, recreate what was dropped (from the catalog's own
  definitions, so new indexes added by migrations are handled), move the id
  sequences past the data, ``ANALYZE``, commit. A failure anywhere rolls back to
  the previous contents and schema; nothing is left half-indexed.
* Columns added to the models later are filled with the field's default when
  they are NOT NULL; a NOT NULL column without a default is reported, not guessed.
* Returns a :class:`GenerateReport` with per-phase seconds and rows/s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from benchmarks import data
from benchmarks.db import BenchError, check_bench_url, connect, database_name, ensure_database, migrate, setup_django

Echo = Callable[[str], None]


@dataclass
class Phase:
    """One timed step of the load."""

    name: str
    seconds: float
    rows: int | None = None
    detail: str = ""

    @property
    def rows_per_second(self) -> float | None:
        return self.rows / self.seconds if self.rows and self.seconds > 0 else None

    def line(self) -> str:
        rows = f"{self.rows:>12,} rows {self.rows_per_second:>11,.0f} rows/s" if self.rows else " " * 34
        return f"  {self.name:<24} {self.seconds:>9.2f} s {rows}  {self.detail}".rstrip()


@dataclass
class GenerateReport:
    """What :func:`generate` did: sizes, per-phase timings and the data anchor."""

    database: str
    customers: int
    consents: int
    activities: int
    seed: int
    anchor: str
    kept_indexes: bool
    phases: list[Phase] = field(default_factory=list)
    rebuilt_seconds: dict[str, float] = field(default_factory=dict)  # per recreated index or constraint

    @property
    def total_seconds(self) -> float:
        return sum(p.seconds for p in self.phases)

    @property
    def total_rows(self) -> int:
        return self.customers + self.consents + self.activities

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for phase, src in zip(out["phases"], self.phases, strict=True):
            phase["rows_per_second"] = src.rows_per_second
        out["total_seconds"] = self.total_seconds
        out["total_rows"] = self.total_rows
        return out


@dataclass
class _Secondary:
    """A droppable index or constraint and the SQL that recreates it."""

    table: str
    name: str
    kind: str  # "index" | "unique" | "foreign key"
    create: str

    def drop_sql(self) -> sql.Composable:
        if self.kind == "index":
            return sql.SQL("DROP INDEX {}").format(sql.Identifier(self.name))
        return sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
            sql.Identifier(self.table), sql.Identifier(self.name)
        )

    def create_sql(self) -> sql.Composable:
        if self.kind == "index":
            return sql.SQL(self.create)  # pg_get_indexdef: a complete CREATE INDEX statement
        return sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
            sql.Identifier(self.table), sql.Identifier(self.name), sql.SQL(self.create)
        )


def _secondaries(conn: psycopg.Connection, tables: list[str]) -> list[_Secondary]:
    """Non-primary indexes, unique and foreign-key constraints on ``tables``, in re-creation order."""
    found = [
        _Secondary(table, name, "unique" if contype == "u" else "foreign key", definition)
        for table, name, contype, definition in conn.execute(
            """
            SELECT c.conrelid::regclass::text, c.conname, c.contype, pg_get_constraintdef(c.oid)
            FROM pg_constraint c
            WHERE c.conrelid = ANY(%s::regclass[]) AND c.contype IN ('u', 'f')
            ORDER BY c.contype DESC, c.conname
            """,
            [tables],
        )
    ]
    indexes = [
        _Secondary(table, name, "index", definition)
        for table, name, definition in conn.execute(
            """
            SELECT i.indrelid::regclass::text, ci.relname, pg_get_indexdef(i.indexrelid)
            FROM pg_index i JOIN pg_class ci ON ci.oid = i.indexrelid
            WHERE i.indrelid = ANY(%s::regclass[]) AND NOT i.indisprimary
              AND NOT EXISTS (
                SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.contype IN ('p', 'u', 'x'))
            ORDER BY ci.relname
            """,
            [tables],
        )
    ]
    # Unique constraints first (they are also indexes), then plain indexes, then foreign keys.
    return [s for s in found if s.kind == "unique"] + indexes + [s for s in found if s.kind == "foreign key"]


def _copy_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def extra_columns(model: Any, generated: tuple[str, ...], conn: psycopg.Connection) -> tuple[tuple[str, ...], str]:
    """Columns of ``model`` the generator does not produce but must fill, and their COPY text.

    Nullable columns and columns with a database default are left to the
    database. A NOT NULL column gets its field default, rendered by PostgreSQL
    itself (``SELECT (%s)::text``) so JSON, booleans and dates come out right.
    Returns ``(columns, suffix)`` where ``suffix`` is ``"\\tvalue..."`` to append
    to every generated line.
    """
    from django.db import connection as django_connection
    from django.db.models.fields import NOT_PROVIDED

    columns: list[str] = []
    suffix = ""
    for f in model._meta.concrete_fields:
        if f.column in generated or f.null or getattr(f, "generated", False):
            continue
        if getattr(f, "db_default", NOT_PROVIDED) is not NOT_PROVIDED:
            continue
        if not f.has_default():
            raise BenchError(
                f"{model._meta.db_table}.{f.column} is NOT NULL without a default; "
                "teach benchmarks/data.py to generate it"
            )
        value = f.get_db_prep_save(f.get_default(), django_connection)
        text = conn.execute("SELECT (%s)::text", [value]).fetchone()[0]
        columns.append(f.column)
        suffix += "\t" + ("\\N" if text is None else _copy_escape(text))
    return tuple(columns), suffix


def _copy(
    conn: psycopg.Connection,
    table: str,
    columns: tuple[str, ...],
    chunks: Iterable[tuple[str, int]],
    *,
    suffix: str = "",
    freeze: bool = True,
) -> tuple[int, float]:
    """Stream ``chunks`` into ``table`` with one COPY; return (rows, seconds spent generating)."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN{}").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(" WITH (FREEZE)" if freeze else ""),
    )
    rows = 0
    generating = 0.0
    iterator: Iterator[tuple[str, int]] = iter(chunks)
    with conn.cursor() as cur, cur.copy(statement) as copy:
        while True:
            started = time.perf_counter()
            try:
                text, n = next(iterator)
            except StopIteration:
                break
            generating += time.perf_counter() - started
            copy.write(text.replace("\n", suffix + "\n") if suffix else text)
            rows += n
    return rows, generating


class _Phases:
    """Times phases and echoes each as it finishes."""

    def __init__(self, report: GenerateReport, echo: Echo):
        self.report = report
        self.echo = echo

    def phase(self, name: str, fn: Callable[[], tuple[int | None, str] | None]) -> Phase:
        started = time.perf_counter()
        rows, detail = fn() or (None, "")
        phase = Phase(name, time.perf_counter() - started, rows, detail)
        self.report.phases.append(phase)
        self.echo(phase.line())
        return phase


def generate(
    url: str,
    customers: int,
    *,
    activities_per_customer: int = 10,
    seed: int = 42,
    anchor: datetime | None = None,
    keep_indexes: bool = False,
    echo: Echo = print,
) -> GenerateReport:
    """Replace the bench database's customers, consents and activities; see the module docstring."""
    if customers < 1 or activities_per_customer < 0:
        raise BenchError("--customers must be at least 1 and --activities-per-customer at least 0")
    check_bench_url(url)
    anchor = anchor or data.anchor_today()
    report = GenerateReport(database_name(url), customers, 0, 0, seed, anchor.isoformat(), keep_indexes)
    clock = _Phases(report, echo)
    echo(
        f"generate: {customers:,} customers, {customers * activities_per_customer:,} activities "
        f"into {database_name(url)} (seed {seed}, anchor {anchor:%Y-%m-%d})"
    )

    clock.phase("create database", lambda: (None, "created" if ensure_database(url) else "exists"))
    clock.phase("migrate", lambda: migrate(url))
    setup_django(url)
    from customers.models import Activity, Consent, Customer

    tables = [Customer._meta.db_table, Consent._meta.db_table, Activity._meta.db_table]
    with connect(url) as conn:
        # One transaction: COPY FREEZE needs the TRUNCATE in it, and a failure restores everything.
        conn.execute("SET LOCAL maintenance_work_mem = '1GB'")
        plans = [
            (Customer, "customers", data.CUSTOMER_COLUMNS, data.customer_chunks(customers, seed=seed, anchor=anchor)),
            (Consent, "consents", data.CONSENT_COLUMNS, data.consent_chunks(customers, seed=seed, anchor=anchor)),
            (
                Activity,
                "activities",
                data.ACTIVITY_COLUMNS,
                data.activity_chunks(customers, activities_per_customer, seed=seed, anchor=anchor),
            ),
        ]
        extras = {model: extra_columns(model, columns, conn) for model, _, columns, _ in plans}

        def truncate() -> tuple[None, str]:
            conn.execute(
                sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(sql.SQL(", ").join(map(sql.Identifier, tables)))
            )
            return None, ", ".join(tables)

        clock.phase("truncate", truncate)
        secondaries = [] if keep_indexes else _secondaries(conn, tables)

        def drop() -> tuple[None, str]:
            for s in reversed(secondaries):
                conn.execute(s.drop_sql())
            return None, f"{len(secondaries)} indexes and constraints" if secondaries else "kept (--keep-indexes)"

        clock.phase("drop indexes", drop)
        for model, label, columns, chunks in plans:
            extra_cols, suffix = extras[model]

            def load(
                table: str = model._meta.db_table,
                columns: tuple[str, ...] = columns + extra_cols,
                chunks: Any = chunks,
                suffix: str = suffix,
            ) -> tuple[int, str]:
                rows, generating = _copy(conn, table, columns, chunks, suffix=suffix)
                return rows, f"(python generating the rows: {generating:.1f} s)"

            rows = clock.phase(f"copy {label}", load).rows or 0
            setattr(report, label, rows)

        def derive_stats() -> tuple[int, str]:
            # What customers.services.activities keeps current in a live system, set-based here.
            # Before the indexes are rebuilt, so the UPDATE maintains none of them.
            updated = conn.execute(
                "UPDATE customers_customer c SET lifetime_value = s.ltv, orders_count = s.n, last_purchase_at = s.last "
                "FROM (SELECT customer_id, sum((properties->>'amount')::numeric) AS ltv, count(*) AS n, "
                "max(occurred_at) AS last FROM customers_activity WHERE kind = 'purchase' GROUP BY customer_id) s "
                "WHERE s.customer_id = c.id"
            ).rowcount
            return updated, "lifetime value, orders and last purchase from purchase activities"

        clock.phase("derive stats", derive_stats)

        def recreate() -> tuple[None, str]:
            for s in secondaries:
                started = time.perf_counter()
                conn.execute(s.create_sql())
                report.rebuilt_seconds[f"{s.kind} {s.name}"] = seconds = time.perf_counter() - started
                echo(f"    {s.kind} {s.name}: {seconds:.2f} s")
            if not keep_indexes and _secondaries(conn, tables) != secondaries:
                raise BenchError("recreated indexes and constraints differ from the dropped ones; rolled back")
            return None, f"{len(secondaries)} indexes and constraints"

        clock.phase("recreate indexes", recreate)

        def sequences() -> None:
            for table in tables:
                conn.execute(
                    sql.SQL(
                        "SELECT setval(pg_get_serial_sequence({t}, 'id'), COALESCE(max(id), 1), max(id) IS NOT NULL)"
                        " FROM {i}"
                    ).format(t=sql.Literal(table), i=sql.Identifier(table))
                )

        def analyze() -> None:
            conn.execute(sql.SQL("ANALYZE {}").format(sql.SQL(", ").join(map(sql.Identifier, tables))))

        clock.phase("sequences", sequences)
        clock.phase("analyze", analyze)
        clock.phase("commit", conn.commit)
    echo(
        f"  {'total':<24} {report.total_seconds:>9.2f} s {report.total_rows:>12,} rows "
        f"{report.total_rows / report.total_seconds:>11,.0f} rows/s"
    )
    return report
