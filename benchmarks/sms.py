"""``python -m benchmarks sms``: a per-sender SMS rate limit shared by real worker processes.

Contract:

* Works on its own database, by default ``chorus_bench_sms`` on the
  ``$DATABASE_URL`` server (created and migrated when needed; its messages,
  sandbox outbox and timeline are truncated before every run), on the Redis
  broker ``--broker``, which also keeps the limiter's slots (``CHORUS_RATE_LIMITER=redis``).
* Data: one brand whose SMS sender has a ``SenderRateLimit`` of ``--mps``, one
  SMS step, ``--messages`` customers with SMS consent (created once, reused), and
  per run a new ``CampaignRun`` with one queued message per customer.
* The sandbox runs as a real HTTP server (``manage.py runserver --noreload``,
  threaded, ``DEBUG`` off); the real Twilio SDK posts to it and it records each
  request's receipt time (``SandboxMessage.created_at``). Playback tasks go to
  the ``default`` queue, which no worker here consumes (purged after each run).
* ``--workers`` real ``celery worker -Q sms --concurrency 1`` processes, started
  once; each run enqueues one ``messages_send`` task per ``--batch`` message ids
  on the ``sms`` queue, as dispatch does, and waits until none is queued or
  sending. Batches smaller than the default ``CHORUS_SEND_BATCH`` let every
  worker take a share of a few hundred messages.
* Measured from the sandbox's receipt times: the achieved rate
  ((messages - 1) / (last receipt - first receipt)), the most messages in any
  1-second window [t, t + 1), and the median count of the full windows starting
  at each receipt. Target: achieved >= 95 % of ``--mps``, busiest second <= ``--mps``.
  Prints every run and the medians; exits 1 if any second held more than ``--mps``.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks import processes
from benchmarks.db import (
    BenchError,
    check_bench_url,
    connect,
    database_name,
    default_bench_url,
    ensure_database,
    migrate,
    setup_django,
)

DEFAULT_DATABASE = "chorus_bench_sms"
DEFAULT_BROKER = "redis://127.0.0.1:6379/13"
SENDER = "+15005550100"
BODY = "Northwind: spring sale, 20% off this week. Reply STOP to opt out"
ACHIEVED_TARGET = 0.95
POLL_SECONDS = 0.2


def max_in_any_second(times: list[float]) -> int:
    """The most events in any window [t, t + 1): the count a provider's per-second limit checks."""
    times = sorted(times)
    most, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= 1:
            first += 1
        most = max(most, last - first + 1)
    return most


def window_counts(times: list[float]) -> list[int]:
    """Events in [t, t + 1) for each event time t whose window ends before the last event (full windows only)."""
    times = sorted(times)
    return [bisect.bisect_left(times, at + 1) - i for i, at in enumerate(times) if at + 1 <= times[-1]]


@dataclass
class RunResult:
    run: int
    messages: int
    achieved_per_second: float
    busiest_second: int
    median_second: float
    statuses: dict[str, int]


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("sms", help="SMS through a per-sender rate limit shared by real workers")
    parser.add_argument(
        "--database-url", default=None, help=f"database (default {DEFAULT_DATABASE} on $DATABASE_URL's server)"
    )
    parser.add_argument("--broker", default=DEFAULT_BROKER, help=f"Redis broker and limiter (default {DEFAULT_BROKER})")
    parser.add_argument("--mps", type=int, default=20, help="the sender's limit, messages per second (default 20)")
    parser.add_argument("--messages", type=int, default=400, help="messages per run (default 400)")
    parser.add_argument("--workers", type=int, default=2, help="celery worker processes (default 2)")
    parser.add_argument("--batch", type=int, default=20, help="message ids per send task (default 20)")
    parser.add_argument("--runs", type=int, default=3, help="runs; medians are reported (default 3)")
    parser.add_argument("--port", type=int, default=8766, help="port of the sandbox server (default 8766)")
    parser.add_argument("--json", type=Path, help="also write every run and the summary here")


# --- data ------------------------------------------------------------------------------------


def _step_ensure(mps: int, count: int):
    """The brand (its sender limited to ``mps``), SMS step and ``count`` consenting customers."""
    from campaigns.models import Brand, Campaign, Step, Template
    from channels.models import SenderRateLimit
    from customers.models import Consent, Customer
    from segments.models import Segment

    brand, _ = Brand.objects.get_or_create(
        name="SMS bench outfitters",
        defaults={
            "legal_company_name": "SMS Bench Outfitters Ltd",
            "postal_address": "1 Trail Road\nKraków 30-001\nPoland",
            "sms_sender": SENDER,
        },
    )
    SenderRateLimit.objects.update_or_create(channel="sms", sender=SENDER, defaults={"per_second": mps})
    template, _ = Template.objects.update_or_create(
        name="SMS bench sale", brand=brand, channel="sms", defaults={"body": BODY}
    )
    segment, _ = Segment.objects.get_or_create(name="SMS bench", defaults={"rules": {"all": []}})
    campaign, _ = Campaign.objects.get_or_create(
        name="SMS bench sale", brand=brand, defaults={"segment": segment, "state": Campaign.State.RUNNING}
    )
    step, _ = Step.objects.get_or_create(
        campaign=campaign, position=0, defaults={"channel": "sms", "template": template}
    )
    have = Customer.objects.filter(phone__startswith="+48609").count()
    customers = Customer.objects.bulk_create(
        Customer(phone=f"+48609{n:06d}", first_name=f"Texter{n}", country="PL") for n in range(have, count)
    )
    Consent.objects.bulk_create(
        Consent(customer=c, channel="sms", status=Consent.Status.OPTED_IN, source=Consent.Source.IMPORT)
        for c in customers
    )
    return step


def _run_prepare(step, count: int) -> tuple[int, list[int]]:
    """Empty the outbox, timeline, messages and the sender's slots; queue one message per customer in a new run."""
    from django.db import connection

    from campaigns.models import CampaignRun
    from channels.models import Message
    from channels.ratelimit import limiter
    from customers.models import Customer

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE channels_sandboxmessage, customers_activity, channels_message, channels_providerevent")
    limiter().client.delete(f"{limiter().prefix}sms:{SENDER}")
    latest = CampaignRun.objects.filter(campaign=step.campaign).order_by("-number").first()
    run = CampaignRun.objects.create(campaign=step.campaign, number=(latest.number + 1) if latest else 1)
    customers = Customer.objects.filter(phone__startswith="+48609").order_by("pk").values_list("pk", "phone")[:count]
    messages = Message.objects.bulk_create(
        Message(run=run, step=step, customer_id=pk, channel="sms", to_address=phone) for pk, phone in customers
    )
    return run.pk, [m.pk for m in messages]


# --- runs ------------------------------------------------------------------------------------


def timed_run(number: int, url: str, step, count: int, mps: int, batch: int) -> RunResult:
    from channels.tasks import messages_send
    from config.celery import Queue, app

    run_id, ids = _run_prepare(step, count)
    timeout = 60 + 3 * count / mps
    with connect(url, autocommit=True) as conn:
        started = time.monotonic()
        for start in range(0, count, batch):
            messages_send.apply_async(args=[ids[start : start + batch]], queue=Queue.SMS.value)
        pending = count
        while pending:
            if time.monotonic() - started > timeout:
                raise BenchError(f"run {number}: {pending} messages still pending after {timeout:.0f} s")
            time.sleep(POLL_SECONDS)
            pending = conn.execute(
                "SELECT count(*) FROM channels_message WHERE run_id = %s AND status IN ('queued', 'sending')", [run_id]
            ).fetchone()[0]
        statuses = dict(
            conn.execute("SELECT status, count(*) FROM channels_message WHERE run_id = %s GROUP BY status", [run_id])
        )
        received = [
            row[0]
            for row in conn.execute(
                "SELECT extract(epoch FROM created_at)::float8 FROM channels_sandboxmessage WHERE provider = 'twilio'"
            )
        ]
    with app.connection_for_write() as broker:  # the deferred playback tasks
        broker.default_channel.queue_purge(Queue.DEFAULT.value)
    if statuses.get("sent", 0) != count or len(received) != count:
        raise BenchError(f"run {number}: {len(received)} received, statuses {statuses}; expected {count} sent")
    counts = window_counts(received)
    return RunResult(
        run=number,
        messages=count,
        achieved_per_second=round((count - 1) / (max(received) - min(received)), 2),
        busiest_second=max_in_any_second(received),
        median_second=statistics.median(counts) if counts else 0,
        statuses=statuses,
    )


def main(args: argparse.Namespace) -> int:
    if min(args.mps, args.workers, args.runs, args.batch) < 1 or args.messages < 2:
        raise BenchError("--mps, --workers, --runs and --batch must be at least 1, --messages at least 2")
    if not args.broker.startswith(("redis://", "rediss://")):
        raise BenchError(f"--broker must be a redis:// URL, got {args.broker!r}")
    url = check_bench_url(args.database_url or default_bench_url(name=DEFAULT_DATABASE))
    ensure_database(url)
    migrate(url)
    os.environ.update(CELERY_BROKER_URL=args.broker, CHORUS_RATE_LIMITER="redis", CHORUS_REDIS_URL=args.broker)
    setup_django(url)
    from django.conf import settings

    step = _step_ensure(args.mps, args.messages)
    env = processes.environment(url, args.broker, args.port)
    logdir = Path(settings.DATA_DIR) / "bench-sms"
    logdir.mkdir(parents=True, exist_ok=True)
    print(
        f"sms: {database_name(url)}, broker and limiter {args.broker}, {args.messages:,} SMS x {args.runs} run(s) "
        f"at {args.mps}/s through {args.workers} worker process(es), {args.batch} per task; logs in {logdir}"
    )
    server = processes.sandbox_start(env, args.port, logdir / "sandbox.log")
    workers: list[subprocess.Popen] = []
    results: list[RunResult] = []
    try:
        for n in range(1, args.workers + 1):
            log = logdir / f"worker{n}.log"
            workers.append(processes.worker_start(env, queue="sms", name=f"smsbench{n}", log=log))
        for number in range(1, args.runs + 1):
            result = timed_run(number, url, step, args.messages, args.mps, args.batch)
            print(
                f"  run {number}: achieved {result.achieved_per_second:.2f}/s, busiest second "
                f"{result.busiest_second}, median second {result.median_second:g}",
                flush=True,
            )
            results.append(result)
    finally:
        for process in [*workers, server]:
            processes.stop(process)
    achieved = statistics.median(r.achieved_per_second for r in results)
    busiest = statistics.median(r.busiest_second for r in results)
    median_second = statistics.median(r.median_second for r in results)
    worst = max(r.busiest_second for r in results)
    print()
    print(
        f"median of {len(results)}: achieved {achieved:.2f}/s ({achieved / args.mps:.1%} of {args.mps}; "
        f"target >= {ACHIEVED_TARGET:.0%}), busiest second {busiest:g} (worst run {worst}; limit {args.mps}), "
        f"median second {median_second:g}"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        summary = {
            "mps": args.mps,
            "median_achieved_per_second": achieved,
            "median_busiest_second": busiest,
            "worst_busiest_second": worst,
            "median_second": median_second,
        }
        args.json.write_text(json.dumps({"runs": [asdict(r) for r in results], "summary": summary}, indent=2) + "\n")
        print(f"wrote {args.json}")
    if worst > args.mps:
        print(f"error: a second held {worst} messages, over the limit of {args.mps}", file=sys.stderr)
        return 1
    return 0
