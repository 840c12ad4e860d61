"""Imports and repairs that ended before jobs waited for the server were marked applied/done as soon as
their requests were queued. Put each such job back to verifying (linking a repair to its rows by the
reason its requests carry): the queue's settler then gives it the verdict of its requests within a minute."""

from django.db import migrations
from django.db.models import Exists, OuterRef

VERIFYING_MESSAGE = "Verifying on the server"


def verify_earlier_jobs(apps, schema_editor):
    ImportBatch = apps.get_model("handles_repair", "ImportBatch")
    ImportRow = apps.get_model("handles_repair", "ImportRow")
    RepairJob = apps.get_model("handles_repair", "RepairJob")
    ReconciliationRow = apps.get_model("handles_repair", "ReconciliationRow")
    recorded = ImportRow.objects.filter(batch=OuterRef("pk"), outcome="new", handle__isnull=False)
    ImportBatch.objects.filter(state="applied").filter(Exists(recorded)).update(
        state="verifying", message=VERIFYING_MESSAGE, finished_at=None)
    for job in RepairJob.objects.filter(state="done").only("pk", "run_id"):
        # The reasons services.repair_execute gives the requests it queues and the orphans it adopts.
        reasons = [f"repair #{job.pk} of reconciliation #{job.run_id}",
                   f"adopted by repair #{job.pk} of reconciliation #{job.run_id}"]
        linked = ReconciliationRow.objects.filter(run_id=job.run_id, repair_job__isnull=True,
                                                  repair_request__reason__in=reasons).update(repair_job=job.pk)
        if linked:
            RepairJob.objects.filter(pk=job.pk).update(state="verifying", message=VERIFYING_MESSAGE,
                                                       finished_at=None)


def back_to_applied(apps, schema_editor):
    """Going back: the states before this release."""
    apps.get_model("handles_repair", "ImportBatch").objects.filter(state__in=["verifying", "incomplete"]).update(
        state="applied")
    apps.get_model("handles_repair", "RepairJob").objects.filter(state__in=["verifying", "incomplete"]).update(
        state="done")


class Migration(migrations.Migration):

    dependencies = [("handles_repair", "0005_verified_jobs")]

    # Elidable: it converts the rows of an earlier release, it seeds nothing (tests.migration_data).
    operations = [migrations.RunPython(verify_earlier_jobs, back_to_applied, elidable=True)]
