"""Command line: ``python -m benchmarks generate|run``.

``generate --customers N [--activities-per-customer 10] [--database-url URL] [--seed 42]``
    (Re)fill the bench database; prints per-phase timings and rows/s.
``run [--customers N] [--repeat 5] [--json PATH] [--database-url URL] [--copy-rows 200000]``
    Generate first if the bench database has fewer than N customers, then time
    every scenario and print a table; write JSON to ``--json`` or to
    ``benchmarks/results/<UTC timestamp>.json``. Exits 1 if a compiled segment
    counts differently from its hand-written baseline.

``import [--rows 1000000] [--runs 3] [--scenarios new,reimport,update,copy] [--database-url URL]``
    Time the customer CSV import (new customers, re-import, every row changed)
    next to raw COPY of the same file, on ``chorus_bench_import``; see
    ``benchmarks/imports.py``.

``render [--renders 50000] [--repeat 5] [--json PATH]``
    Time personalised email rendering (a 1 KB body, 5 variables) through
    Chorus's compiled Liquid next to Django's template engine; no database.
    See ``benchmarks/render.py``.

``send [--messages 50000] [--workers 2] [--runs 3] [--broker redis://127.0.0.1:6379/14] [--json PATH]``
    Time the email send path (claim, render, SendGrid call to the sandbox
    server, status recorded) with real Celery worker processes, on
    ``chorus_bench_send``; prints messages/s and each worker's peak RSS. See
    ``benchmarks/send.py``.

``webhooks [--customers 60000] [--events 150000] [--runs 3] [--processes 2] [--json PATH]``
    Time the SendGrid event webhook: acknowledge latency of a signed 768 KB
    batch and events/s applied to messages and timelines, checked against the
    expected end state, on ``chorus_bench_webhooks``. See ``benchmarks/webhooks.py``.

``sms [--mps 20] [--messages 400] [--workers 2] [--batch 20] [--runs 3] [--broker URL] [--json PATH]``
    Send SMS through a sender limited to ``--mps`` with real worker processes
    sharing the Redis limiter, on ``chorus_bench_sms``; prints the achieved rate
    and the busiest 1-second window at the sandbox. See ``benchmarks/sms.py``.

``--database-url`` names the bench database itself (its name must start with
``chorus_bench``); by default it is ``chorus_bench`` on the ``$DATABASE_URL``
server. Errors the operator can fix exit 2 with a one-line message.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from benchmarks import imports, render, send, sms, webhooks
from benchmarks.db import (
    PROJECT_ROOT,
    BenchError,
    check_bench_url,
    connect,
    database_exists,
    database_name,
    default_bench_url,
    setup_django,
)
from benchmarks.generate import GenerateReport, generate
from benchmarks.scenarios import SCENARIOS, Context, format_table, run_scenario

RESULTS_DIR = PROJECT_ROOT / "benchmarks" / "results"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--database-url",
        default=None,
        help="bench database URL (name must start with chorus_bench; default: chorus_bench on $DATABASE_URL's server)",
    )
    common.add_argument("--customers", type=_positive, default=1_000_000, help="customers (default 1,000,000)")
    common.add_argument("--activities-per-customer", type=_non_negative, default=10, help="default 10")
    common.add_argument("--seed", type=int, default=42, help="data seed (default 42)")

    gen = sub.add_parser("generate", parents=[common], help="(re)fill the bench database")
    gen.add_argument(
        "--keep-indexes",
        action="store_true",
        help="COPY with every index and constraint in place (to measure what dropping them saves)",
    )
    gen.add_argument("--json", type=Path, help="also write the generation report as JSON here")

    run = sub.add_parser("run", parents=[common], help="time the scenarios")
    run.add_argument("--repeat", type=_positive, default=5, help="timed repetitions per side (default 5)")
    run.add_argument("--copy-rows", type=_positive, default=200_000, help="rows per COPY sample (default 200,000)")
    run.add_argument("--json", type=Path, help="where to write results (default benchmarks/results/<timestamp>.json)")
    run.add_argument("--only", default="", help="run only scenarios whose name contains this text, e.g. segment.")
    imports.add_parser(sub)
    render.add_parser(sub)
    send.add_parser(sub)
    webhooks.add_parser(sub)
    sms.add_parser(sub)
    return parser


def _counts(conn: psycopg.Connection) -> dict[str, int] | None:
    """Exact row counts of the bench tables, or None if they do not exist yet."""
    try:
        return {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("customers_customer", "customers_consent", "customers_activity")
        }
    except psycopg.errors.UndefinedTable:
        conn.rollback()
        return None


def _server_info(conn: psycopg.Connection) -> dict[str, Any]:
    settings = ("shared_buffers", "work_mem", "maintenance_work_mem", "max_parallel_workers_per_gather", "jit")
    info = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in settings}
    info["version"] = conn.execute("SELECT version()").fetchone()[0]
    return info


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def cmd_generate(args: argparse.Namespace, url: str) -> int:
    report = generate(
        url,
        args.customers,
        activities_per_customer=args.activities_per_customer,
        seed=args.seed,
        keep_indexes=args.keep_indexes,
    )
    if args.json:
        _write_json(args.json, report.to_dict())
        print(f"wrote {args.json}")
    return 0


def cmd_run(args: argparse.Namespace, url: str) -> int:
    started = datetime.now(UTC)
    generation: GenerateReport | None = None
    counts = None
    if database_exists(url):
        with connect(url) as conn:
            counts = _counts(conn)
    if counts is None or counts["customers_customer"] < args.customers:
        have = "no bench data" if counts is None else f"{counts['customers_customer']:,} customers"
        print(f"run: {database_name(url)} has {have}; generating {args.customers:,} first")
        generation = generate(url, args.customers, activities_per_customer=args.activities_per_customer, seed=args.seed)
        with connect(url) as conn:
            counts = _counts(conn)
    assert counts is not None
    setup_django(url)
    customers = counts["customers_customer"]
    print(
        f"run: {database_name(url)}: {customers:,} customers, {counts['customers_consent']:,} consents, "
        f"{counts['customers_activity']:,} activities; repeat {args.repeat}"
    )
    results = []
    with connect(url, autocommit=True) as conn:
        server = _server_info(conn)
        ctx = Context(
            conn=conn,
            customers=customers,
            activities_per_customer=max(1, counts["customers_activity"] // customers),
            copy_rows=args.copy_rows,
            seed=args.seed,
        )
        for name, make in SCENARIOS.items():
            if args.only not in name:
                continue
            scenario = make(ctx)
            print(f"  {scenario.name}: {scenario.description}", flush=True)
            results.append(run_scenario(scenario, args.repeat))
    print()
    print(format_table(results))
    for r in results:
        if r.note:
            print(f"note: {r.name}: {r.note}")

    path = args.json or RESULTS_DIR / f"{started:%Y%m%dT%H%M%SZ}.json"
    _write_json(
        path,
        {
            "started_at": started.isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "database": database_name(url),
            "counts": counts,
            "repeat": args.repeat,
            "host": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
            },
            "server": server,
            "generation": generation.to_dict() if generation else None,
            "scenarios": [r.to_dict() for r in results],
        },
    )
    print(f"wrote {path}")
    mismatches = [r.name for r in results if r.values_match is False]
    if mismatches:
        print(f"error: compiled and hand-written counts differ in {', '.join(mismatches)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "import":
            return imports.main(args)
        if args.command == "render":
            return render.main(args)
        if args.command == "send":
            return send.main(args)
        if args.command == "webhooks":
            return webhooks.main(args)
        if args.command == "sms":
            return sms.main(args)
        url = check_bench_url(args.database_url or default_bench_url())
        return (cmd_generate if args.command == "generate" else cmd_run)(args, url)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
