"""Each health run keeps its own results: HandleCheck becomes one row per handle per run (it was each
handle's last check, replaced by the next run). Existing checks are copied into the runs that made them.
Also: the "not checked" outcome, the title score, and what an import's conflicting lines need (the
server's URL at the dry run, and staff's resolution)."""

import django.db.models.deletion
from django.db import migrations, models

COLUMNS = ("handle_id", "run_id", "checked_at", "outcome", "server_url", "final_url", "http_status", "hops",
           "attempts", "elapsed_ms", "page_title", "detail")
OUTCOMES = [("correct", "Resolves correctly"), ("broken", "Broken"), ("wrong_object", "Resolves to the wrong object"),
            ("timeout", "Timed out"), ("not_checked", "Not checked")]


def copy_last_checks(apps, schema_editor):
    try:
        old = apps.get_model("handles_repair", "LastHandleCheck")
    except LookupError:  # re-run on the final state (tests/migration_data.py): nothing to copy
        return
    new = apps.get_model("handles_repair", "HandleCheck")
    rows = old.objects.filter(run__isnull=False).order_by("pk").values(*COLUMNS)
    batch = []
    for row in rows.iterator(chunk_size=5000):
        batch.append(new(**row))
        if len(batch) == 5000:
            new.objects.bulk_create(batch)
            batch = []
    new.objects.bulk_create(batch)


def copy_back(apps, schema_editor):
    old = apps.get_model("handles_repair", "LastHandleCheck")
    new = apps.get_model("handles_repair", "HandleCheck")
    latest = {}
    for row in new.objects.order_by("pk").values(*COLUMNS).iterator(chunk_size=5000):
        latest[row["handle_id"]] = row
    old.objects.bulk_create([old(**row) for row in latest.values()], batch_size=5000)


class Migration(migrations.Migration):
    dependencies = [
        ("handles", "0004_handle_target_url_index"),
        ("handles_repair", "0007_leased_jobs"),
    ]

    operations = [
        migrations.RenameModel("HandleCheck", "LastHandleCheck"),
        migrations.CreateModel(
            name="HandleCheck",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("checked_at", models.DateTimeField()),
                ("outcome", models.CharField(choices=OUTCOMES, max_length=12)),
                ("server_url", models.CharField(blank=True, help_text="The URL the Handle server gave.",
                                                max_length=2000)),
                ("final_url", models.CharField(blank=True, help_text="Where following it ended.", max_length=2000)),
                ("http_status", models.PositiveSmallIntegerField(blank=True, null=True)),
                ("hops", models.PositiveSmallIntegerField(default=0, help_text="Redirects followed.")),
                ("attempts", models.PositiveSmallIntegerField(default=1)),
                ("elapsed_ms", models.PositiveIntegerField(default=0)),
                ("page_title", models.CharField(blank=True, max_length=500)),
                ("title_score", models.FloatField(blank=True, null=True, help_text="How closely the page's title "
                                                  "matches the object's (1 = exactly).")),
                ("detail", models.CharField(blank=True, max_length=1000)),
                ("handle", models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE,
                                             related_name="checks", to="handles.handle")),
                ("run", models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE,
                                          related_name="checks", to="handles_repair.healthrun")),
            ],
            options={
                "ordering": ["-checked_at"],
                "indexes": [models.Index(fields=["handle", "id"], name="check_handle_idx"),
                            models.Index(fields=["run", "outcome", "handle"], name="check_run_outcome_idx")],
                "constraints": [models.UniqueConstraint(fields=("run", "handle"),
                                                        name="one_check_per_handle_per_run")],
            },
        ),
        migrations.RunPython(copy_last_checks, copy_back),
        migrations.DeleteModel("LastHandleCheck"),
        migrations.AddField("importrow", "server_url", models.CharField(blank=True, max_length=2000)),
        migrations.AddField("importrow", "server_note", models.CharField(
            blank=True, help_text="Why the server's URL is not known.", max_length=300)),
        migrations.AddField("importrow", "resolution", models.CharField(
            blank=True, choices=[("kept", "Keeps the handle"), ("flagged", "Flagged: needs a handle"),
                                 ("new_handle", "Given a new handle")], max_length=10)),
        migrations.AddField("importrow", "resolution_note", models.CharField(blank=True, max_length=500)),
    ]
