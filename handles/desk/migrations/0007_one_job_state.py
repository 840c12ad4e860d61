"""Every kind of job keeps the same fields (handles.jobs.Job): a bulk job's status becomes its state, its
processed/total its progress_done/progress_total, and its succeeded/skipped/failed columns its counts (by
item outcome: ok, skipped, failed). It gains the message and requested_via every job has."""

from django.db import migrations, models

OUTCOMES = (("ok", "succeeded"), ("skipped", "skipped"), ("failed", "failed"))


def counts_from_columns(apps, schema_editor):
    BulkJob = apps.get_model("handles_desk", "BulkJob")
    for job in BulkJob.objects.only("pk", *(column for _, column in OUTCOMES)).iterator():
        counts = {outcome: getattr(job, column) for outcome, column in OUTCOMES if getattr(job, column)}
        if counts:
            BulkJob.objects.filter(pk=job.pk).update(counts=counts)


def columns_from_counts(apps, schema_editor):
    BulkJob = apps.get_model("handles_desk", "BulkJob")
    for job in BulkJob.objects.exclude(counts={}).only("pk", "counts").iterator():
        BulkJob.objects.filter(pk=job.pk).update(**{column: job.counts.get(outcome, 0) for outcome, column in OUTCOMES})


class Migration(migrations.Migration):

    dependencies = [("handles_desk", "0006_leased_jobs")]

    operations = [
        migrations.RemoveIndex(model_name="bulkjob", name="bulkjob_status_idx"),
        migrations.RenameField(model_name="bulkjob", old_name="status", new_name="state"),
        migrations.RenameField(model_name="bulkjob", old_name="processed", new_name="progress_done"),
        migrations.RenameField(model_name="bulkjob", old_name="total", new_name="progress_total"),
        migrations.AddField(model_name="bulkjob", name="counts", field=models.JSONField(blank=True, default=dict)),
        # Elidable: it converts the rows of an earlier release, it seeds nothing (tests.migration_data).
        migrations.RunPython(counts_from_columns, columns_from_counts, elidable=True),
        migrations.RemoveField(model_name="bulkjob", name="succeeded"),
        migrations.RemoveField(model_name="bulkjob", name="skipped"),
        migrations.RemoveField(model_name="bulkjob", name="failed"),
        migrations.AddField(model_name="bulkjob", name="message", field=models.CharField(
            blank=True, help_text="What the job is doing now.", max_length=500)),
        migrations.AddField(model_name="bulkjob", name="requested_via", field=models.CharField(
            blank=True, max_length=100)),
        migrations.AlterField(model_name="bulkjob", name="state", field=models.CharField(
            choices=[("queued", "Queued"), ("running", "Running"), ("verifying", "Verifying on the server"),
                     ("done", "Done"), ("incomplete", "Incomplete: some changes failed on the server"),
                     ("failed", "Failed"), ("cancelled", "Cancelled")], default="queued", max_length=10)),
        migrations.AlterField(model_name="bulkjob", name="verification", field=models.JSONField(
            blank=True, default=dict, help_text="What became of the job's requests (handles.jobs.Tally): success is "
                                                "verified on the server; error, queued, running; unpushed: lines "
                                                "without a request.")),
        migrations.AddIndex(model_name="bulkjob", index=models.Index(fields=["state", "lease_until"],
                                                                     name="bulkjob_state_idx")),
    ]
