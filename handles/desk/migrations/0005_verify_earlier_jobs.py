"""Bulk jobs that ended before jobs waited for the server were marked done as soon as their requests were
queued. Put each such job back to verifying: the queue's settler then gives it the verdict of its requests
within a minute."""

from django.db import migrations
from django.db.models import Exists, OuterRef


def verify_earlier_jobs(apps, schema_editor):
    BulkJob = apps.get_model("handles_desk", "BulkJob")
    BulkJobItem = apps.get_model("handles_desk", "BulkJobItem")
    queued = BulkJobItem.objects.filter(job=OuterRef("pk"), request__isnull=False)
    BulkJob.objects.filter(status="done").filter(Exists(queued)).update(status="verifying", finished_at=None)


def back_to_done(apps, schema_editor):
    """Going back: the states before this release."""
    apps.get_model("handles_desk", "BulkJob").objects.filter(status__in=["verifying", "incomplete"]).update(
        status="done")


class Migration(migrations.Migration):

    dependencies = [("handles_desk", "0004_bulkjob_verification")]

    # Elidable: it converts the rows of an earlier release, it seeds nothing (tests.migration_data).
    operations = [migrations.RunPython(verify_earlier_jobs, back_to_done, elidable=True)]
