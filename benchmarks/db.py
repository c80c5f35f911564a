"""Where the benchmark database lives, and how it is created, migrated and reached.

Contract:

* The benchmark database is a *dedicated* database: by default ``chorus_bench``
  on the server named by ``$DATABASE_URL`` (or ``postgres://postgres@127.0.0.1:5432/``
  when that is unset or not PostgreSQL). Its name must start with ``chorus_bench``:
  the generator truncates it, so a URL pointing at any other database is refused.
* ``ensure_database`` creates it if missing; ``migrate`` runs ``manage.py migrate``
  against it in a subprocess; ``setup_django`` points this process's Django at it
  (it must run before anything else configures Django).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SERVER = "postgres://postgres@127.0.0.1:5432/"
DEFAULT_NAME = "chorus_bench"
POSTGRES_SCHEMES = ("postgres", "postgresql", "pgsql")


class BenchError(RuntimeError):
    """A problem the operator has to fix; the CLI prints it without a traceback."""


def is_postgres_url(url: str | None) -> bool:
    return bool(url) and urlsplit(url).scheme in POSTGRES_SCHEMES


def with_database(url: str, name: str) -> str:
    """``url`` with its database (path) replaced by ``name``; query string kept."""
    parts = urlsplit(url)
    scheme = "postgresql" if parts.scheme == "pgsql" else parts.scheme
    return urlunsplit((scheme, parts.netloc, f"/{name}", parts.query, ""))


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def default_bench_url(environ: Mapping[str, str] = os.environ, name: str = DEFAULT_NAME) -> str:
    """``name`` on the ``$DATABASE_URL`` server, else on the local default server."""
    server = environ.get("DATABASE_URL", "")
    return with_database(server if is_postgres_url(server) else DEFAULT_SERVER, name)


def check_bench_url(url: str) -> str:
    """Return ``url`` if it is a PostgreSQL URL naming a ``chorus_bench*`` database, else raise."""
    if not is_postgres_url(url):
        raise BenchError(f"the benchmark database must be PostgreSQL (postgres://...), got {url!r}")
    name = database_name(url)
    if not name.startswith(DEFAULT_NAME):
        raise BenchError(
            f"refusing to use database {name!r}: benchmarks truncate their database, so its name must start "
            f"with {DEFAULT_NAME!r} (for example {with_database(url, DEFAULT_NAME)})"
        )
    return url


def connect(url: str, **kwargs: object) -> psycopg.Connection:
    try:
        return psycopg.connect(url, **kwargs)
    except psycopg.OperationalError as exc:
        raise BenchError(f"cannot connect to {url}: {exc}".strip()) from None


def database_exists(url: str) -> bool:
    with connect(with_database(url, "postgres"), autocommit=True) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database_name(url)]).fetchone()
    return row is not None


def ensure_database(url: str) -> bool:
    """Create the database named by ``url`` unless it exists; True if it was created."""
    if database_exists(url):
        return False
    with connect(with_database(url, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database_name(url))))
    return True


def drop_database(url: str) -> None:
    """Drop the database named by ``url`` (terminating its sessions); no error if absent."""
    check_bench_url(url)
    with connect(with_database(url, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database_name(url))))


def migrate(url: str) -> None:
    """Run ``manage.py migrate`` with ``DATABASE_URL=url``; raise with its output on failure."""
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "config.settings"}
    result = subprocess.run(  # noqa: S603 - our own interpreter and manage.py, no shell
        [sys.executable, str(PROJECT_ROOT / "manage.py"), "migrate", "--noinput"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BenchError(f"manage.py migrate failed for {url}:\n{result.stdout}{result.stderr}")


def setup_django(url: str) -> None:
    """Configure Django in this process for the database at ``url``.

    Sets ``DATABASE_URL`` before ``django.setup()`` (settings read it once). If
    Django is already configured for another database, raise instead of
    silently benchmarking the wrong one.
    """
    import django
    from django.conf import settings

    if settings.configured:
        current = settings.DATABASES["default"].get("NAME")
        if current != database_name(url):
            raise BenchError(f"Django is already configured for database {current!r}, not {database_name(url)!r}")
        return
    if str(PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT))
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()


def checkpoint() -> None:
    """A CHECKPOINT, so none is due in the middle of a timed run (call it before preparing the run).

    Needs a superuser or ``pg_checkpoint``; without either the runs are only noisier.
    """
    from django.db import DatabaseError, connection

    try:
        with connection.cursor() as cursor:
            cursor.execute("CHECKPOINT")
    except DatabaseError:
        pass
