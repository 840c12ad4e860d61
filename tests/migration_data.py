"""Re-run the migrations' data steps (groups and their permissions, task schedules), not the elidable ones.

A transactional test ends by emptying every table: the tests that follow must still find what the
migrations made, as a real deployment always does.
"""

from __future__ import annotations


def reseed_migration_data() -> None:
    from django.db import connection
    from django.db.migrations.loader import MigrationLoader
    from django.db.migrations.operations import RunPython

    loader = MigrationLoader(connection)
    state_apps = loader.project_state().apps
    with connection.schema_editor() as editor:
        for (app_label, _name), migration in sorted(loader.disk_migrations.items()):
            if not app_label.startswith("handles") or not migration.atomic:  # index builds are not data
                continue
            for operation in migration.operations:
                # An elidable step converts the rows of an earlier release (it seeds nothing) and is written
                # for the models of its own time, not for today's.
                if isinstance(operation, RunPython) and not operation.elidable:
                    operation.code(state_apps, editor)


def uses_transactional_db(item) -> bool:
    marker = item.get_closest_marker("django_db")
    return "transactional_db" in getattr(item, "fixturenames", ()) or bool(
        marker and (marker.kwargs.get("transaction") or (marker.args and marker.args[0])))
