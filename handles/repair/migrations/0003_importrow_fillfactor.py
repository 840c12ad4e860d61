"""Room on each page of the import report for the new version of a row (PostgreSQL's fillfactor).

Applying an import links each of its 100,000 lines to the handle and request it created. With free space on
the row's own page and no index on the changed columns, PostgreSQL updates the row in place (a HOT update)
and touches no index, which makes the link several times cheaper.
"""

from django.db import migrations

TABLE = "handles_repair_importrow"


def set_fillfactor(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE {TABLE} SET (fillfactor = 60)")


def reset_fillfactor(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE {TABLE} RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [("handles_repair", "0002_permissions_and_schedules")]
    operations = [migrations.RunPython(set_fillfactor, reset_fillfactor)]
