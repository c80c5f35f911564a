"""The benchmark tooling: deterministic data, a guarded target, and an end-to-end run.

The end-to-end test manages its own throwaway database (``chorus_bench_test_<pid>``
on the ``$DATABASE_URL`` server) through the real CLI in subprocesses, so it uses
none of pytest-django's database fixtures and leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from benchmarks import data
from benchmarks.db import (
    BenchError,
    check_bench_url,
    connect,
    drop_database,
    ensure_database,
    is_postgres_url,
    migrate,
    with_database,
)
from customers.identity import normalize_phone

ROOT = Path(__file__).resolve().parent.parent
SERVER_URL = os.environ.get("DATABASE_URL", "")
E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_generated_data_is_deterministic_and_unique() -> None:
    anchor = data.anchor_today()
    first = [text for text, _ in data.customer_chunks(300, seed=7, anchor=anchor)]
    assert first == [text for text, _ in data.customer_chunks(300, seed=7, anchor=anchor)]
    assert first != [text for text, _ in data.customer_chunks(300, seed=8, anchor=anchor)]
    rows = [line.split("\t") for line in "".join(first).splitlines()]
    emails = [r[1] for r in rows if r[1] != "\\N"]
    phones = [r[2] for r in rows if r[2] != "\\N"]
    assert len(set(emails)) == len(emails) > 250
    assert len(set(phones)) == len(phones) > 150
    assert all(E164.match(p) for p in phones)
    # What the product itself would accept: every generated number is a real number range.
    assert all(normalize_phone(p) == p for p in phones)
    activities = "".join(text for text, _ in data.activity_chunks(300, 10, seed=7, anchor=anchor))
    times = [line.split("\t")[2] for line in activities.splitlines()]
    assert len(times) == 3000
    assert times == sorted(times), "activities are generated in chronological (id) order"


def test_refuses_a_database_that_is_not_a_bench_database() -> None:
    with pytest.raises(BenchError, match="must start with 'chorus_bench'"):
        check_bench_url("postgres://postgres@127.0.0.1:5432/postgres")
    with pytest.raises(BenchError, match="must be PostgreSQL"):
        check_bench_url("sqlite:///tmp/chorus_bench.sqlite3")
    result = _cli("generate", "--customers", "10", "--database-url", "postgres://postgres@127.0.0.1:5432/chorus")
    assert result.returncode == 2
    assert "refusing to use database 'chorus'" in result.stderr


@pytest.fixture
def bench_url() -> Iterator[str]:
    url = with_database(SERVER_URL, f"chorus_bench_test_{os.getpid()}")
    drop_database(url)
    yield url
    drop_database(url)


_SCHEMA_SQL = """
    SELECT 'index ' || indexname || ': ' || indexdef FROM pg_indexes
    WHERE tablename IN ('customers_customer', 'customers_consent', 'customers_activity')
    UNION ALL
    SELECT 'constraint ' || conname || ': ' || pg_get_constraintdef(oid) FROM pg_constraint
    WHERE conrelid::regclass::text IN ('customers_customer', 'customers_consent', 'customers_activity')
"""


def _schema(url: str) -> set[str]:
    with connect(url) as conn:
        return {row[0] for row in conn.execute(_SCHEMA_SQL)}


@pytest.mark.skipif(
    not is_postgres_url(SERVER_URL),
    reason="benchmarks need PostgreSQL: set DATABASE_URL=postgres://... (the test creates and drops its own database)",
)
def test_generate_then_run_on_a_throwaway_database(bench_url: str, tmp_path: Path) -> None:
    ensure_database(bench_url)
    migrate(bench_url)
    migrated_schema = _schema(bench_url)

    generated = _cli("generate", "--customers", "500", "--database-url", bench_url)
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert "copy activities" in generated.stdout and "rows/s" in generated.stdout
    # Every index and constraint dropped for the load is back, exactly as migrations made it.
    assert _schema(bench_url) == migrated_schema

    with connect(bench_url, autocommit=True) as conn:  # each conn.transaction() really commits

        def scalar(query: str) -> int:
            return conn.execute(query).fetchone()[0]

        assert scalar("SELECT count(*) FROM customers_customer") == 500
        assert scalar("SELECT count(*) FROM customers_activity") == 5000
        assert 500 <= scalar("SELECT count(*) FROM customers_consent") <= 1000
        assert scalar("SELECT count(DISTINCT customer_id) FROM customers_consent") > 450
        assert (
            scalar(
                "SELECT count(*) FROM customers_activity a JOIN customers_customer c ON c.id = a.customer_id "
                "WHERE a.occurred_at < c.created_at"
            )
            == 0
        ), "no activity predates its customer"
        # Constraints work again, and new rows get ids after the generated ones.
        with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
            conn.execute(
                "INSERT INTO customers_customer (email, first_name, last_name, locale, timezone, country, city, "
                "attributes, lifetime_value, orders_count, created_at, updated_at) "
                "SELECT email, '', '', '', '', '', '', '{}', 0, 0, now(), now() "
                "FROM customers_customer WHERE email IS NOT NULL LIMIT 1"
            )
        with pytest.raises(psycopg.errors.ForeignKeyViolation), conn.transaction():
            conn.execute(
                "INSERT INTO customers_activity (customer_id, occurred_at, kind, channel, properties) "
                "VALUES (999999, now(), 'purchase', '', '{}')"
            )
        with conn.transaction(force_rollback=True):
            new_id = scalar(
                "INSERT INTO customers_activity (customer_id, occurred_at, kind, channel, properties) "
                "VALUES (1, now(), 'purchase', '', '{}') RETURNING id"
            )
            assert new_id > 5000

    results_path = tmp_path / "run.json"
    ran = _cli(
        "run", "--customers", "500", "--repeat", "1", "--copy-rows", "2000",
        "--database-url", bench_url, "--json", str(results_path),
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "generating" not in ran.stdout, "500 customers were already there"
    results = {s["name"]: s for s in json.loads(results_path.read_text())["scenarios"]}
    assert results["copy.activities"]["chorus_value"] == results["copy.activities"]["baseline_value"] == 2000
    for name in ("segment.field", "segment.profile", "segment.consent", "segment.profile4", "segment.activity"):
        scenario = results[name]
        assert scenario["chorus_value"] == scenario["baseline_value"], name
        assert scenario["values_match"] is True
        assert scenario["chorus"]["median_ms"] > 0 and scenario["ratio"] > 0
    for name in ("segment.field", "segment.profile", "segment.consent"):
        assert results[name]["chorus_value"] > 0, name
    for name in ("page.customers", "page.customers.search", "page.customer"):
        assert 0 < results[name]["chorus_value"] < 40, f"{name}: SQL queries per request"
