"""Real Celery worker processes for the tests marked ``worker``.

A worker is ``celery worker`` in a subprocess, pointed at this test's database,
broker and live server (the sandbox), with its output in a log file the test
can read and show on failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@contextmanager
def celery_worker(
    *,
    sandbox,
    log: Path,
    queues: str = "default,email,sms,social",
    concurrency: int = 2,
    beat_schedule: Path | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen]:
    """``celery worker`` (with beat when ``beat_schedule`` is given) on ``queues``, stopped on exit.

    ``env`` adds variables to the worker's environment (e.g. ``CHORUS_RATE_LIMITER``).
    """
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("SENDGRID_", "TWILIO_", "CHORUS_"))}
    environ = {
        **keep,
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CHORUS_DATA_DIR": str(settings.DATA_DIR),
        "CHORUS_PUBLIC_URL": sandbox.url,
        "CHORUS_SANDBOX_EVENT_DELAY": "0",
        "CHORUS_SANDBOX_PLAYBACK": "email=delivered:1;sms=delivered:1;whatsapp=delivered:1",
        **(env or {}),
    }
    command = [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", queues,
               "--concurrency", str(concurrency), "--loglevel", "INFO", "-n", f"{log.stem}@%h"]  # fmt: skip
    if beat_schedule is not None:
        command += ["-B", "-s", str(beat_schedule)]
    with log.open("w") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=environ, stdout=output, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            if connection.vendor == "postgresql":
                # A killed worker child can leave its session behind; the test DB must drop.
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )


def wait_for(condition, *, timeout: float, what: str, logs: list[Path]) -> None:
    """Poll ``condition`` every half second; fail with the workers' logs after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    tails = "\n".join(f"--- {log.name}\n{log.read_text()[-5000:]}" for log in logs)
    pytest.fail(f"Timed out after {timeout:.0f}s waiting for {what}.\n{tails}")
