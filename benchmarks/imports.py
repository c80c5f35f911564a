"""``python -m benchmarks import``: the customer CSV import end to end, next to raw COPY of the same file.

Contract:

* Works on its own database, by default ``chorus_bench_import`` on the
  ``$DATABASE_URL`` server; the name must start with ``chorus_bench`` and must not
  be ``chorus_bench`` itself (the 1M/10M scenario dataset is never touched). It is
  created and migrated (the real schema) when needed, and its customers, consents,
  activities and import jobs are truncated before every "new" run.
* The CSV is generated once per (rows, seed) into a temporary directory: realistic
  and deterministic (see :func:`write_csv`), including ~0.4 % bad rows.
* Each measured import runs in a fresh child process (``python -m benchmarks.imports
  _child ...``) through the same services as the Celery task: ``import_create``
  (reads and checks the whole file, stores it) then ``import_run``. The child reports
  seconds for both and its peak RSS (``ru_maxrss``), so the figure is the worker's
  own, with nothing of the generator in it.
* Scenarios per run: ``new`` (empty tables, every row creates a customer),
  ``reimport`` (the same file again: every row matches, nothing changes),
  ``update`` (a variant of the file where every row changes: an attribute on all,
  10 % of the consents flipped), and ``copy`` (raw ``COPY ... FROM STDIN (FORMAT
  csv, HEADER)`` of the same file into a bare all-text table: the ceiling).
* Prints every run and the medians; ``--json PATH`` also writes them.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import data
from benchmarks.db import (
    DEFAULT_NAME,
    PROJECT_ROOT,
    BenchError,
    check_bench_url,
    connect,
    database_name,
    default_bench_url,
    ensure_database,
    migrate,
)

DEFAULT_DATABASE = "chorus_bench_import"
HEADER = (
    "email",
    "phone",
    "first_name",
    "last_name",
    "country",
    "city",
    "timezone",
    "locale",
    "tier",
    "orders",
    "lifetime_value",
    "favourite_category",
    "email_opt_in",
)
SCENARIOS = ("new", "reimport", "update", "copy")
TABLES = ("customers_customer", "customers_consent", "customers_activity", "customers_importjob")


_TRUNK_PREFIX = {"DE": "0", "GB": "0", "FR": "0", "NL": "0", "SE": "0"}


def _national(country: data.Country, number: int) -> str:
    """How people write the number at home: trunk prefix where the country has one, digits in groups."""
    digits = _TRUNK_PREFIX.get(country.code, "") + str(number)
    return " ".join(digits[i : i + 3] for i in range(0, len(digits), 3))


def write_csv(path: Path, rows: int, *, seed: int, variant: str = "") -> dict[str, int]:
    """Write ``rows`` customers as a CSV a CRM might export; returns how many rows are deliberately bad.

    95 % have an email (unique), 70 % a phone: 80 % of those in E.164, 10 % spaced
    international (``+48 600 100 200``), 10 % national with the country column
    giving the region; names, city, time zone and locale match the country; tier,
    orders, lifetime value and favourite category become attributes; the email
    opt-in is yes (70 %), no (15 %) or empty. About 0.2 % of the rows have a
    malformed email and 0.2 % a too-short phone. ``variant="update"`` writes the
    same people with every row's ``orders`` + 1 and 10 % of the opt-ins flipped.
    """
    rng = random.Random(f"{seed}:import-csv")
    flip = random.Random(f"{seed}:import-csv:{variant}").random
    bad = {"email": 0, "phone": 0}
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(HEADER)
        rand = rng.random
        for i in range(1, rows + 1):
            c = data.COUNTRIES[bisect.bisect_right(_COUNTRY_CUM, rand())]
            first = c.first_names[int(rand() * len(c.first_names))]
            last = c.last_names[int(rand() * len(c.last_names))]
            domain = c.domains[int(rand() * len(c.domains))]
            email = f"{_slug(first)}.{_slug(last)}{i}@{domain}" if rand() < 0.95 else ""
            number = c.national_base + i
            draw = rand()
            if draw < 0.56:
                phone = f"+{c.dial}{number}"
            elif draw < 0.63:
                phone = f"+{c.dial} {_national(c, number)}"
            elif draw < 0.70:
                phone = _national(c, number)
            else:
                phone = ""
            if not email and not phone:
                email = f"{_slug(first)}{i}@{domain}"
            flaw = rand()
            if flaw < 0.002 and email:
                email = email.replace("@", "@@")
                bad["email"] += 1
            elif flaw < 0.004 and phone:
                phone = phone[:5]
                bad["phone"] += 1
            tier = ("bronze", "silver", "gold", "platinum", "")[bisect.bisect_right(_TIER_CUM, rand())]
            orders = int(rand() ** 3 * 40)
            value = f"{orders * (20 + int(rand() * 180)) + int(rand() * 100) / 100:.2f}" if orders else "0"
            category = data.CATEGORIES[int(rand() * len(data.CATEGORIES))] if rand() < 0.6 else ""
            opt = rand()
            opt_in = "yes" if opt < 0.70 else ("no" if opt < 0.85 else "")
            if variant == "update":  # its own random stream: the same people as the base file
                orders += 1
                if opt_in and flip() < 0.10:
                    opt_in = "no" if opt_in == "yes" else "yes"
            city = c.cities[int(rand() * len(c.cities))]
            writer.writerow(
                (email, phone, first, last, c.code, city, c.timezone, c.locale, tier, orders, value, category, opt_in)
            )
    return bad


_TIER_CUM = (0.50, 0.75, 0.85, 0.88)
# Country weights as cumulative fractions, the last edge left out: a draw past the others is the last country.
_COUNTRY_CUM = [w / data.COUNTRY_CUM[-1] for w in data.COUNTRY_CUM[:-1]]
_SLUGS: dict[str, str] = {}


def _slug(name: str) -> str:
    slug = _SLUGS.get(name)
    if slug is None:
        slug = _SLUGS[name] = data._ascii_slug(name)
    return slug


# --- Child: one measured import ------------------------------------------------------------


def child(url: str, path: Path) -> dict[str, Any]:
    """Import ``path`` through ``import_create`` + ``import_run`` in this (fresh) process; seconds and peak RSS."""
    import resource

    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    if str(PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT))
    import django

    django.setup()
    from django.conf import settings

    from customers.imports import import_create, import_run
    from customers.models import ImportJob

    settings.MEDIA_ROOT = tempfile.mkdtemp(prefix="chorus-bench-import-media-")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with path.open("rb") as handle:
        job = import_create(file=handle, name=path.name, start=True, enqueue=False)
    created = time.perf_counter()
    steps: dict[str, float] = {}
    job = import_run(job_id=job.pk, on_progress=lambda progress: steps.update(progress.seconds))
    finished = time.perf_counter()
    if job.status != ImportJob.Status.DONE:
        raise BenchError(f"import failed: {job.error}")
    return {
        "rows": job.total_rows,
        "created": job.created_count,
        "updated": job.updated_count,
        "rejected": job.rejected_count,
        "create_seconds": created - started,
        "run_seconds": finished - created,
        "seconds": finished - started,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_setup_mb": rss_before / 1024,
        "database_seconds": {step: round(seconds, 2) for step, seconds in steps.items()},
    }


def _run_child(url: str, path: Path) -> dict[str, Any]:
    result = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "benchmarks.imports", "_child", url, str(path)],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BenchError(f"import child failed:\n{result.stdout}{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- Parent ----------------------------------------------------------------------------------


@dataclass
class Sample:
    scenario: str
    run: int
    rows: int
    seconds: float
    rows_per_second: float
    detail: dict[str, Any]


def _truncate(url: str) -> None:
    with connect(url) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
        conn.commit()
    with connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE customers_customer")
        conn.execute("CHECKPOINT")


def raw_copy(url: str, path: Path) -> tuple[int, float]:
    """COPY the CSV file as is into a fresh unlogged-free, index-free all-text table; (rows, seconds)."""
    columns = ", ".join(f"{name} text" for name in HEADER)
    with connect(url) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_import_raw")
        conn.execute(f"CREATE TABLE bench_import_raw ({columns})")
        conn.commit()
        started = time.perf_counter()
        with conn.cursor() as cur, path.open("rb") as handle:
            with cur.copy("COPY bench_import_raw FROM STDIN (FORMAT csv, HEADER)") as copy:
                while block := handle.read(1 << 20):
                    copy.write(block)
            rows = cur.rowcount
        conn.commit()
        seconds = time.perf_counter() - started
        conn.execute("DROP TABLE bench_import_raw")
        conn.commit()
    return rows, seconds


def check_import_url(url: str) -> str:
    check_bench_url(url)
    if database_name(url) == DEFAULT_NAME:
        raise BenchError(
            f"refusing to import into {DEFAULT_NAME!r}: it holds the scenario dataset; use another chorus_bench* "
            f"database (default {DEFAULT_DATABASE})"
        )
    return url


def run(url: str, *, rows: int, runs: int, seed: int, scenarios: tuple[str, ...], workdir: Path) -> list[Sample]:
    check_import_url(url)
    if ensure_database(url):
        print(f"import: created database {database_name(url)}")
    migrate(url)
    files = {"": workdir / f"customers-{rows}-{seed}.csv", "update": workdir / f"customers-{rows}-{seed}-update.csv"}
    for variant, path in files.items():
        if variant == "update" and "update" not in scenarios:
            continue
        if not path.exists():
            started = time.perf_counter()
            bad = write_csv(path, rows, seed=seed, variant=variant)
            print(
                f"import: wrote {path.name} ({path.stat().st_size / 1e6:.0f} MB, {rows:,} rows, {bad['email']} bad "
                f"emails, {bad['phone']} bad phones) in {time.perf_counter() - started:.1f} s"
            )
    samples: list[Sample] = []
    for n in range(1, runs + 1):
        for scenario in scenarios:
            if scenario == "copy":
                copied, seconds = raw_copy(url, files[""])
                sample = Sample(scenario, n, copied, seconds, copied / seconds, {})
            else:
                if scenario == "new":
                    _truncate(url)
                elif scenario in ("reimport", "update") and "new" not in scenarios and n == 1:
                    _truncate(url)
                    _run_child(url, files[""])  # the table must hold the customers first
                detail = _run_child(url, files["update" if scenario == "update" else ""])
                rate = detail["rows"] / detail["seconds"]
                sample = Sample(scenario, n, detail["rows"], detail["seconds"], rate, detail)
            samples.append(sample)
            extra = ""
            if sample.detail:
                d = sample.detail
                extra = (
                    f" (check+store {d['create_seconds']:.1f} s, run {d['run_seconds']:.1f} s; created {d['created']:,}"
                    f", updated {d['updated']:,}, rejected {d['rejected']:,}; peak RSS {d['peak_rss_mb']:.0f} MB)"
                )
            print(
                f"  run {n} {scenario:<9} {sample.rows:>10,} rows {sample.seconds:>7.1f} s "
                f"{sample.rows_per_second:>10,.0f} rows/s{extra}",
                flush=True,
            )
            if sample.detail.get("database_seconds"):
                steps = ", ".join(f"{k} {v:.1f}" for k, v in sample.detail["database_seconds"].items())
                print(f"      database side (s): {steps}", flush=True)
    return samples


def summary(samples: list[Sample]) -> list[dict[str, Any]]:
    out = []
    for scenario in dict.fromkeys(s.scenario for s in samples):
        group = [s for s in samples if s.scenario == scenario]
        row = {
            "scenario": scenario,
            "runs": len(group),
            "median_rows_per_second": statistics.median(s.rows_per_second for s in group),
            "median_seconds": statistics.median(s.seconds for s in group),
        }
        if group[0].detail:
            row["median_peak_rss_mb"] = statistics.median(s.detail["peak_rss_mb"] for s in group)
            row["max_peak_rss_mb"] = max(s.detail["peak_rss_mb"] for s in group)
            row["median_run_seconds"] = statistics.median(s.detail["run_seconds"] for s in group)
            row["median_create_seconds"] = statistics.median(s.detail["create_seconds"] for s in group)
        out.append(row)
    return out


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("import", help="time the customer CSV import against raw COPY")
    parser.add_argument(
        "--database-url",
        default=None,
        help=f"database for the import runs (default {DEFAULT_DATABASE} on $DATABASE_URL's server)",
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="CSV rows (default 1,000,000)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each scenario; medians are reported (default 3)")
    parser.add_argument("--seed", type=int, default=42, help="data seed (default 42)")
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"comma-separated subset of {', '.join(SCENARIOS)}"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="where the CSV files go (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write every sample and the medians here")


def main(args: argparse.Namespace) -> int:
    url = args.database_url or default_bench_url(name=DEFAULT_DATABASE)
    scenarios = tuple(s.strip() for s in args.scenarios.split(",") if s.strip())
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown or args.rows < 1 or args.runs < 1:
        raise BenchError(f"--scenarios takes {', '.join(SCENARIOS)}; --rows and --runs at least 1")
    workdir = args.workdir or Path(tempfile.gettempdir()) / "chorus-bench-import"
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"import: {database_name(url)}, {args.rows:,} rows, {args.runs} run(s): {', '.join(scenarios)}")
    samples = run(url, rows=args.rows, runs=args.runs, seed=args.seed, scenarios=scenarios, workdir=workdir)
    medians = summary(samples)
    print()
    print(f"{'scenario':<10} {'median rows/s':>14} {'median s':>9} {'peak RSS MB (median/max)':>26}")
    for row in medians:
        rss = f"{row['median_peak_rss_mb']:.0f} / {row['max_peak_rss_mb']:.0f}" if "median_peak_rss_mb" in row else "-"
        print(f"{row['scenario']:<10} {row['median_rows_per_second']:>14,.0f} {row['median_seconds']:>9.1f} {rss:>26}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"samples": [asdict(s) for s in samples], "medians": medians}, indent=2, default=str) + "\n"
        )
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "_child":
        print(json.dumps(child(sys.argv[2], Path(sys.argv[3]))))
        sys.exit(0)
    print("usage: python -m benchmarks import [--rows N] [--runs N] ...", file=sys.stderr)
    sys.exit(2)
