"""Indexes for searching and filtering a million handles on PostgreSQL; nothing on SQLite (development).

Trigram GIN indexes (pg_trgm) serve the case-insensitive "contains" searches of the admin and browse
pages: Django's icontains is UPPER(col::text) LIKE UPPER(%term%), so the indexes are on that expression.
They are built CONCURRENTLY (a non-atomic migration) so that deploying on a live database does not
block writes while they build.
"""

from django.db import migrations

INDEXES = [
    # name, table, definition
    ("desk_handle_suffix_trgm", "handles_handle", "USING gin (suffix_key gin_trgm_ops)"),
    ("desk_handle_url_trgm", "handles_handle", "USING gin ((upper(target_url::text)) gin_trgm_ops)"),
    # "Not yet confirmed on the server" is rare: a partial index finds those handles without a scan.
    ("desk_handle_unsynced", "handles_handle", "(id) WHERE synced_version <> version"),
    ("desk_asset_title_trgm", "handles_asset", "USING gin ((upper(title::text)) gin_trgm_ops)"),
    ("desk_asset_extid_trgm", "handles_asset", "USING gin ((upper(external_id::text)) gin_trgm_ops)"),
    # Collections: external id and URL prefixes (LIKE 'x%'), which a plain btree cannot serve outside the C locale.
    ("desk_asset_extid_pattern", "handles_asset", "(source_system, external_id varchar_pattern_ops)"),
    ("desk_asset_url_trgm", "handles_asset", "USING gin (url gin_trgm_ops)"),
    ("desk_request_handle_trgm", "handles_handlerequest", "USING gin ((upper(full_handle::text)) gin_trgm_ops)"),
]


def create_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for name, table, definition in INDEXES:
        schema_editor.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {table} {definition}")


def drop_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, _table, _definition in INDEXES:
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("handles_desk", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(create_indexes, drop_indexes, elidable=False),
    ]
