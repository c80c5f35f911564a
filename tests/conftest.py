from __future__ import annotations

import django.apps
import pytest

from config.celery import app as celery_app
from config.roles import ANALYST, MARKETER, roles_ensure
from tests.factories import UserFactory


@pytest.fixture(autouse=True)
def _celery_eager(request):
    """Tasks run inline, except in tests that start a real worker."""
    if request.node.get_closest_marker("worker"):
        yield
        return
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    yield
    celery_app.conf.task_always_eager = False
    celery_app.conf.task_eager_propagates = False


@pytest.fixture
def roles(db):
    # Transactional tests flush what migrations created; put the groups back.
    roles_ensure(django.apps.apps)


@pytest.fixture
def marketer_client(client, roles):
    """The test client logged in as a marketer."""
    client.force_login(UserFactory(username="mia", role=MARKETER))
    return client


@pytest.fixture
def analyst_client(client, roles):
    """The test client logged in as an analyst: reads everything, changes nothing."""
    client.force_login(UserFactory(username="ada", role=ANALYST))
    return client


@pytest.fixture
def sandbox(live_server, settings):
    """Point the real provider SDKs and webhook callbacks at this test's server."""
    settings.CHORUS_PUBLIC_URL = live_server.url
    settings.SENDGRID_API_HOST = f"{live_server.url}/sandbox/sendgrid"
    settings.TWILIO_API_BASE_URL = f"{live_server.url}/sandbox/twilio"
    settings.MASTODON_API_BASE_URL = f"{live_server.url}/sandbox/mastodon"
    settings.BLUESKY_PDS_URL = f"{live_server.url}/sandbox/bluesky"
    # Every message delivered, nothing more: a test that wants opens, bounces or STOPs asks for them.
    settings.CHORUS_SANDBOX_PLAYBACK = {channel: {"delivered": 1.0} for channel in ("email", "sms", "whatsapp")}
    return live_server


@pytest.fixture
def hold_sends(monkeypatch):
    """Dispatch writes queued messages but their send tasks are not enqueued:
    the state between dispatch committing and a worker picking the task up."""
    held: list[dict] = []
    monkeypatch.setattr("channels.tasks.messages_enqueue", held.append)
    return held
