"""The processes an end-to-end benchmark runs beside itself: the sandbox as a real HTTP server and Celery workers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.db import PROJECT_ROOT, BenchError


def environment(url: str, broker: str, port: int) -> dict[str, str]:
    """What the sandbox and the workers run with: the bench database and broker, as served (no DEBUG)."""
    return {
        **os.environ,
        "DATABASE_URL": url,
        "CELERY_BROKER_URL": broker,
        "CHORUS_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "DEBUG": "false",
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("w") as output:
        return subprocess.Popen(  # noqa: S603 - our own interpreter, manage.py and celery
            command, cwd=PROJECT_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )


def _wait(what: str, ready, process: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"{what} did not start; see {log}")
        time.sleep(0.2)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def sandbox_start(env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    """``manage.py runserver --noreload`` (threaded: each worker's call gets its own thread), once it listens."""
    command = [sys.executable, str(PROJECT_ROOT / "manage.py"), "runserver", f"127.0.0.1:{port}", "--noreload"]
    process = _start(command, env, log)
    _wait("the sandbox server", lambda: _listening(port), process, log)
    return process


def worker_start(env: dict[str, str], *, queue: str, name: str, log: Path) -> subprocess.Popen:
    """One ``celery worker -Q queue --concurrency 1`` (a parent and one child), once it is ready."""
    command = [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", queue, "--concurrency", "1",
               "-n", f"{name}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat",
               "-l", "info"]  # fmt: skip
    process = _start(command, env, log)
    _wait(f"worker {name}", lambda: "ready." in log.read_text(), process, log)
    return process


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL after 20 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
