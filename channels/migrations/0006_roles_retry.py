from django.db import migrations

from config.roles import roles_ensure


def forwards(apps, schema_editor):
    roles_ensure(apps)


class Migration(migrations.Migration):
    """Marketers may retry failed deliveries (view and change messages)."""

    dependencies = [
        ("channels", "0005_webhookdelivery_body_lz4"),
        ("customers", "0008_identity_pattern_indexes"),
        ("segments", "0001_initial"),
    ]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
