"""Settings come from the environment; malformed values fail with the variable's name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_database, env_int, env_url

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("reader", "value", "needle"),
    [
        (lambda e: env_bool("DEBUG", False, environ=e), "maybe", "DEBUG must be a boolean"),
        (
            lambda e: env_int("CHORUS_TICK_SECONDS", 10, minimum=1, environ=e),
            "ten",
            "CHORUS_TICK_SECONDS must be an integer",
        ),
        (lambda e: env_int("CHORUS_TICK_SECONDS", 10, minimum=1, environ=e), "0", "at least 1"),
        (lambda e: env_url("CHORUS_PUBLIC_URL", "", environ=e), "example.com", "CHORUS_PUBLIC_URL must be a URL"),
        (lambda e: env_database("DATABASE_URL", "", environ=e), "mysql://x/y", "DATABASE_URL must be a sqlite"),
        (
            lambda e: env_database("DATABASE_URL", "", environ=e),
            "postgres://localhost",
            "DATABASE_URL must name a database",
        ),
    ],
)
def test_malformed_values_raise_improperly_configured_naming_the_variable(reader, value, needle):
    with pytest.raises(ImproperlyConfigured, match=needle):
        reader({"DEBUG": value, "CHORUS_TICK_SECONDS": value, "CHORUS_PUBLIC_URL": value, "DATABASE_URL": value})


def test_well_formed_values_parse():
    env = {"DEBUG": "off", "N": " 42 ", "URL": "https://chorus.example.com/", "DB": "postgres://u@db:5432/chorus"}
    assert env_bool("DEBUG", True, environ=env) is False
    assert env_int("N", 1, environ=env) == 42
    assert env_url("URL", "", environ=env) == "https://chorus.example.com"
    assert env_database("DB", "", environ=env)["NAME"] == "chorus"


def load_settings(**env) -> subprocess.CompletedProcess:
    """Import the settings in a fresh interpreter with exactly ``env`` added."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            ("CHORUS_", "DATABASE_URL", "CELERY_", "SECRET_KEY", "ALLOWED_HOSTS", "SENDGRID", "TWILIO", "DEBUG")
        )
    }
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.DATABASES['default']['ENGINE'], s.CELERY_BROKER_URL, s.DEBUG, s.SENDGRID_API_HOST)"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_embedded_default_needs_no_variables(tmp_path):
    result = load_settings(CHORUS_DATA_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    engine, broker, debug, sendgrid_host = result.stdout.split()
    assert engine == "django.db.backends.sqlite3"
    assert broker == "filesystem://"
    assert debug == "True"
    assert sendgrid_host == "http://127.0.0.1:8000/sandbox/sendgrid"
    assert (tmp_path / "dev_secret_key").exists()


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    result = load_settings(CHORUS_DATA_DIR=str(tmp_path), CHORUS_ENV="production", ALLOWED_HOSTS="chorus.example.com")
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_production_refuses_to_start_without_allowed_hosts(tmp_path):
    result = load_settings(CHORUS_DATA_DIR=str(tmp_path), CHORUS_ENV="production", SECRET_KEY="x" * 50)
    assert result.returncode != 0
    assert "ALLOWED_HOSTS must list" in result.stderr


def test_production_with_real_settings_uses_postgres_and_redis(tmp_path):
    result = load_settings(
        CHORUS_DATA_DIR=str(tmp_path),
        CHORUS_ENV="production",
        SECRET_KEY="x" * 50,
        ALLOWED_HOSTS="chorus.example.com",
        DATABASE_URL="postgres://chorus@db.internal:5432/chorus",
        CELERY_BROKER_URL="redis://redis.internal:6379/0",
        SENDGRID_API_KEY="SG.real",
        SENDGRID_WEBHOOK_PUBLIC_KEY="MFkw",
        TWILIO_ACCOUNT_SID="AC1",
        TWILIO_AUTH_TOKEN="token",
    )
    assert result.returncode == 0, result.stderr
    engine, broker, debug, sendgrid_host = result.stdout.split()
    assert (engine, broker, debug, sendgrid_host) == (
        "django.db.backends.postgresql",
        "redis://redis.internal:6379/0",
        "False",
        "https://api.sendgrid.com",
    )


def test_malformed_environment_variable_stops_start_up_with_its_name(tmp_path):
    result = load_settings(CHORUS_DATA_DIR=str(tmp_path), CHORUS_TICK_SECONDS="soon")
    assert result.returncode != 0
    assert "CHORUS_TICK_SECONDS must be an integer, got 'soon'" in result.stderr
