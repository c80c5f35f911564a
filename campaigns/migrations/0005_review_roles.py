from django.db import migrations

from config.roles import roles_ensure


def forwards(apps, schema_editor):
    roles_ensure(apps)


class Migration(migrations.Migration):
    """Brand managers approve campaigns and override findings; marketers write templates."""

    dependencies = [("campaigns", "0004_brand_templates")]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
