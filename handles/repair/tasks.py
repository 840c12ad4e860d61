"""django-q2 tasks of imports, reconciliations, repairs and health checks: thin, they take ids and call
the services and engines. The one module of this app that hands work to the broker (`async_task`)."""

from __future__ import annotations

from django_q.tasks import async_task

from handles.labels import counted


def enqueue_job(func: str, job_id: int, label: str) -> None:
    """Hand a job to the task queue; called after the transaction that recorded it commits."""
    async_task(f"handles.repair.tasks.{func}", job_id, group="handles-repair", task_name=f"{label} {job_id}")


def enqueue_request_ids(request_ids: list[int]) -> None:
    """Hand thousands of new requests to the queue in background chunks (handles.tasks)."""
    from handles import tasks

    tasks.enqueue_request_ids(request_ids)


def hand_over_requests(request_ids: list[int]) -> str:
    """Kept for hand-overs a broker still holds from before they moved to handles.tasks."""
    from handles import tasks

    return tasks.hand_over_requests(request_ids)


def analyse_import(batch_id: int) -> str:
    from handles.repair import services

    batch = services.import_batch_analyse(batch_id)
    return batch.state


def apply_import(batch_id: int) -> str:
    from handles.repair import services

    batch = services.import_batch_apply(batch_id)
    return batch.state


def push_import(batch_id: int) -> str:
    from handles.repair import reconcile

    batch = reconcile.push_import(batch_id)
    return batch.state


def run_reconciliation(run_id: int) -> str:
    from handles.repair import reconcile

    run = reconcile.run(run_id)
    return f"{run.state}: {run.counts}"


def run_repair(job_id: int) -> str:
    from handles.repair import services

    job = services.repair_execute(job_id)
    return f"{job.state}: {job.counts}"


def run_health_check(run_id: int) -> str:
    from handles.repair import health

    run = health.run(run_id)
    return f"{run.state}: {run.counts}"


def reconcile_all_prefixes() -> str:
    """The nightly schedule: one reconciliation per prefix, each its own background job."""
    from handles.models import Prefix
    from handles.repair import services

    runs = [services.reconciliation_start(prefix=prefix, via="schedule") for prefix in Prefix.objects.all()]
    return f"started {counted(len(runs), 'reconciliation')}"


def check_health_everywhere() -> str:
    """The weekly schedule: check every live handle's resolution."""
    from handles.repair import services

    run = services.health_start(filters={}, via="schedule")
    return f"started health check #{run.pk}"
