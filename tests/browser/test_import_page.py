"""The CSV import pages in headless Chromium: upload, map the columns, watch the progress bar, read the result."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from django.db import connection, transaction
from playwright.sync_api import expect

from config.roles import MARKETER
from customers import imports
from customers.models import Customer, ImportJob
from tests.factories import CustomerFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
SCREENSHOTS = Path(os.environ.get("CHORUS_SCREENSHOTS", "")) if os.environ.get("CHORUS_SCREENSHOTS") else None


@pytest.fixture
def worker(monkeypatch, settings, tmp_path):
    """Imports run in a background thread, as a Celery worker would, a little slowly so progress shows."""
    settings.MEDIA_ROOT = tmp_path / "media"
    monkeypatch.setattr(imports, "PG_CHUNK_ROWS", 4)
    monkeypatch.setattr(imports, "SQLITE_CHUNK_ROWS", 4)
    load = imports._Loader.load

    def slow_load(self, chunk):
        time.sleep(0.6)
        return load(self, chunk)

    monkeypatch.setattr(imports._Loader, "load", slow_load)
    threads: list[threading.Thread] = []

    def run(job_id: int) -> None:
        try:
            imports.import_run(job_id=job_id)
        finally:
            connection.close()

    def enqueue(job: ImportJob) -> None:
        def start() -> None:
            thread = threading.Thread(target=run, args=(job.pk,))
            threads.append(thread)
            thread.start()

        transaction.on_commit(start)

    monkeypatch.setattr(imports, "_enqueue", enqueue)
    yield
    for thread in threads:
        thread.join(timeout=30)


def _shot(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=(SCREENSHOTS or tmp_path) / name, full_page=True)


def test_marketer_uploads_maps_watches_progress_and_downloads_rejected_rows(
    page, live_server, roles, worker, tmp_path, log_in
):
    UserFactory(username="marta", first_name="Marta", last_name="Lis", role=MARKETER)
    existing = CustomerFactory(email="anna@example.com", first_name="Anna", attributes={"since": 2019})
    rows = [f"person{i}@example.com,+4860020{i:04d},Person {i},PL,silver,yes" for i in range(1, 16)]
    rows[6] = "not-an-email,,Broken,PL,gold,yes"
    rows[9] = "anna@example.com,,Anna,PL,gold,no"
    csv_path = tmp_path / "crm-export.csv"
    csv_path.write_text("E-mail,Mobile,Name,Country,Loyalty tier,Newsletter opt-in\n" + "\n".join(rows) + "\n")

    log_in("marta")

    # Upload from the Import page in the sidebar.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Import").click()
    expect(page.get_by_role("heading", name="Import customers")).to_be_visible()
    page.set_input_files("#id_file", str(csv_path))
    page.get_by_role("button", name="Upload and map columns").click()

    # Mapping: a select per column with the suggestion, the first rows as a preview.
    expect(page.get_by_role("heading", name="Map the columns of crm-export.csv")).to_be_visible()
    expect(page.get_by_test_id("preview")).to_contain_text("person1@example.com")
    expect(page.get_by_test_id("target-E-mail")).to_have_value("email")
    expect(page.get_by_test_id("target-Newsletter opt-in")).to_have_value("consent.email")
    expect(page.get_by_test_id("target-Loyalty tier")).to_have_value("attributes.loyalty_tier")
    # Skipping every identity column is caught while editing, before anything runs.
    page.get_by_test_id("target-E-mail").select_option("")
    page.get_by_test_id("target-Mobile").select_option("")
    expect(page.get_by_test_id("mapping-error")).to_contain_text("at least one column to an identity")
    page.get_by_test_id("target-E-mail").select_option("email")
    page.get_by_test_id("target-Mobile").select_option("phone")
    page.get_by_test_id("target-Name").select_option("first_name")
    expect(page.get_by_test_id("mapping-ok")).to_contain_text("6 columns will be imported")
    _shot(page, tmp_path, "import-mapping.png")
    page.get_by_test_id("start-import").click()

    # Progress: the bar moves while the worker commits chunk after chunk, then the result replaces it.
    progress = page.get_by_test_id("import-progress")
    expect(progress).to_be_visible()
    bar = page.get_by_role("progressbar", name="Rows processed")
    seen: set[int] = set()
    deadline = time.monotonic() + 30
    # evaluate_all reads what is on the page now, without waiting: htmx may swap the bar out at any moment.
    while time.monotonic() < deadline and "done" not in progress.evaluate_all("els => els.map(e => e.dataset.status)"):
        values = bar.evaluate_all("bars => bars.map(b => b.getAttribute('aria-valuenow'))")
        seen.update(int(value or 0) for value in values)
        if values and 0 < max(seen) < 15 and not (SCREENSHOTS or tmp_path).joinpath("import-progress.png").exists():
            _shot(page, tmp_path, "import-progress.png")
        page.wait_for_timeout(150)
    assert any(0 < value < 15 for value in seen), f"never saw a partial progress value, only {sorted(seen)}"
    expect(page.get_by_role("heading", name="Import finished")).to_be_visible()
    expect(page.get_by_test_id("created-count")).to_have_text("13")
    expect(page.get_by_test_id("updated-count")).to_have_text("1")
    expect(page.get_by_test_id("rejected-count")).to_have_text("1")
    _shot(page, tmp_path, "import-result.png")

    with page.expect_download() as download_info:
        page.get_by_test_id("errors-download").click()
    rejected = Path(download_info.value.path()).read_text()
    assert "8,E-mail: 'not-an-email' is not a valid email address,not-an-email" in rejected

    existing.refresh_from_db()
    assert existing.attributes == {"since": 2019, "loyalty_tier": "gold"}
    assert Customer.objects.count() == 14

    # The past imports list shows it with its counts.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Import").click()
    expect(page.get_by_test_id("import-jobs")).to_contain_text("crm-export.csv")
    expect(page.get_by_test_id("import-jobs").get_by_test_id("import-status")).to_have_text("Done")
