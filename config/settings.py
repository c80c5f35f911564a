"""Chorus settings: everything comes from environment variables.

With nothing set, Chorus runs on the embedded default: a SQLite file, Celery on
the ``filesystem://`` broker, and the built-in sandbox instead of real providers.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_database, env_int, env_list, env_str, env_url

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("CHORUS_DATA_DIR", str(BASE_DIR / ".data"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)

CHORUS_ENV = env_str("CHORUS_ENV", "development")
if CHORUS_ENV not in {"development", "production"}:
    raise ImproperlyConfigured(f"CHORUS_ENV must be 'development' or 'production', got {CHORUS_ENV!r}.")
PRODUCTION = CHORUS_ENV == "production"


def _persistent_secret(filename: str, make: Callable[[], str]) -> str:
    """A development secret generated once and kept in the data dir.

    Web, worker and beat are separate processes; they must agree on it, so it
    is created atomically (the first writer wins) and read back by everyone.
    """
    path = DATA_DIR / filename
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(make())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text()


DEBUG = env_bool("DEBUG", not PRODUCTION)
SECRET_KEY = env_str("SECRET_KEY")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [] if PRODUCTION else ["127.0.0.1", "localhost", "[::1]", "testserver"])
if PRODUCTION:
    if len(SECRET_KEY) < 32 or SECRET_KEY.startswith("django-insecure"):
        raise ImproperlyConfigured("SECRET_KEY must be set to a random string of at least 32 characters in production.")
    if not ALLOWED_HOSTS:
        raise ImproperlyConfigured("ALLOWED_HOSTS must list the host names Chorus is served on in production.")
elif not SECRET_KEY:
    SECRET_KEY = _persistent_secret("dev_secret_key", lambda: secrets.token_urlsafe(50))

CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = PRODUCTION
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("BEHIND_TLS_PROXY", False) else None

INSTALLED_APPS = [
    "config.admin.ChorusAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "django_celery_beat",
    "customers",
    "segments",
    "campaigns",
    "channels",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------
DATABASES = {"default": env_database("DATABASE_URL", f"sqlite:///{DATA_DIR / 'chorus.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat write to the same file: wait for locks instead of
    # failing, and take the write lock up front so transactions cannot deadlock.
    DATABASES["default"]["OPTIONS"] = {"timeout": 30, "transaction_mode": "IMMEDIATE"}
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}
    # activity_rule_idx INCLUDEs columns for PostgreSQL index-only scans; SQLite just skips them.
    SILENCED_SYSTEM_CHECKS = ["models.W040"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(DATA_DIR / "staticfiles")))
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(DATA_DIR / "media")))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # The Twilio SDK logs every request's headers at INFO.
    "loggers": {"twilio.http_client": {"level": "WARNING"}},
}

# --- API ----------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["config.api.RolePermissions"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "config.api.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Chorus API",
    "DESCRIPTION": "Customers, segments and cross-channel campaigns.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI from drf-spectacular-sidecar's static files: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several models share field names ("channel", "status") with different choices.
    "ENUM_NAME_OVERRIDES": {
        "ChannelEnum": "customers.models.Channel",
        "ContentChannelEnum": "campaigns.models.ContentChannel",
        "ConsentStatusEnum": "customers.models.Consent.Status",
        "ImportStatusEnum": "customers.models.ImportJob.Status",
        "MessageStatusEnum": "channels.models.Message.Status",
    },
}

# --- Celery -------------------------------------------------------------------
BROKER_DIR = DATA_DIR / "broker"
CELERY_BROKER_URL = env_url(
    "CELERY_BROKER_URL",
    "filesystem://",
    schemes=("filesystem", "redis", "rediss", "amqp", "amqps"),
    hostless=("filesystem",),
)
if CELERY_BROKER_URL.startswith("filesystem"):
    for sub in ("out", "processed", "control"):
        (BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "out"),
        "data_folder_out": str(BROKER_DIR / "out"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
        # The default (1 s between polls) caps a worker at about a task a second.
        "polling_interval": 0.05,
    }
else:
    # Tasks never carry an ETA near this: long waits live in the database.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CHORUS_TICK_SECONDS = env_int("CHORUS_TICK_SECONDS", 10, minimum=1)
CHORUS_DISPATCH_BATCH = env_int("CHORUS_DISPATCH_BATCH", 500, minimum=1)
# Messages per send task, per channel. Email fills SendGrid calls of up to 1,000 recipients;
# Twilio takes one request per message, so smaller SMS tasks spread over the workers.
CHORUS_SEND_BATCH = {
    "email": env_int("CHORUS_SEND_BATCH_EMAIL", 1000, minimum=1),
    "sms": env_int("CHORUS_SEND_BATCH_SMS", 100, minimum=1),
    "whatsapp": env_int("CHORUS_SEND_BATCH_WHATSAPP", 100, minimum=1),
    "social": env_int("CHORUS_SEND_BATCH_SOCIAL", 100, minimum=1),
}

# --- Providers ----------------------------------------------------------------
CHORUS_PUBLIC_URL = env_url("CHORUS_PUBLIC_URL", "http://127.0.0.1:8000")
CHORUS_SANDBOX = env_bool("CHORUS_SANDBOX", not PRODUCTION)
_sandbox = f"{CHORUS_PUBLIC_URL}/sandbox"

SENDGRID_API_KEY = env_str("SENDGRID_API_KEY", "SG.sandbox" if CHORUS_SANDBOX else "")
SENDGRID_API_HOST = env_url(
    "SENDGRID_API_HOST", f"{_sandbox}/sendgrid" if CHORUS_SANDBOX else "https://api.sendgrid.com"
)
TWILIO_ACCOUNT_SID = env_str("TWILIO_ACCOUNT_SID", "AC00000000000000000000000000000000" if CHORUS_SANDBOX else "")
TWILIO_AUTH_TOKEN = env_str("TWILIO_AUTH_TOKEN", "sandbox-auth-token" if CHORUS_SANDBOX else "")
TWILIO_API_BASE_URL = env_url(
    "TWILIO_API_BASE_URL", f"{_sandbox}/twilio" if CHORUS_SANDBOX else "https://api.twilio.com"
)
TWILIO_FROM_NUMBER = env_str("TWILIO_FROM_NUMBER", "+15005550006" if CHORUS_SANDBOX else "")
CHORUS_PROVIDER_TIMEOUT = env_int("CHORUS_PROVIDER_TIMEOUT", 15, minimum=1)
# What one SMS segment costs where campaigns.SmsPrice has no row for the country: "<amount> <currency>", or "".
CHORUS_SMS_DEFAULT_PRICE = env_str("CHORUS_SMS_DEFAULT_PRICE", "0.0079 USD").strip()
if CHORUS_SMS_DEFAULT_PRICE and not re.fullmatch(r"\d{1,4}(\.\d{1,4})? [A-Z]{3}", CHORUS_SMS_DEFAULT_PRICE):
    raise ImproperlyConfigured(
        "CHORUS_SMS_DEFAULT_PRICE must be an amount and a currency such as '0.0079 USD', "
        f"got {CHORUS_SMS_DEFAULT_PRICE!r}."
    )
# An address that unsubscribes whoever writes to it, offered in List-Unsubscribe beside the link (optional).
CHORUS_UNSUBSCRIBE_MAILTO = env_str("CHORUS_UNSUBSCRIBE_MAILTO").strip()

if CHORUS_SANDBOX:
    # The sandbox signs SendGrid events with this key; unless told otherwise the
    # webhook view verifies with its public half, exactly like production.
    from config.keys import ec_private_key_pem, ec_public_key_b64

    CHORUS_SANDBOX_SENDGRID_PRIVATE_KEY = env_str("CHORUS_SANDBOX_SENDGRID_PRIVATE_KEY") or _persistent_secret(
        "sandbox_sendgrid_key.pem", ec_private_key_pem
    )
    SENDGRID_WEBHOOK_PUBLIC_KEY = env_str("SENDGRID_WEBHOOK_PUBLIC_KEY") or ec_public_key_b64(
        CHORUS_SANDBOX_SENDGRID_PRIVATE_KEY
    )
else:
    CHORUS_SANDBOX_SENDGRID_PRIVATE_KEY = ""
    SENDGRID_WEBHOOK_PUBLIC_KEY = env_str("SENDGRID_WEBHOOK_PUBLIC_KEY")
CHORUS_SANDBOX_EVENT_DELAY = env_int("CHORUS_SANDBOX_EVENT_DELAY", 1, minimum=0)


def _sandbox_faults(raw: str) -> dict[str, dict]:
    """``sendgrid=429:0.1:2,twilio=503:0.05`` -> per provider: status, share of requests, Retry-After."""
    faults = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        match = re.fullmatch(r"(sendgrid|twilio|mastodon|bluesky)=(429|5\d\d):(0?\.\d+|1(?:\.0*)?)(?::(\d+))?", item)
        if not match:
            raise ImproperlyConfigured(
                "CHORUS_SANDBOX_FAULTS must be comma-separated provider=status:share[:retry_after] items, "
                f"e.g. 'sendgrid=429:0.1:2,twilio=503:0.05'; {item!r} is not one."
            )
        provider, status, share, retry_after = match.groups()
        if float(share) <= 0:
            raise ImproperlyConfigured(f"CHORUS_SANDBOX_FAULTS: the share in {item!r} must be above 0.")
        faults[provider] = {
            "status": int(status),
            "share": float(share),
            "retry_after": int(retry_after) if retry_after else None,
        }
    return faults


# The sandbox answers these errors to a share of requests (tests and benchmarks of the retry path).
CHORUS_SANDBOX_FAULTS = _sandbox_faults(env_str("CHORUS_SANDBOX_FAULTS"))

# channel -> adapter class; adding a provider is one module and one line here.
CHORUS_ADAPTERS = {
    "email": env_str("CHORUS_EMAIL_ADAPTER", "channels.adapters.sendgrid.SendGridAdapter"),
    "sms": env_str("CHORUS_SMS_ADAPTER", "channels.adapters.twilio.TwilioSmsAdapter"),
    "whatsapp": env_str("CHORUS_WHATSAPP_ADAPTER", "channels.adapters.twilio.TwilioWhatsAppAdapter"),
    "mastodon": env_str("CHORUS_MASTODON_ADAPTER", "channels.adapters.mastodon.MastodonAdapter"),
    "bluesky": env_str("CHORUS_BLUESKY_ADAPTER", "channels.adapters.bluesky.BlueskyAdapter"),
}

if PRODUCTION and not CHORUS_SANDBOX:
    for _name in ("SENDGRID_API_KEY", "SENDGRID_WEBHOOK_PUBLIC_KEY", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"):
        if not globals()[_name]:
            raise ImproperlyConfigured(f"{_name} must be set in production (or set CHORUS_SANDBOX=true).")


# Social networks
# The brand's Mastodon account (an access token of an application with the
# read and write scopes) and Bluesky account (handle and app password).
MASTODON_API_BASE_URL = env_url(
    "MASTODON_API_BASE_URL", f"{_sandbox}/mastodon" if CHORUS_SANDBOX else "https://mastodon.social"
)
MASTODON_ACCESS_TOKEN = env_str("MASTODON_ACCESS_TOKEN", "sandbox-mastodon-token" if CHORUS_SANDBOX else "")
BLUESKY_PDS_URL = env_url("BLUESKY_PDS_URL", f"{_sandbox}/bluesky" if CHORUS_SANDBOX else "https://bsky.social")
BLUESKY_HANDLE = env_str("BLUESKY_HANDLE", "chorus.bsky.social" if CHORUS_SANDBOX else "")
BLUESKY_APP_PASSWORD = env_str("BLUESKY_APP_PASSWORD", "sand-box0-app0-pass" if CHORUS_SANDBOX else "")
# How often post engagement, replies and mentions are fetched, and for how long after a post.
CHORUS_SOCIAL_POLL_SECONDS = env_int("CHORUS_SOCIAL_POLL_SECONDS", 300, minimum=10)
CHORUS_SOCIAL_POLL_DAYS = env_int("CHORUS_SOCIAL_POLL_DAYS", 7, minimum=1)
# Mastodon direct messages are messages of their own channel, sent in the social batches.
CHORUS_SEND_BATCH.setdefault("mastodon", CHORUS_SEND_BATCH["social"])

# Sandbox playback
# What the sandbox plays back for each message it received, per channel: the share
# that is delivered, bounces or fails, and of the delivered ones the share that is
# opened, clicked, read (WhatsApp) or answered with STOP; ``delay`` is the seconds
# between the delivery events and those later ones. Outcomes whose shares add up
# to less than 1 leave the rest where the provider left it (email: deferred; SMS:
# sent). ``click`` counts within ``open`` (a click is also an open). A channel left
# out keeps its defaults; an event left out of a given channel never happens, and
# a delay left out is 0.
_SANDBOX_PLAYBACK_EVENTS = {
    "email": ("delivered", "bounce", "open", "click"),
    "sms": ("delivered", "undelivered", "failed", "stop"),
    "whatsapp": ("delivered", "undelivered", "failed", "read", "stop"),
}
_SANDBOX_PLAYBACK_OUTCOMES = ("delivered", "bounce", "undelivered", "failed")
_SANDBOX_PLAYBACK_MAX_DELAY = 900  # a later playback task must not outlive the broker's visibility timeout
_SANDBOX_PLAYBACK_DEFAULT = (
    "email=delivered:0.97,bounce:0.02,open:0.35,click:0.06,delay:20;"
    "sms=delivered:0.96,undelivered:0.02,failed:0.01,stop:0.01,delay:30;"
    "whatsapp=delivered:0.97,undelivered:0.01,failed:0.01,read:0.7,stop:0.005,delay:30"
)


def _sandbox_playback(raw: str) -> dict[str, dict[str, float]]:
    """``email=delivered:0.97,open:0.35,delay:20;sms=...`` -> per channel: share per event, and ``delay``."""
    example = "e.g. 'email=delivered:0.95,bounce:0.03,open:0.45,click:0.12,delay:20;sms=delivered:0.98,stop:0.02'"
    profiles: dict[str, dict[str, float]] = {}
    for part in filter(None, (p.strip() for p in raw.split(";"))):
        channel, _, spec = part.partition("=")
        channel = channel.strip()
        if channel not in _SANDBOX_PLAYBACK_EVENTS:
            raise ImproperlyConfigured(
                f"CHORUS_SANDBOX_PLAYBACK: unknown channel {channel!r} in {part!r}; "
                f"expected {', '.join(_SANDBOX_PLAYBACK_EVENTS)} ({example})."
            )
        if channel in profiles:
            raise ImproperlyConfigured(f"CHORUS_SANDBOX_PLAYBACK: the channel {channel!r} is given twice.")
        profile: dict[str, float] = {}
        for item in filter(None, (i.strip() for i in spec.split(","))):
            name, _, value = item.partition(":")
            if name == "delay":
                if not value.isdigit() or int(value) > _SANDBOX_PLAYBACK_MAX_DELAY:
                    raise ImproperlyConfigured(
                        f"CHORUS_SANDBOX_PLAYBACK: the {channel} delay must be whole seconds from 0 to "
                        f"{_SANDBOX_PLAYBACK_MAX_DELAY}, got {value!r}."
                    )
                profile["delay"] = int(value)
                continue
            if name not in _SANDBOX_PLAYBACK_EVENTS[channel]:
                raise ImproperlyConfigured(
                    f"CHORUS_SANDBOX_PLAYBACK: {name!r} is not a {channel} event; expected "
                    f"{', '.join(_SANDBOX_PLAYBACK_EVENTS[channel])} or delay ({example})."
                )
            try:
                share = float(value)
            except ValueError:
                share = -1.0
            if not 0 <= share <= 1:
                raise ImproperlyConfigured(
                    f"CHORUS_SANDBOX_PLAYBACK: the share of {channel} {name} must be a number from 0 to 1, "
                    f"got {value!r}."
                )
            profile[name] = share
        outcomes = sum(share for name, share in profile.items() if name in _SANDBOX_PLAYBACK_OUTCOMES)
        if outcomes > 1 + 1e-9:
            raise ImproperlyConfigured(
                f"CHORUS_SANDBOX_PLAYBACK: the {channel} outcomes "
                f"({', '.join(n for n in profile if n in _SANDBOX_PLAYBACK_OUTCOMES)}) add up to {outcomes:g}, "
                "more than 1."
            )
        if profile.get("click", 0) > profile.get("open", 0):
            raise ImproperlyConfigured(
                "CHORUS_SANDBOX_PLAYBACK: email click cannot exceed open (a clicked email is also opened)."
            )
        profiles[channel] = profile
    return profiles


CHORUS_SANDBOX_PLAYBACK = {
    **_sandbox_playback(_SANDBOX_PLAYBACK_DEFAULT),
    **_sandbox_playback(env_str("CHORUS_SANDBOX_PLAYBACK")),
}

# --- Rate limits ----------------------------------------------------------------
# Per-sender limits live in channels.SenderRateLimit (admin); this picks where the
# limiter shared by all workers keeps its state: "redis" (workers on any number of
# hosts) or "database" (the embedded default: one host). Redis when there is one.
_redis_broker = CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else ""
CHORUS_REDIS_URL = (
    env_url("CHORUS_REDIS_URL", "", schemes=("redis", "rediss")) if env_str("CHORUS_REDIS_URL") else _redis_broker
)
CHORUS_RATE_LIMITER = env_str("CHORUS_RATE_LIMITER", "redis" if CHORUS_REDIS_URL else "database").strip()
if CHORUS_RATE_LIMITER not in {"redis", "database"}:
    raise ImproperlyConfigured(f"CHORUS_RATE_LIMITER must be 'redis' or 'database', got {CHORUS_RATE_LIMITER!r}.")
if CHORUS_RATE_LIMITER == "redis" and not CHORUS_REDIS_URL:
    raise ImproperlyConfigured("CHORUS_RATE_LIMITER=redis needs CHORUS_REDIS_URL (or a redis:// CELERY_BROKER_URL).")
# How long a worker keeps the limits it read: a change in the admin applies within this many seconds.
CHORUS_RATE_LIMIT_CACHE_SECONDS = env_int("CHORUS_RATE_LIMIT_CACHE_SECONDS", 5, minimum=0)
