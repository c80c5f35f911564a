"""Benchmark scenarios: a Chorus code path timed side by side with a raw-PostgreSQL baseline.

Contract:

* A :class:`Scenario` has a ``chorus`` side and/or a ``baseline`` side; each side
  is a callable returning a :class:`Sample` (elapsed seconds of the timed part
  only, and a value: a count, or rows copied). Untimed setup and teardown live
  inside the callable.
* :func:`run_scenario` calls each side once to warm caches, then ``repeat``
  times, alternating chorus and baseline so drift hits both equally, and
  reports median/min/max in milliseconds and ``ratio = chorus median /
  baseline median``.
* When both sides return a value, they must be equal (the compiled segment
  counts the same customers as the hand-written SQL); ``values_match`` records it.
* Scenarios need Django configured for the bench database
  (:func:`benchmarks.db.setup_django`) and a psycopg connection to it.

To add a scenario, write a ``_name(ctx) -> Scenario`` function and list it in
:data:`SCENARIOS` under its name.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from benchmarks import data


@dataclass
class Sample:
    seconds: float
    value: int


@dataclass
class Timing:
    """Repeated measurements of one side of a scenario, in milliseconds."""

    samples_ms: list[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def min_ms(self) -> float:
        return min(self.samples_ms)

    @property
    def max_ms(self) -> float:
        return max(self.samples_ms)

    def to_dict(self) -> dict[str, Any]:
        return {
            "median_ms": round(self.median_ms, 3),
            "min_ms": round(self.min_ms, 3),
            "max_ms": round(self.max_ms, 3),
            "samples_ms": [round(s, 3) for s in self.samples_ms],
        }


Side = Callable[[], Sample]


@dataclass
class Scenario:
    name: str
    description: str
    chorus: Side | None
    baseline: Side | None
    chorus_label: str = ""
    baseline_label: str = ""
    rows_per_second: bool = False  # the value is rows moved: also report throughput
    sql: dict[str, str] = field(default_factory=dict)
    note: str = ""
    value_label: str = "count"


@dataclass
class ScenarioResult:
    name: str
    description: str
    chorus_label: str
    baseline_label: str
    chorus: Timing | None
    baseline: Timing | None
    chorus_value: int | None
    baseline_value: int | None
    rows_per_second: bool
    sql: dict[str, str]
    note: str
    value_label: str = "count"

    @property
    def ratio(self) -> float | None:
        if self.chorus and self.baseline and self.baseline.median_ms > 0:
            return self.chorus.median_ms / self.baseline.median_ms
        return None

    @property
    def values_match(self) -> bool | None:
        if self.chorus_value is None or self.baseline_value is None:
            return None
        return self.chorus_value == self.baseline_value

    def throughput(self, timing: Timing | None, value: int | None) -> float | None:
        if not (self.rows_per_second and timing and value):
            return None
        return value / (timing.median_ms / 1000)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "chorus_label": self.chorus_label,
            "baseline_label": self.baseline_label,
            "chorus": self.chorus.to_dict() if self.chorus else None,
            "baseline": self.baseline.to_dict() if self.baseline else None,
            "chorus_value": self.chorus_value,
            "baseline_value": self.baseline_value,
            "values_match": self.values_match,
            "ratio": round(self.ratio, 3) if self.ratio is not None else None,
            "chorus_rows_per_second": self.throughput(self.chorus, self.chorus_value),
            "baseline_rows_per_second": self.throughput(self.baseline, self.baseline_value),
            "sql": self.sql,
            "note": self.note,
            "value_label": self.value_label,
        }


@dataclass
class Context:
    """What scenarios may use: a psycopg connection to the bench DB and its sizes."""

    conn: psycopg.Connection
    customers: int
    activities_per_customer: int
    copy_rows: int
    seed: int


def _timed(fn: Callable[[], int]) -> Sample:
    started = time.perf_counter()
    value = fn()
    return Sample(time.perf_counter() - started, value)


def _django_count_sql(raw: str) -> Side:
    """A baseline side: ``raw`` (a ``SELECT count(*) ...``) on Django's own connection."""
    from django.db import connection

    def side() -> Sample:
        def count() -> int:
            with connection.cursor() as cur:
                cur.execute(raw)
                return cur.fetchone()[0]

        return _timed(count)

    return side


def _segment_count(tree: dict[str, Any]) -> Side:
    """A Chorus side: count an unsaved dynamic segment through ``segments.selectors``."""
    from segments.models import Segment
    from segments.selectors import segment_count

    def side() -> Sample:
        return _timed(lambda: segment_count(Segment(name="bench", kind=Segment.Kind.DYNAMIC, rules=tree)))

    return side


def _compiled_sql(tree: dict[str, Any]) -> str:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from segments.models import Segment
    from segments.selectors import segment_count

    with CaptureQueriesContext(connection) as captured:
        segment_count(Segment(name="bench", kind=Segment.Kind.DYNAMIC, rules=tree))
    return captured.captured_queries[-1]["sql"]


def _segment_scenario(
    name: str, description: str, tree: dict[str, Any], baseline_sql: str, *, baseline_label: str = "hand-written SQL"
) -> Scenario:
    """A compiled segment count next to the hand-written SQL that counts the same customers."""
    return Scenario(
        name=name,
        description=description,
        chorus=_segment_count(tree),
        baseline=_django_count_sql(baseline_sql),
        chorus_label="segment_count(compile_rules(tree))",
        baseline_label=baseline_label,
        sql={"chorus": _compiled_sql(tree), "baseline": baseline_sql},
    )


# --- (a) COPY -----------------------------------------------------------------------------------


def copy_activities(ctx: Context) -> Scenario:
    """COPY the same pre-generated activity rows into an unindexed table and a Chorus-shaped one."""
    from customers.models import Activity

    table = Activity._meta.db_table
    # Generated before timing: only PostgreSQL's work is measured, not Python's.
    chunks = [
        text
        for text, _ in data.activity_chunks(
            ctx.customers,
            ctx.activities_per_customer,
            seed=ctx.seed + 1,
            anchor=data.anchor_today(),
            total=ctx.copy_rows,
        )
    ]
    conn = ctx.conn

    def copy_into(scratch: str, shape: sql.Composable) -> Sample:
        name = sql.Identifier(scratch)
        with conn.transaction():
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
            conn.execute(sql.SQL("CREATE TABLE {} ").format(name) + shape)
        columns = sql.SQL(", ").join(map(sql.Identifier, data.ACTIVITY_COLUMNS))
        started = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(name, columns)) as copy:
                for text in chunks:
                    copy.write(text)
            rows = cur.rowcount
        elapsed = time.perf_counter() - started  # includes COMMIT, so deferred FK checks count
        with conn.transaction():
            conn.execute(sql.SQL("DROP TABLE {}").format(name))
        return Sample(elapsed, rows)

    raw_shape = sql.SQL("(LIKE {} INCLUDING DEFAULTS)").format(sql.Identifier(table))
    chorus_shape = sql.SQL(
        "(LIKE {t} INCLUDING ALL, FOREIGN KEY (customer_id) REFERENCES {c} (id) DEFERRABLE INITIALLY DEFERRED)"
    ).format(t=sql.Identifier(table), c=sql.Identifier("customers_customer"))
    n_indexes = conn.execute("SELECT count(*) FROM pg_index WHERE indrelid = %s::regclass", [table]).fetchone()[0]
    return Scenario(
        name="copy.activities",
        description=(
            f"COPY {ctx.copy_rows:,} activity rows (generated beforehand) into a table shaped like {table} "
            f"with its {n_indexes} indexes and a deferred FK to customers, vs the same COPY into a bare table"
        ),
        chorus=lambda: copy_into("bench_copy_chorus", chorus_shape),
        baseline=lambda: copy_into("bench_copy_raw", raw_shape),
        chorus_label=f"activity schema ({n_indexes} indexes + FK)",
        baseline_label="raw COPY, no indexes",
        rows_per_second=True,
    )


# --- (b) profile segments -----------------------------------------------------------------------

FIELD_RULE = {"field": "country", "op": "eq", "value": "PL"}
FIELD_SQL = "SELECT count(*) FROM customers_customer WHERE country = 'PL' AND erased_at IS NULL"


def field_segment(ctx: Context) -> Scenario:
    return _segment_scenario(
        "segment.field",
        "count of country eq PL (one indexed column), compiled vs hand-written SQL",
        FIELD_RULE,
        FIELD_SQL,
    )


PROFILE_RULE = {
    "all": [
        {"field": "country", "op": "eq", "value": "PL"},
        {"attribute": "tier", "op": "in", "value": ["gold", "silver"]},
    ]
}
PROFILE_SQL = (
    "SELECT count(*) FROM customers_customer WHERE country = 'PL' AND attributes->>'tier' IN ('gold', 'silver') "
    "AND erased_at IS NULL"
)


def profile_segment(ctx: Context) -> Scenario:
    return _segment_scenario(
        "segment.profile",
        "count of country eq PL and attribute tier in [gold, silver], compiled vs hand-written SQL",
        PROFILE_RULE,
        PROFILE_SQL,
    )


# --- (c) consent segment ------------------------------------------------------------------------

CONSENT_RULE = {"consent": "email", "op": "eq", "value": "opted_in"}
CONSENT_SQL = (
    "SELECT count(*) FROM ("
    "SELECT DISTINCT ON (customer_id) customer_id, status FROM customers_consent WHERE channel = 'email' "
    "ORDER BY customer_id, occurred_at DESC, id DESC) latest "
    "JOIN customers_customer c ON c.id = latest.customer_id AND c.erased_at IS NULL "
    "WHERE status = 'opted_in'"
)


def consent_segment(ctx: Context) -> Scenario:
    return _segment_scenario(
        "segment.consent",
        "count of customers whose latest email consent is opted_in, compiled vs hand-written SQL",
        CONSENT_RULE,
        CONSENT_SQL,
        baseline_label="hand-written SQL (DISTINCT ON)",
    )


# --- (d) four profile/attribute conditions -------------------------------------------------------

PROFILE4_RULE = {
    "all": [
        {"field": "country", "op": "eq", "value": "PL"},
        {"attribute": "tier", "op": "eq", "value": "gold"},
        {"attribute": "favourite_category", "op": "eq", "value": "books"},
        {"field": "created_at", "op": "within_last_days", "value": 730},
    ]
}
PROFILE4_SQL = (
    "SELECT count(*) FROM customers_customer WHERE country = 'PL' "
    """AND attributes @> '{"tier": "gold"}' AND attributes @> '{"favourite_category": "books"}' """
    "AND created_at >= now() - interval '730 days' AND created_at <= now() AND erased_at IS NULL"
)


def profile4_segment(ctx: Context) -> Scenario:
    return _segment_scenario(
        "segment.profile4",
        "count of 4 conditions: country eq PL, tier eq gold, favourite_category eq books, signed up within 730 days",
        PROFILE4_RULE,
        PROFILE4_SQL,
    )


# --- (e) activity rule ----------------------------------------------------------------------------

ACTIVITY_RULE = {"activity": "message.clicked", "channel": "email", "within_days": 30}
ACTIVITY_SQL = (
    "SELECT count(*) FROM customers_customer c WHERE c.erased_at IS NULL AND EXISTS ("
    "SELECT 1 FROM customers_activity a WHERE a.customer_id = c.id AND a.kind = 'message.clicked' "
    "AND a.channel = 'email' AND a.occurred_at >= now() - interval '30 days')"
)


def activity_rule(ctx: Context) -> Scenario:
    return _segment_scenario(
        "segment.activity",
        "customers who clicked an email in the last 30 days, compiled vs hand-written SQL",
        ACTIVITY_RULE,
        ACTIVITY_SQL,
        baseline_label="hand-written SQL (EXISTS)",
    )


# --- (f) pages: server time of the customer list, search and a customer with 10,000 activities -----

BUSY_CUSTOMER_ACTIVITIES = 10_000


def _busy_customer(conn: psycopg.Connection) -> int:
    """The oldest customer, topped up to 10,000 activities (idempotent; part of setup, not timed)."""
    customer_id = conn.execute("SELECT min(id) FROM customers_customer").fetchone()[0]
    have = conn.execute("SELECT count(*) FROM customers_activity WHERE customer_id = %s", [customer_id]).fetchone()[0]
    if have < BUSY_CUSTOMER_ACTIVITIES:
        conn.execute(
            "INSERT INTO customers_activity (customer_id, occurred_at, kind, channel, properties) "
            "SELECT %s, now() - make_interval(mins => n), "
            "(ARRAY['message.sent','message.delivered','message.opened','message.clicked','purchase'])[1 + n %% 5], "
            "(ARRAY['email','sms','whatsapp','social',''])[1 + n %% 5], '{}'::jsonb "
            "FROM generate_series(1, %s) AS n",
            [customer_id, BUSY_CUSTOMER_ACTIVITIES - have],
        )
        conn.commit()
    return customer_id


def _page(path: str) -> Side:
    """A Chorus side: GET ``path`` through Django's full request stack as a logged-in Admin."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    user, _ = get_user_model().objects.get_or_create(username="bench")
    user.groups.add(Group.objects.get(name="Admin"))
    client = Client()
    client.force_login(user)

    def side() -> Sample:
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            response = client.get(path)
            elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"GET {path} answered {response.status_code}")
        return Sample(elapsed, len(queries.captured_queries))

    return side


def _page_scenario(name: str, description: str, path: str) -> Scenario:
    return Scenario(
        name=name,
        description=description,
        chorus=_page(path),
        baseline=None,
        chorus_label=f"GET {path}",
        value_label="SQL queries",
    )


def customer_list_page(ctx: Context) -> Scenario:
    return _page_scenario("page.customers", "customer list, first page", "/customers/")


def customer_search_page(ctx: Context) -> Scenario:
    return _page_scenario("page.customers.search", "customer list searching a name", "/customers/?q=Nowak")


def customer_search_email_page(ctx: Context) -> Scenario:
    return _page_scenario(
        "page.customers.search_email", "customer list searching an email prefix", "/customers/?q=anna.nowak1"
    )


def customer_count_fragment(ctx: Context) -> Scenario:
    return _page_scenario("page.customers.count", "the list's total (loaded after the page)", "/customers/count/")


def customer_search_count_fragment(ctx: Context) -> Scenario:
    return _page_scenario(
        "page.customers.search_count", "the search's total (loaded after the page)", "/customers/count/?q=Nowak"
    )


def customer_page(ctx: Context) -> Scenario:
    customer_id = _busy_customer(ctx.conn)
    return _page_scenario(
        "page.customer",
        "a customer page with 10,000 activities (timeline, stats, segments)",
        f"/customers/{customer_id}/",
    )


# Scenario name -> factory; ``run --only TEXT`` builds only the ones whose name contains TEXT.
SCENARIOS: dict[str, Callable[[Context], Scenario]] = {
    "copy.activities": copy_activities,
    "segment.field": field_segment,
    "segment.profile": profile_segment,
    "segment.consent": consent_segment,
    "segment.profile4": profile4_segment,
    "segment.activity": activity_rule,
    "page.customers": customer_list_page,
    "page.customers.search": customer_search_page,
    "page.customers.search_email": customer_search_email_page,
    "page.customers.count": customer_count_fragment,
    "page.customers.search_count": customer_search_count_fragment,
    "page.customer": customer_page,
}


def run_scenario(scenario: Scenario, repeat: int) -> ScenarioResult:
    """Warm each side once, then time it ``repeat`` times, alternating sides."""
    sides = {"chorus": scenario.chorus, "baseline": scenario.baseline}
    samples: dict[str, list[Sample]] = {k: [] for k, side in sides.items() if side}
    for key in samples:
        sides[key]()  # warm-up, not recorded
    for _ in range(repeat):
        for key in samples:
            samples[key].append(sides[key]())

    def timing(key: str) -> Timing | None:
        return Timing([s.seconds * 1000 for s in samples[key]]) if key in samples else None

    def value(key: str) -> int | None:
        return samples[key][-1].value if key in samples else None

    return ScenarioResult(
        name=scenario.name,
        description=scenario.description,
        chorus_label=scenario.chorus_label,
        baseline_label=scenario.baseline_label,
        chorus=timing("chorus"),
        baseline=timing("baseline"),
        chorus_value=value("chorus"),
        baseline_value=value("baseline"),
        rows_per_second=scenario.rows_per_second,
        sql=scenario.sql,
        note=scenario.note,
        value_label=scenario.value_label,
    )


def format_table(results: list[ScenarioResult]) -> str:
    """An aligned text table: scenario, median/min/max ms, baseline median, ratio, notes."""
    header = ("scenario", "median ms", "min", "max", "baseline median", "ratio", "notes")
    rows: list[tuple[str, ...]] = [header]
    for r in results:
        c, b = r.chorus, r.baseline
        notes = []
        if r.rows_per_second:
            cr, br = r.throughput(c, r.chorus_value), r.throughput(b, r.baseline_value)
            notes.append(f"{r.chorus_value:,} rows: {cr:,.0f} rows/s vs {br:,.0f} rows/s" if cr and br else "")
        else:
            shown = r.chorus_value if r.chorus_value is not None else r.baseline_value
            notes.append(f"{r.value_label} {shown:,}")
            if r.values_match is False:
                notes.append(f"MISMATCH: baseline counts {r.baseline_value:,}")
        if not c:
            notes.append("baseline only")
        rows.append(
            (
                r.name,
                f"{c.median_ms:,.1f}" if c else "-",
                f"{c.min_ms:,.1f}" if c else "-",
                f"{c.max_ms:,.1f}" if c else "-",
                f"{b.median_ms:,.1f}" if b else "-",
                f"{r.ratio:.2f}x" if r.ratio is not None else "-",
                "; ".join(n for n in notes if n),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), *(cell.rjust(w) for cell, w in zip(row[1:-1], widths[1:-1], strict=True))]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
