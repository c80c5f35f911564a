"""``manage.py chorus_import customers.csv [--map column=target ...] [--sync]``."""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from customers.imports import ImportProgress, ImportRejected, import_create, import_run
from customers.models import ImportJob


class Command(BaseCommand):
    help = (
        "Import customers from a CSV file. Columns are mapped by name (see the suggestion printed); override with "
        "--map 'column=target' (target: email, phone, external_id, mastodon_handle, bluesky_handle, first_name, "
        "last_name, locale, timezone, country, city, attributes.<key>, consent.<channel>, or empty to skip). "
        "Runs in a Celery worker unless --sync."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path, help="the CSV file (UTF-8, first line names the columns)")
        parser.add_argument(
            "--map",
            dest="mappings",
            action="append",
            default=[],
            metavar="COLUMN=TARGET",
            help="map a column to a target (repeatable); other columns keep the suggested mapping",
        )
        parser.add_argument("--sync", action="store_true", help="run the import in this process and print the counts")

    def handle(self, *args, path: Path, mappings: list[str], sync: bool, verbosity: int, **options) -> None:
        if not path.is_file():
            raise CommandError(f"{path}: no such file.")
        overrides = {}
        for item in mappings:
            column, sep, target = item.partition("=")
            if not sep or not column.strip():
                raise CommandError(f"--map {item!r}: write it as COLUMN=TARGET (an empty TARGET skips the column).")
            overrides[column.strip()] = target.strip()
        with path.open("rb") as handle:
            try:
                # With --sync the job is created queued but no task is sent: this process runs it below.
                job = import_create(file=handle, name=path.name, mapping=overrides, start=True, enqueue=not sync)
            except ImportRejected as exc:
                raise CommandError(f"{path.name}: {exc.message}") from None
        if verbosity >= 1:
            self.stdout.write(f"{path.name}: {job.total_rows:,} rows; mapping:")
            for column, target in job.mapping.items():
                self.stdout.write(f"  {column!r} -> {target or '(skipped)'}")
        if not sync:
            self.stdout.write(f"Import #{job.pk} queued; a Celery worker runs it.")
            return

        def report(progress: ImportProgress) -> None:
            if verbosity >= 1:
                sys.stderr.write(f"\r  {progress.processed_rows:,} / {progress.total_rows:,} rows")
                sys.stderr.flush()

        job = import_run(job_id=job.pk, on_progress=report)
        if verbosity >= 1:
            sys.stderr.write("\n")
        if job.status != ImportJob.Status.DONE:
            raise CommandError(f"Import #{job.pk} failed: {job.error}")
        self.stdout.write(
            f"Import #{job.pk}: {job.created_count:,} created, {job.updated_count:,} updated, "
            f"{job.rejected_count:,} rejected."
        )
        if job.errors_file:
            self.stdout.write(f"Rejected rows with line numbers and reasons: {job.errors_file.name} (in MEDIA_ROOT)")
