"""``python -m benchmarks send``: the email send path end to end, with real worker processes.

Contract:

* Works on its own database, by default ``chorus_bench_send`` on the
  ``$DATABASE_URL`` server (created and migrated when needed; its messages,
  sandbox outbox and timeline are truncated before every run), and on the Redis
  broker ``--broker`` (default ``redis://127.0.0.1:6379/14``).
* Data: one brand, one newsletter template whose Liquid reads no customer
  variable (heading, intro, image, offer, button, product texts, divider, a
  closing text: the broadcast case, where recipients share content), one
  campaign with one email step, ``--messages`` customers with email consent
  (created once, reused), and per run a new ``CampaignRun`` with one queued
  message per customer (bulk-inserted, outside the timing, after a ``CHECKPOINT``).
* The sandbox runs as a real HTTP server: ``manage.py runserver --noreload``
  (threaded: each worker's call gets its own thread), ``DEBUG`` off. The real
  SendGrid SDK posts to it; it records one outbox row per recipient. Event
  playback is deferred: the playback tasks it enqueues go to the ``default``
  queue, which no worker of this benchmark consumes (they are purged after each
  run), so no webhook traffic competes with the sends.
* ``--workers`` real ``celery worker`` processes (``-Q email --concurrency 1``,
  prefork: each is a parent and one child that runs the tasks) are started
  before the timing and stay up for every run.
* Timed: from ``channels.tasks.messages_enqueue`` (one task per
  ``CHORUS_SEND_BATCH["email"]`` ids, as dispatch enqueues them) to the moment
  no message of the run is queued or sending any more, polled every 0.1 s. A run
  counts only if every message ended ``sent``. During the run the VmRSS of each
  worker's processes is sampled from ``/proc`` every 0.2 s.
* Prints every run, the median messages/s over ``--runs`` and each worker's
  peak RSS (its child, which does the work; the parent's is printed beside it),
  and the CPU seconds per 1,000 messages the workers and the sandbox used (from
  ``/proc``): on a machine shared with other work, that is the figure to compare.
  PostgreSQL's share is not counted (its backends come and go with connections).
* Once, before the runs: the PostgreSQL floor (``write_floor``), microseconds
  per message of the writes every send needs (claim, sent, timeline) done as
  bare SQL with no worker, and the share of a core that is at the target rate.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks import processes
from benchmarks.db import (
    BenchError,
    check_bench_url,
    checkpoint,
    connect,
    database_name,
    default_bench_url,
    ensure_database,
    migrate,
    setup_django,
)

DEFAULT_DATABASE = "chorus_bench_send"
DEFAULT_BROKER = "redis://127.0.0.1:6379/14"
TARGET = 5_000  # messages/s with 2 worker processes (issue 5)
RSS_LIMIT_MB = 200
POLL_SECONDS = 0.1
RSS_SAMPLE_SECONDS = 0.2
CUSTOMER_DOMAIN = "send.bench.example"

_PARAGRAPH = (
    "Our spring collection is in: light shells, merino layers and trail shoes built for long days outside. "
    "For one week everything is 20% off in every store and online, and delivery is free over 50 EUR."
)
NEWSLETTER = {
    "subject": "Spring is here: 20% off at {{ brand.name }}",
    "preheader": "One week only: 20% off the whole spring collection with code SPRING20.",
    "blocks": [
        {"type": "heading", "text": "Spring is here"},
        {"type": "text", "text": f"{_PARAGRAPH}\n\n{_PARAGRAPH}"},
        {
            "type": "image",
            "src": "https://shop.bench.example/img/spring-hero.jpg",
            "alt": "Hikers on a ridge at sunrise",
            "href": "https://shop.bench.example/spring",
        },
        {
            "type": "offer",
            "title": "20% off everything",
            "text": "Valid until Sunday midnight, on top of free returns within 30 days.",
            "code": "SPRING20",
            "url": "https://shop.bench.example/spring?ref=offer",
        },
        {"type": "button", "text": "Shop the collection", "url": "https://shop.bench.example/spring"},
        {"type": "heading", "text": "New this week"},
        {
            "type": "text",
            "text": "Merino base layers, 3-layer rain shells and the new trail runner: see them at "
            "https://shop.bench.example/new and in every {{ brand.name }} store.",
        },
        {"type": "divider"},
        {"type": "text", "text": "Questions about sizes or delivery? Just reply to this email. {{ campaign.name }}."},
    ],
}


@dataclass
class RunResult:
    run: int
    messages: int
    seconds: float
    messages_per_second: float
    statuses: dict[str, int]
    # worker name -> peak VmRSS in MB of its child (the process that runs tasks) and of its parent
    peak_rss_mb: dict[str, dict[str, float]] = field(default_factory=dict)
    # CPU seconds (user + system) per 1,000 messages spent by all workers' processes and by the sandbox
    cpu_seconds_per_1000: dict[str, float] = field(default_factory=dict)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("send", help="time the email send path end to end with real workers")
    parser.add_argument(
        "--database-url",
        default=None,
        help=f"database for the runs (default {DEFAULT_DATABASE} on $DATABASE_URL's server)",
    )
    parser.add_argument("--broker", default=DEFAULT_BROKER, help=f"Redis broker URL (default {DEFAULT_BROKER})")
    parser.add_argument("--messages", type=int, default=50_000, help="messages per run (default 50,000)")
    parser.add_argument("--workers", type=int, default=2, help="celery worker processes (default 2)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs; the median is reported (default 3)")
    parser.add_argument("--port", type=int, default=8765, help="port of the sandbox server (default 8765)")
    parser.add_argument("--json", type=Path, help="also write every run and the summary here")


# --- data ------------------------------------------------------------------------------------


def _customers_ensure(count: int) -> None:
    """``count`` bench customers with email consent (created once; more are added when asked for)."""
    from customers.models import Consent, Customer

    have = Customer.objects.filter(email__endswith=f"@{CUSTOMER_DOMAIN}").count()
    for start in range(have, count, 5000):
        stop = min(start + 5000, count)
        customers = Customer.objects.bulk_create(
            Customer(email=f"reader{n}@{CUSTOMER_DOMAIN}", first_name=f"Reader{n}", country="PL", locale="en-GB")
            for n in range(start, stop)
        )
        Consent.objects.bulk_create(
            Consent(customer=c, channel="email", status=Consent.Status.OPTED_IN, source=Consent.Source.IMPORT)
            for c in customers
        )


def _step_ensure():
    """The bench brand, newsletter template, campaign and its email step (created once)."""
    from campaigns.models import Brand, Campaign, Step, Template
    from segments.models import Segment

    brand, _ = Brand.objects.get_or_create(
        name="Send bench outfitters",
        defaults={
            "legal_company_name": "Send Bench Outfitters Ltd",
            "postal_address": "1 Trail Road\nKraków 30-001\nPoland",
            "email_from_name": "Send Bench Outfitters",
            "email_from_address": "news@shop.bench.example",
            "email_reply_to": "care@shop.bench.example",
        },
    )
    template, _ = Template.objects.update_or_create(
        name="Send bench newsletter", brand=brand, channel="email", defaults=NEWSLETTER
    )
    segment, _ = Segment.objects.get_or_create(name="Send bench readers", defaults={"rules": {"all": []}})
    campaign, _ = Campaign.objects.get_or_create(
        name="Send bench spring sale", brand=brand, defaults={"segment": segment, "state": Campaign.State.RUNNING}
    )
    step, _ = Step.objects.get_or_create(
        campaign=campaign, position=0, defaults={"channel": "email", "template": template}
    )
    return step


def _run_prepare(step, count: int) -> tuple[int, list[int]]:
    """Empty the outbox, timeline and messages, then queue one message per bench customer in a new run."""
    from django.db import connection

    from campaigns.models import CampaignRun
    from channels.models import Message
    from customers.models import Customer

    checkpoint()  # before: the run's pages are then new since it, and log no full images (see webhooks._reset)
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE channels_sandboxmessage, customers_activity, channels_message, channels_providerevent")
    number = (
        CampaignRun.objects.filter(campaign=step.campaign).order_by("-number").values_list("number", flat=True).first()
        or 0
    ) + 1
    run = CampaignRun.objects.create(campaign=step.campaign, number=number)
    customers = (
        Customer.objects.filter(email__endswith=f"@{CUSTOMER_DOMAIN}").order_by("pk").values_list("pk", "email")[:count]
    )
    messages = Message.objects.bulk_create(
        (Message(run=run, step=step, customer_id=pk, channel="email", to_address=email) for pk, email in customers),
        batch_size=5000,
    )
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE channels_message")
    return run.pk, [m.pk for m in messages]


def write_floor(step, count: int) -> float:
    """Microseconds of PostgreSQL per message for the writes every send needs, done as bare SQL.

    On a freshly queued run (outside the timing, no worker): per 1,000 messages, the
    claim UPDATE (queued -> sending), then the sent UPDATE with the shared content's id
    and the provider id feeding the ``message.sent`` timeline INSERT, as the send path
    does them, from one connection with no Python between. The send path cannot cost
    PostgreSQL less than this.
    """
    from django.db import connection

    from channels.models import MessageContent

    _, ids = _run_prepare(step, count)
    content, _ = MessageContent.objects.get_or_create(digest="bench-floor", defaults={"body": "x" * 1600})
    started = time.perf_counter()
    with connection.cursor() as cursor:
        for start in range(0, len(ids), 1000):
            batch = ids[start : start + 1000]
            cursor.execute(
                "UPDATE channels_message SET status = 'sending', rank = 10, attempts = attempts + 1, "
                "updated_at = now() WHERE id = ANY(%s) AND status = 'queued'",
                [batch],
            )
            rows = [{"id": pk, "p": f"sg-{pk}", "c": content.pk} for pk in batch]
            cursor.execute(
                "WITH sent AS (UPDATE channels_message AS m SET status = 'sent', rank = 20, sent_at = now(), "
                "updated_at = now(), provider = 'sendgrid', provider_message_id = v.p, content_id = v.c "
                "FROM jsonb_to_recordset(%s::jsonb) AS v(id bigint, p text, c bigint) WHERE m.id = v.id "
                "RETURNING m.id, m.customer_id, m.channel, m.to_address) "
                "INSERT INTO customers_activity (customer_id, occurred_at, kind, channel, campaign_id, message_id, "
                "properties) SELECT customer_id, now(), 'message.sent', channel, %s, id, "
                "jsonb_build_object('to', to_address) FROM sent",
                [json.dumps(rows), step.campaign_id],
            )
    return (time.perf_counter() - started) * 1e6 / len(ids)


# --- processes -------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and of its live children."""
    total = 0.0
    for each in (pid, *_children(pid)):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


class RssSampler(threading.Thread):
    """Peak VmRSS of each worker's parent and child processes while the run lasts."""

    def __init__(self, workers: dict[str, subprocess.Popen]):
        super().__init__(daemon=True)
        self.workers = workers
        self.peaks = {name: {"child": 0.0, "parent": 0.0} for name in workers}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for name, process in self.workers.items():
                peak = self.peaks[name]
                peak["parent"] = max(peak["parent"], _rss_mb(process.pid))
                for child in _children(process.pid):
                    peak["child"] = max(peak["child"], _rss_mb(child))
            self.done.wait(RSS_SAMPLE_SECONDS)


# --- runs ------------------------------------------------------------------------------------


def _statuses(conn, run_id: int) -> dict[str, int]:
    rows = conn.execute("SELECT status, count(*) FROM channels_message WHERE run_id = %s GROUP BY status", [run_id])
    return dict(rows.fetchall())


def timed_run(
    number: int, url: str, step, count: int, workers: dict[str, subprocess.Popen], sandbox: subprocess.Popen
) -> RunResult:
    from channels.tasks import messages_enqueue
    from config.celery import Queue, app

    run_id, ids = _run_prepare(step, count)
    cpu_before = {"workers": sum(_cpu_seconds(w.pid) for w in workers.values()), "sandbox": _cpu_seconds(sandbox.pid)}
    sampler = RssSampler(workers)
    sampler.start()
    timeout = max(120.0, count / 250)
    with connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        messages_enqueue({"email": ids})
        while True:
            # EXISTS, not count(*): counting the run's messages ten times a second took PostgreSQL
            # about 3% of a core, away from the sends being timed.
            pending = conn.execute(
                "SELECT EXISTS (SELECT FROM channels_message WHERE run_id = %s AND status IN ('queued', 'sending'))",
                [run_id],
            ).fetchone()[0]
            if not pending:
                break
            if time.perf_counter() - started > timeout:
                sampler.done.set()
                raise BenchError(f"run {number}: still pending after {timeout:.0f} s: {_statuses(conn, run_id)}")
            time.sleep(POLL_SECONDS)
        seconds = time.perf_counter() - started
        statuses = _statuses(conn, run_id)
    cpu = {"workers": sum(_cpu_seconds(w.pid) for w in workers.values()), "sandbox": _cpu_seconds(sandbox.pid)}
    sampler.done.set()
    sampler.join()
    with app.connection_for_write() as broker:  # the deferred playback tasks
        broker.default_channel.queue_purge(Queue.DEFAULT.value)
    if statuses.get("sent", 0) != count:
        raise BenchError(f"run {number}: not every message was sent: {statuses}")
    return RunResult(
        run=number,
        messages=count,
        seconds=round(seconds, 3),
        messages_per_second=round(count / seconds, 1),
        statuses=statuses,
        peak_rss_mb={name: {k: round(v, 1) for k, v in peak.items()} for name, peak in sampler.peaks.items()},
        cpu_seconds_per_1000={k: round((cpu[k] - cpu_before[k]) * 1000 / count, 3) for k in cpu},
    )


def main(args: argparse.Namespace) -> int:
    if args.messages < 1 or args.workers < 1 or args.runs < 1:
        raise BenchError("--messages, --workers and --runs must be at least 1")
    if not args.broker.startswith("redis://"):
        raise BenchError(f"--broker must be a redis:// URL, got {args.broker!r}")
    url = check_bench_url(args.database_url or default_bench_url(name=DEFAULT_DATABASE))
    ensure_database(url)
    migrate(url)
    os.environ["CELERY_BROKER_URL"] = args.broker
    setup_django(url)
    from django.conf import settings

    _customers_ensure(args.messages)
    step = _step_ensure()
    env = processes.environment(url, args.broker, args.port)
    logdir = Path(settings.DATA_DIR) / "bench-send"
    logdir.mkdir(parents=True, exist_ok=True)
    print(
        f"send: {database_name(url)}, broker {args.broker}, {args.messages:,} messages x {args.runs} run(s), "
        f"{args.workers} worker process(es), batch {settings.CHORUS_SEND_BATCH['email']}; logs in {logdir}"
    )
    floor = write_floor(step, args.messages)
    print(
        f"  PostgreSQL floor: the claim, sent and timeline writes as bare SQL take {floor:.0f} us per message, "
        f"{floor * TARGET / 1e6:.2f} of a core at {TARGET:,} msgs/s"
    )
    sandbox = processes.sandbox_start(env, args.port, logdir / "sandbox.log")
    workers: dict[str, subprocess.Popen] = {}
    results = []
    try:
        for n in range(1, args.workers + 1):
            # One process that runs tasks per worker (prefork, one child), consuming the email queue only.
            name = f"sendbench{n}"
            workers[name] = processes.worker_start(env, queue="email", name=name, log=logdir / f"worker{n}.log")
        for number in range(1, args.runs + 1):
            result = timed_run(number, url, step, args.messages, workers, sandbox)
            rss = ", ".join(f"{p['child']:.0f} MB (parent {p['parent']:.0f})" for p in result.peak_rss_mb.values())
            cpu = result.cpu_seconds_per_1000
            print(
                f"  run {number}: {result.messages:,} sent in {result.seconds:.2f} s = "
                f"{result.messages_per_second:,.0f} msgs/s; worker peak RSS {rss}; CPU s per 1,000 messages: "
                f"workers {cpu['workers']:.2f}, sandbox {cpu['sandbox']:.2f}",
                flush=True,
            )
            results.append(result)
    finally:
        for process in [*workers.values(), sandbox]:
            processes.stop(process)
    median = statistics.median(r.messages_per_second for r in results)
    peak = max(p["child"] for r in results for p in r.peak_rss_mb.values())
    print()
    print(f"median {median:,.0f} msgs/s (target >= {TARGET:,}); max worker RSS {peak:.0f} MB (limit {RSS_LIMIT_MB})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        summary = {"median_messages_per_second": median, "max_worker_rss_mb": peak, "write_floor_us": floor}
        args.json.write_text(json.dumps({"runs": [asdict(r) for r in results], "summary": summary}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
