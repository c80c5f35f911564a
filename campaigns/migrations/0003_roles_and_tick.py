from django.conf import settings
from django.db import migrations

from campaigns.periodic import periodic_tasks_ensure
from config.roles import roles_ensure


def forwards(apps, schema_editor):
    roles_ensure(apps)
    periodic_tasks_ensure(apps, every_seconds=settings.CHORUS_TICK_SECONDS)


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0002_initial"),
        ("channels", "0002_initial"),
        ("customers", "0001_initial"),
        ("segments", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
