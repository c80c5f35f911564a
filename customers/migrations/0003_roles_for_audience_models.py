from django.db import migrations

from config.roles import roles_ensure


def forwards(apps, schema_editor):
    # Grant the roles their permissions on Persona, ImportJob and Erasure.
    roles_ensure(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("customers", "0002_personas_identities_stats_imports_erasure"),
        ("channels", "0003_suppression"),
        ("campaigns", "0003_roles_and_tick"),
    ]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
