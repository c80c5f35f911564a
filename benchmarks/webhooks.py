"""``python -m benchmarks webhooks``: SendGrid event webhook ingestion, acknowledge latency and applied events/s.

Contract:

* Works on its own database, by default ``chorus_bench_webhooks`` on the
  ``$DATABASE_URL`` server (created and migrated when needed). ``--customers``
  customers with one sent email each are bulk-inserted once and reused; before
  every run the messages go back to ``sent`` and the timeline, consents,
  suppressions, provider events and deliveries are truncated, after a
  ``CHECKPOINT`` (skipped without the privilege; see ``_reset``).
* Events: one realistic life per message, in the shapes of
  ``shared/fixtures/sendgrid_event_webhook.json`` (processed, delivered, ~55 %
  opened, a third of those clicked and some opened twice, ~1 % hard bounces,
  ~0.5 % "dropped: Bounced Address", ~1.5 % deferred then delivered, ~0.3 %
  spam reports and unsubscribes each), ``--events`` in all, split into signed
  batches of at most ``--batch-kb`` KB (768 by default), as SendGrid posts them.
* Acknowledge latency: ``--ack-samples`` POSTs of one full batch to
  ``/webhooks/sendgrid/events`` through Django's test ``Client`` (in-process,
  the whole view and middleware stack, no network), each signed just before
  it is sent; the time is the view's response only: the processing task is
  enqueued on the Redis broker ``--broker`` and never run (the queue is purged).
* Applied events/s: the batches are stored as ``WebhookDelivery`` rows first
  (what the view does; outside the timing), then ``--processes`` processes run
  the processing task's service (``webhook_delivery_process``) over them,
  in-process, no broker, until every delivery is applied. events/s = events /
  wall time. Each of ``--runs`` runs is checked against the expected end state
  (statuses, timeline by kind, last engaged, suppressions, opt-outs, no
  unprocessed or failed event) and the result is printed; the median is reported.
* Baseline, in every run right before the processing: a raw batched
  ``UPDATE ... FROM unnest(...)`` of every message's status and delivered_at
  (5,000 rows per statement, rolled back), rows/s. The issue's target is
  30,000 events/s where this UPDATE does ~50,000 rows/s: a ratio of 0.6.
  Once, before the runs, the same UPDATE on a copy of the messages with only a
  primary key (median of 3): the bare write on this machine, without the
  messages table's indexes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

from benchmarks.db import (
    BenchError,
    check_bench_url,
    checkpoint,
    database_name,
    default_bench_url,
    ensure_database,
    migrate,
    setup_django,
)

DEFAULT_DATABASE = "chorus_bench_webhooks"
DEFAULT_BROKER = "redis://127.0.0.1:6379/13"
TARGET_EVENTS_PER_SECOND = 30_000
TARGET_ACK_MS = 50
CUSTOMER_DOMAIN = "hooks.bench.example"
BASE_TS = 1763800000
URLS = (
    "https://shop.example.com/spring?utm_source=chorus",
    "https://shop.example.com/boots",
    "https://shop.example.com/",
)
AGENT = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("webhooks", help="time SendGrid webhook acknowledge latency and applied events/s")
    parser.add_argument(
        "--database-url", default=None, help=f"database (default {DEFAULT_DATABASE} on $DATABASE_URL's server)"
    )
    parser.add_argument("--broker", default=DEFAULT_BROKER, help=f"Redis broker URL (default {DEFAULT_BROKER})")
    parser.add_argument("--customers", type=int, default=60_000, help="customers, one sent email each (default 60,000)")
    parser.add_argument("--events", type=int, default=150_000, help="events per run (default 150,000)")
    parser.add_argument("--batch-kb", type=int, default=768, help="largest request body in KB (default 768)")
    parser.add_argument("--ack-samples", type=int, default=30, help="acknowledge latency samples (default 30)")
    parser.add_argument("--runs", type=int, default=3, help="processing runs; the median is reported (default 3)")
    parser.add_argument(
        "--processes", type=int, default=2, help="processes applying deliveries, like workers (default 2)"
    )
    parser.add_argument("--seed", type=int, default=5, help="event seed (default 5)")
    parser.add_argument("--json", type=Path, help="also write every sample and the summary here")


# --- data ------------------------------------------------------------------------------------


def _world_ensure(count: int) -> list[tuple[int, str]]:
    """``count`` customers with one sent email each (created once); returns (message id, address)."""
    from campaigns.models import Brand, Campaign, CampaignRun, Step, Template
    from channels.models import Message
    from customers.models import Customer
    from segments.models import Segment

    brand, _ = Brand.objects.get_or_create(
        name="Webhook bench outfitters",
        defaults={
            "legal_company_name": "Webhook Bench Outfitters Ltd",
            "postal_address": "1 Trail Road\nKraków 30-001\nPoland",
            "email_from_address": "news@shop.bench.example",
        },
    )
    template, _ = Template.objects.get_or_create(
        name="Webhook bench email", brand=brand, channel="email", defaults={"subject": "Spring sale"}
    )
    segment, _ = Segment.objects.get_or_create(name="Webhook bench readers", defaults={"rules": {"all": []}})
    campaign, _ = Campaign.objects.get_or_create(
        name="Webhook bench spring sale", brand=brand, defaults={"segment": segment, "state": Campaign.State.RUNNING}
    )
    step, _ = Step.objects.get_or_create(
        campaign=campaign, position=0, defaults={"channel": "email", "template": template}
    )
    run, _ = CampaignRun.objects.get_or_create(campaign=campaign, number=1)
    have = Customer.objects.filter(email__endswith=f"@{CUSTOMER_DOMAIN}").count()
    for start in range(have, count, 10_000):
        customers = Customer.objects.bulk_create(
            Customer(email=f"reader{n}@{CUSTOMER_DOMAIN}", first_name=f"Reader{n}", country="PL")
            for n in range(start, min(start + 10_000, count))
        )
        Message.objects.bulk_create(
            Message(
                run=run,
                step=step,
                customer=c,
                channel="email",
                to_address=c.email,
                status="sent",
                rank=Message.RANK["sent"],
                provider="sendgrid",
            )
            for c in customers
        )
    return list(Message.objects.filter(run=run).order_by("pk").values_list("pk", "to_address")[:count])


@dataclass
class Expected:
    statuses: Counter
    kinds: Counter
    engaged: int
    suppressed: int
    opted_out: int


def events_build(messages: list[tuple[int, str]], total: int, seed: int) -> tuple[list[dict], Expected]:
    """At least ``total`` events (whole lives, one per message in order) and the end state they must leave."""
    rng = random.Random(seed)
    events: list[dict] = []
    statuses: Counter = Counter()
    engaged = suppressed = opted_out = 0
    for pk, address in messages:
        if len(events) >= total:
            break
        sg = f"{rng.getrandbits(64):016x}.filter0001.16648.5515E0B88.0"
        base = {"email": address, "sg_message_id": sg, "smtp-id": f"<{sg[:16]}@ismtpd-555>"}
        base |= {"category": ["spring-sale"], "chorus_message_id": str(pk)}
        ts = BASE_TS + rng.randrange(3600)
        life: list[tuple[str, int, dict]] = [("processed", 0, {})]
        roll = rng.random()
        status, opened = "sent", False
        if roll < 0.01:
            life.append(
                ("bounce", 4, {"type": "bounce", "bounce_classification": "Invalid Address", "status": "5.1.1"})
            )
            status, suppressed = "bounced", suppressed + 1
        elif roll < 0.015:
            life.append(("dropped", 4, {"reason": "Bounced Address"}))
            status, suppressed = "failed", suppressed + 1
        else:
            if roll < 0.03:
                life.append(("deferred", 5, {"attempt": "1", "response": "400 try again later"}))
            life.append(("delivered", 6, {"response": "250 OK", "tls": 1}))
            status = "delivered"
            if rng.random() < 0.55:
                opened, status = True, "opened"
                life.append(("open", 100, {"useragent": AGENT, "ip": "203.0.113.7", "sg_machine_open": False}))
                if rng.random() < 0.33:
                    url = rng.choice(URLS)
                    click = {
                        "url": url,
                        "url_offset": {"index": 0, "type": "html"},
                        "useragent": AGENT,
                        "ip": "203.0.113.7",
                    }
                    life.append(("click", 160, click))
                    status = "clicked"
                if rng.random() < 0.2:
                    life.append(("open", 900, {"useragent": AGENT, "ip": "203.0.113.8", "sg_machine_open": False}))
            other = rng.random()
            if other < 0.003:
                life.append(("spamreport", 1200, {}))
                suppressed, opted_out = suppressed + 1, opted_out + 1
            elif other < 0.006:
                life.append(("unsubscribe", 1200, {}))
                opted_out += 1
        statuses[status] += 1
        engaged += opened
        for i, (name, offset, extra) in enumerate(life):
            events.append(
                {**base, "event": name, "timestamp": ts + offset, "sg_event_id": f"{pk:x}-{i}-{seed}", **extra}
            )
    if len(events) < total:
        raise BenchError(f"{len(messages):,} messages give only {len(events):,} events; raise --customers")
    statuses["sent"] += len(messages) - sum(statuses.values())  # messages without events this run
    kinds = Counter(f"message.{ACTIVITY[e['event']]}" for e in events if e["event"] in ACTIVITY)
    return events, Expected(statuses, kinds, engaged, suppressed, opted_out)


ACTIVITY = {
    "delivered": "delivered",
    "open": "opened",
    "click": "clicked",
    "bounce": "bounced",
    "dropped": "dropped",
    "deferred": "deferred",
    "spamreport": "complained",
    "unsubscribe": "unsubscribed",
}


def batches_of(events: list[dict], limit_bytes: int, rng: random.Random) -> list[str]:
    """JSON bodies of at most ``limit_bytes``; events keep their rough order but are shuffled within a batch."""
    bodies, batch, size = [], [], 2
    for event in events:
        text = json.dumps(event)
        if batch and size + len(text) + 2 > limit_bytes:
            rng.shuffle(batch)
            bodies.append("[" + ", ".join(batch) + "]")
            batch, size = [], 2
        batch.append(text)
        size += len(text) + 2
    if batch:
        rng.shuffle(batch)
        bodies.append("[" + ", ".join(batch) + "]")
    return bodies


# --- measurements ----------------------------------------------------------------------------


def _reset() -> None:
    """The messages back to sent; no timeline, consent, suppression, event or delivery.

    Starts with a CHECKPOINT: the reset's own writes log the pages' full images,
    so neither the baseline nor the run that follow does, and no checkpoint is due
    in the middle of them.
    """
    from django.db import connection

    checkpoint()
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE customers_activity, customers_consent, channels_suppression, channels_providerevent, "
            "channels_webhookdelivery"
        )
        cursor.execute(
            "UPDATE channels_message SET status = 'sent', rank = 20, delivered_at = NULL, opened_at = NULL, "
            "clicked_at = NULL, failed_at = NULL WHERE status <> 'sent' OR rank <> 20 OR delivered_at IS NOT NULL "
            "OR opened_at IS NOT NULL OR clicked_at IS NOT NULL OR failed_at IS NOT NULL"
        )
        cursor.execute(
            "UPDATE customers_customer SET last_engaged_email_at = NULL WHERE last_engaged_email_at IS NOT NULL"
        )
        cursor.execute("VACUUM ANALYZE channels_message, customers_customer")


def ack_latency(body: str, samples: int) -> list[float]:
    """Milliseconds of each POST of ``body`` through the test client (2 warm-up posts not counted)."""
    from django.conf import settings
    from django.db import connection
    from django.test import Client

    from config.celery import app
    from config.keys import ec_sign_b64

    client = Client()
    timings = []
    for n in range(samples + 2):
        timestamp = str(int(time.time()))
        signature = ec_sign_b64(settings.CHORUS_SANDBOX_SENDGRID_PRIVATE_KEY, (timestamp + body).encode())
        headers = {
            "X-Twilio-Email-Event-Webhook-Signature": signature,
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        }
        started = time.perf_counter()
        response = client.post("/webhooks/sendgrid/events", data=body, content_type="application/json", headers=headers)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 202:
            raise BenchError(f"the webhook answered {response.status_code}: {response.content[:200]!r}")
        if n >= 2:
            timings.append(elapsed)
    app.control.purge()  # the processing tasks those posts enqueued are not part of this measurement
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE channels_webhookdelivery")
    return timings


def _process(delivery_ids: list[int]) -> int:
    from django.db import connections

    from channels.services.events import webhook_delivery_process

    applied = sum(len(webhook_delivery_process(delivery_id=pk)) for pk in delivery_ids)
    connections.close_all()
    return applied


@dataclass
class RunResult:
    events: int
    deliveries: int
    seconds: float
    events_per_second: float
    baseline_rows_per_second: float
    correct: bool
    problems: list[str]


def processing_run(
    bodies: list[str], events: int, expected: Expected, processes: int, pool: ProcessPoolExecutor | None
) -> RunResult:
    from django.db import connections

    from channels.models import WebhookDelivery

    _reset()
    baseline = baseline_update()
    deliveries = WebhookDelivery.objects.bulk_create(
        WebhookDelivery(provider="sendgrid", kind="status", body=body) for body in bodies
    )
    ids = [d.pk for d in deliveries]
    connections.close_all()  # the children open their own
    started = time.perf_counter()
    shares = [ids[i::processes] for i in range(processes)]  # each process takes every n-th delivery
    applied = _process(ids) if pool is None else sum(pool.map(_process, shares))
    seconds = time.perf_counter() - started
    problems = verify(expected, events)
    if applied != events:
        problems.append(f"{applied:,} events reported new, expected {events:,}")
    return RunResult(applied, len(ids), seconds, applied / seconds, baseline, not problems, problems)


def verify(expected: Expected, events: int) -> list[str]:
    """What differs from the expected end state (empty: all correct)."""
    from django.db.models import Count

    from channels.models import Message, ProviderEvent, Suppression, WebhookDelivery
    from customers.models import Activity, Consent, Customer

    problems = []
    actual = {
        "statuses": Counter(dict(Message.objects.order_by().values_list("status").annotate(n=Count("*")))),
        "kinds": Counter(dict(Activity.objects.order_by().values_list("kind").annotate(n=Count("*")))),
        "engaged": Customer.objects.filter(last_engaged_email_at__isnull=False).count(),
        "suppressed": Suppression.objects.count(),
        "opted_out": Consent.objects.filter(status="opted_out").count(),
    }
    expected_kinds = expected.kinds + Counter({"consent.changed": expected.opted_out})
    for name, want in (
        ("statuses", expected.statuses),
        ("kinds", expected_kinds),
        ("engaged", expected.engaged),
        ("suppressed", expected.suppressed),
        ("opted_out", expected.opted_out),
    ):
        if actual[name] != want:
            problems.append(f"{name}: expected {want}, got {actual[name]}")
    stored = ProviderEvent.objects.count()
    if stored != events:
        problems.append(f"{stored:,} provider events stored, expected {events:,}")
    if ProviderEvent.objects.filter(processed_at=None).exists() or ProviderEvent.objects.exclude(error="").exists():
        problems.append("unprocessed or failed provider events")
    if WebhookDelivery.objects.filter(processed_at=None).exists():
        problems.append("unprocessed deliveries")
    return problems


def baseline_update(table: str = "channels_message") -> float:
    """Rows/s of a raw batched status UPDATE of every message (5,000 per statement) in ``table``, rolled back."""
    from datetime import UTC, datetime

    from django.db import connection, transaction

    from channels.models import Message

    ids = list(Message.objects.order_by("pk").values_list("pk", flat=True))
    now = datetime.now(UTC)
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        for start in range(0, len(ids), 5000):
            chunk = ids[start : start + 5000]
            cursor.execute(
                f"UPDATE {table} AS m SET status = v.status, delivered_at = v.at "
                "FROM unnest(%s::bigint[], %s::varchar[], %s::timestamptz[]) AS v(id, status, at) WHERE m.id = v.id",
                [chunk, ["delivered"] * len(chunk), [now] * len(chunk)],
            )
        seconds = time.perf_counter() - started
        transaction.set_rollback(True)
    return len(ids) / seconds


def baseline_lean() -> float:
    """The same UPDATE on a copy of the messages with only a primary key: what the machine does for the
    bare write, apart from the messages table's indexes (median of 3; the copy is dropped)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_lean_message")
        cursor.execute("CREATE TABLE bench_lean_message AS SELECT * FROM channels_message")
        cursor.execute("ALTER TABLE bench_lean_message ADD PRIMARY KEY (id)")
        cursor.execute("VACUUM ANALYZE bench_lean_message")
    try:
        return statistics.median(baseline_update("bench_lean_message") for _ in range(3))
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE bench_lean_message")


def main(args: argparse.Namespace) -> int:
    if min(args.customers, args.events, args.batch_kb, args.ack_samples, args.runs, args.processes) < 1:
        raise BenchError("--customers, --events, --batch-kb, --ack-samples, --runs and --processes must be at least 1")
    url = check_bench_url(args.database_url or default_bench_url(name=DEFAULT_DATABASE))
    ensure_database(url)
    migrate(url)
    os.environ["CELERY_BROKER_URL"] = args.broker
    os.environ["DEBUG"] = "false"  # as served: no query log
    setup_django(url)

    started = time.perf_counter()
    messages = _world_ensure(args.customers)
    _reset()
    print(
        f"webhooks: {database_name(url)}, {len(messages):,} sent emails ready in {time.perf_counter() - started:.1f} s"
    )
    events, expected = events_build(messages, args.events, args.seed)
    bodies = batches_of(events, args.batch_kb * 1024, random.Random(args.seed))
    full = max(bodies, key=len)
    print(
        f"  {len(events):,} events in {len(bodies)} batches of at most {args.batch_kb} KB "
        f"(largest {len(full) / 1024:.0f} KB, {len(json.loads(full)):,} events); load {os.getloadavg()[0]:.2f}"
    )

    ack = ack_latency(full, args.ack_samples)
    ack_p50, ack_p95 = statistics.median(ack), statistics.quantiles(ack, n=20)[-1] if len(ack) > 1 else ack[0]
    print(
        f"  acknowledge ({len(full) / 1024:.0f} KB, test client): p50 {ack_p50:.1f} ms, p95 {ack_p95:.1f} ms, "
        f"min {min(ack):.1f}, max {max(ack):.1f} (target p50 <= {TARGET_ACK_MS} ms)"
    )

    lean = baseline_lean()
    print(
        f"  baseline UPDATE on a primary-key-only copy of the messages: {lean:,.0f} rows/s (the issue assumes ~50,000)"
    )

    pool = ProcessPoolExecutor(args.processes, mp_context=get_context("fork")) if args.processes > 1 else None
    results = []
    try:
        for number in range(1, args.runs + 1):
            result = processing_run(bodies, len(events), expected, args.processes, pool)
            verdict = "correct" if result.correct else "WRONG: " + "; ".join(result.problems)
            print(
                f"  run {number}: {result.events:,} events from {result.deliveries} deliveries applied in "
                f"{result.seconds:.2f} s by {args.processes} process(es) = {result.events_per_second:,.0f} events/s "
                f"(baseline UPDATE {result.baseline_rows_per_second:,.0f} rows/s); {verdict}; "
                f"load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
            results.append(result)
    finally:
        if pool:
            pool.shutdown()
    median = statistics.median(r.events_per_second for r in results)
    baseline = statistics.median(r.baseline_rows_per_second for r in results)
    statuses = ", ".join(f"{k} {v:,}" for k, v in sorted(expected.statuses.items()))
    print(f"  end state checked each run: statuses {statuses}; timeline {sum(expected.kinds.values()):,} activities")
    print()
    print(
        f"median {median:,.0f} events/s (target >= {TARGET_EVENTS_PER_SECOND:,}); baseline UPDATE {baseline:,.0f} "
        f"rows/s, ratio {median / baseline:.2f} (target {TARGET_EVENTS_PER_SECOND / 50_000:.2f}: 30,000 / 50,000); "
        f"acknowledge p50 {ack_p50:.1f} ms"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        summary = {
            "median_events_per_second": median,
            "ack_ms_p50": ack_p50,
            "ack_ms_p95": ack_p95,
            "baseline_update_rows_per_second": baseline,
            "baseline_lean_update_rows_per_second": lean,
            "processes": args.processes,
        }
        payload = {"ack_ms": ack, "runs": [asdict(r) for r in results], "summary": summary}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0 if all(r.correct for r in results) else 1
