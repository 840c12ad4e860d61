"""django-q2 tasks of imports, reconciliations, repairs and health checks: thin, they take ids and call
the services and engines. The one module of this app that hands work to the broker (`async_task`)."""

from __future__ import annotations

from handles.labels import counted


def enqueue_job(kind: str, job_id: int) -> None:
    """Hand a job's first slice to the task queue (handles.jobs runs every kind); called after the
    transaction that recorded it commits."""
    from handles import tasks

    tasks.enqueue_job_slice(kind, job_id)


def enqueue_conflict_read(batch_id: int) -> None:
    """Hand the reading of an import's conflicting handles from the server to the task queue (one short
    task, not a job); called after the transaction that asked for it commits."""
    from django_q.tasks import async_task

    async_task("handles.repair.tasks.read_import_conflicts", batch_id, group="handles-repair",
               task_name=f"import conflicts {batch_id}")


def enqueue_request_ids(request_ids: list[int]) -> None:
    """Hand thousands of new requests to the queue in background chunks (handles.tasks)."""
    from handles import tasks

    tasks.enqueue_request_ids(request_ids)


def hand_over_requests(request_ids: list[int]) -> str:
    """Kept for hand-overs a broker still holds from before they moved to handles.tasks."""
    from handles import tasks

    return tasks.hand_over_requests(request_ids)


# Kept for tasks a broker still holds from before every kind of job ran in slices through handles.jobs.
def _slice(kind: str, job_id: int) -> str:
    from handles import tasks

    return tasks.run_job_slice(kind, job_id)


def analyse_import(batch_id: int) -> str:
    return _slice("import", batch_id)


def read_import_conflicts(batch_id: int) -> str:
    """Where the server resolves each handle the file cites for several records (the conflicts page)."""
    from handles.repair import conflicts, services

    found = conflicts.read_server(batch_id)
    services.import_conflicts_record_server(batch_id, found)
    return f"{counted(len(found), 'conflicting handle')} read from the server"


def apply_import(batch_id: int) -> str:
    return _slice("import", batch_id)


def push_import(batch_id: int) -> str:
    return _slice("import", batch_id)


def run_reconciliation(run_id: int) -> str:
    return _slice("reconcile", run_id)


def run_repair(job_id: int) -> str:
    return _slice("repair", job_id)


def run_health_check(run_id: int) -> str:
    return _slice("health", run_id)


def reconcile_all_prefixes() -> str:
    """The nightly schedule: one reconciliation per prefix, each its own background job."""
    from handles.models import Prefix
    from handles.repair import services

    runs = [services.reconciliation_start(prefix=prefix, via="schedule") for prefix in Prefix.objects.all()]
    return f"started {counted(len(runs), 'reconciliation')}"


def check_health_everywhere() -> str:
    """The weekly schedule: check every live handle's resolution."""
    from handles.repair import health, services

    pruned = health.prune_old_runs()
    run = services.health_start(filters={}, via="schedule")
    return f"started health check #{run.pk}" + (f"; pruned the results of {counted(pruned, 'old run')}" if pruned else "")
