"""Prefix-search indexes for the customer list, PostgreSQL only.

``CustomerQuerySet.search`` matches by prefix: ``UPPER(first_name::text) LIKE
'ANN%'``, ``email::text LIKE 'ann%'``, and phone endings via
``REVERSE(phone)::text LIKE '002001006%'``. These expression indexes (with
pattern opclasses, so they work under any collation) serve exactly those
expressions. SQLite has no opclasses; there the search scans, which is fine at
the embedded default's scale.
"""

from django.db import migrations

INDEXES = {
    "customer_search_email_idx": "(email varchar_pattern_ops)",
    "customer_search_first_name_idx": "(upper(first_name::text) text_pattern_ops)",
    "customer_search_last_name_idx": "(upper(last_name::text) text_pattern_ops)",
    "customer_search_phone_idx": "(reverse(phone) text_pattern_ops)",
}


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for name, expression in INDEXES.items():
            schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {name} ON customers_customer {expression}")


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for name in INDEXES:
            schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("customers", "0006_live_customer_indexes")]
    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
