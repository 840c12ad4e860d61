"""The migration to one job state: an import's states before it become a step and the one state, and back;
a bulk job's status and counters become its state, progress and counts, and back."""

from __future__ import annotations

import pytest

from handles.desk.models import BulkJob
from handles.repair.models import ImportBatch
from tests.migrations_at import migrate_to, migrate_to_latest

# (state before, applied, push mode with new lines, leased) -> (step, state) after
IMPORTS = [
    ("uploaded", False, False, False, "upload", "done"),
    ("analysing", False, False, False, "analyse", "queued"),
    ("analysing", False, False, True, "analyse", "running"),
    ("analysed", False, False, False, "analyse", "done"),
    ("applying", False, False, False, "apply", "queued"),
    ("applying", True, True, True, "push", "running"),
    ("verifying", True, False, False, "apply", "verifying"),
    ("verifying", True, True, False, "push", "verifying"),
    ("applied", True, False, False, "apply", "done"),
    ("incomplete", True, True, False, "push", "incomplete"),
    ("failed", False, False, False, "analyse", "failed"),
    ("failed", True, True, False, "push", "failed"),
    ("cancelled", False, False, False, "analyse", "cancelled"),
    ("cancelled", True, True, False, "push", "cancelled"),
]


@pytest.mark.django_db(transaction=True)
def test_every_earlier_state_maps_to_a_step_and_one_state_and_back():
    from django.utils import timezone

    then = migrate_to(("handles_repair", "0008_health_results_per_run"), ("handles_desk", "0006_leased_jobs"))
    try:
        Batch = then.get_model("handles_repair", "ImportBatch")
        ids = [Batch.objects.create(
            file_name=f"{i}.csv", file_sha256="0" * 64, content=b"h\n", state=old, mode="push" if push else "adopt",
            counts={"new": 2} if push else {}, applied_at=timezone.now() if applied else None,
            lease_token="9b2e3c1e-0000-4000-8000-000000000000" if leased else None).pk
            for i, (old, applied, push, leased, _, _) in enumerate(IMPORTS)]
        Job = then.get_model("handles_desk", "BulkJob")
        job = Job.objects.create(kind="verify", status="verifying", total=7, processed=6, succeeded=4, skipped=2)
        migrate_to_latest()
        assert [(b.step, b.state) for b in ImportBatch.objects.filter(pk__in=ids).order_by("pk")] == [
            (step, state) for *_, step, state in IMPORTS]
        now = BulkJob.objects.get(pk=job.pk)
        assert (now.state, now.progress_total, now.progress_done, now.counts) == (
            "verifying", 7, 6, {"ok": 4, "skipped": 2})
        assert (now.succeeded, now.skipped, now.failed) == (4, 2, 0)

        back = migrate_to(("handles_repair", "0008_health_results_per_run"), ("handles_desk", "0006_leased_jobs"))
        assert list(back.get_model("handles_repair", "ImportBatch").objects.filter(pk__in=ids).order_by("pk")
                    .values_list("state", flat=True)) == [old for old, *_ in IMPORTS]
        earlier = back.get_model("handles_desk", "BulkJob").objects.get(pk=job.pk)
        assert (earlier.status, earlier.total, earlier.processed, earlier.succeeded, earlier.skipped,
                earlier.failed) == ("verifying", 7, 6, 4, 2, 0)
    finally:
        migrate_to_latest()
