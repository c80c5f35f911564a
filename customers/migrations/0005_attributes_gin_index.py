"""A GIN index on Customer.attributes, PostgreSQL only.

Attribute ``eq`` conditions compile to JSONB containment (``attributes @> {...}``)
on PostgreSQL, which this index serves, so segment counts combining attributes
with indexed profile fields stay index-driven at 1M customers. It lives outside
the model state: SQLite has no GIN, and a GinIndex in ``Meta.indexes`` would break
every later SQLite table rebuild.
"""

from django.db import migrations

CREATE = (
    "CREATE INDEX IF NOT EXISTS customer_attributes_gin ON customers_customer USING gin (attributes jsonb_path_ops)"
)
DROP = "DROP INDEX IF EXISTS customer_attributes_gin"


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("customers", "0004_identity_partial_uniques_activity_covering_index")]
    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
