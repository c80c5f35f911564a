import django.apps
from django.conf import settings
from django.core.management.base import BaseCommand

from campaigns.periodic import periodic_tasks_ensure
from config.roles import roles_ensure


class Command(BaseCommand):
    help = "Create or update the role groups and the beat tick (idempotent)."

    def handle(self, *args, **options):
        roles_ensure(django.apps.apps)
        periodic_tasks_ensure(django.apps.apps, every_seconds=settings.CHORUS_TICK_SECONDS)
        self.stdout.write(f"Roles ready; beat tick every {settings.CHORUS_TICK_SECONDS}s.")
