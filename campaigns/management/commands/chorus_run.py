"""Web server, Celery worker and beat as one process group; Ctrl-C stops all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run the web server and a Celery worker with embedded beat (the embedded default)."

    def add_arguments(self, parser):
        parser.add_argument("--addr", default="127.0.0.1:8000", help="host:port for the web server")
        parser.add_argument("--concurrency", default="2", help="Celery worker processes")

    def handle(self, *args, addr: str, concurrency: str, **options):
        python = sys.executable
        worker = [
            python, "-m", "celery", "-A", "config", "worker", "-B",
            "-Q", "default,email,sms,social", "--concurrency", concurrency, "--loglevel", "INFO",
            "-s", str(settings.DATA_DIR / "celerybeat-schedule"),
        ]  # fmt: skip
        commands = {"web": [python, "manage.py", "runserver", addr, "--noreload"], "worker+beat": worker}
        # Fixed argument lists built above, no shell: nothing untrusted reaches them.
        # Providers (the sandbox included) must call back the address we serve on.
        env = {**os.environ}
        env.setdefault("CHORUS_PUBLIC_URL", f"http://{addr}")
        processes = {}
        for name, cmd in commands.items():
            processes[name] = subprocess.Popen(cmd, cwd=settings.BASE_DIR, env=env)  # noqa: S603
        self.stdout.write(self.style.SUCCESS(f"Chorus is starting at http://{addr}/ (Ctrl-C stops everything)"))

        stopping = False

        def stop(*_):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            while not stopping:
                exited = [name for name, p in processes.items() if p.poll() is not None]
                if exited:
                    self.stderr.write(f"{', '.join(exited)} exited; stopping the rest.")
                    break
                time.sleep(0.5)
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.terminate()
            for process in processes.values():
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
        if not stopping:
            sys.exit(1)
