"""django-q2 tasks of the desk: thin, they take ids and call handles.desk.services.

Services are imported inside the functions, because services import this module.
"""

from __future__ import annotations

from django_q.tasks import async_task


def enqueue_bulk_job(job_id: int) -> None:
    """Hand a job (or the rest of it) to the task queue."""
    from handles.desk import services

    services.bulk_jobs_mark_enqueued([job_id])
    async_task("handles.desk.tasks.run_bulk_job", job_id, group="handle-desk-jobs", task_name=f"bulk job {job_id}")


def run_bulk_job(job_id: int) -> str:
    """One slice of a job. A long job continues in a fresh task, so no task outlives the cluster's timeout;
    running this twice at once is harmless (one task holds the job's lease, the other returns "busy")."""
    from handles.desk import services

    outcome = services.bulk_job_run_slice(job_id)
    if outcome == "continue":
        enqueue_bulk_job(job_id)
    return outcome


def resume_bulk_jobs() -> str:
    """Every minute (a django-q2 schedule): hand stalled jobs to a task again (a worker died mid-slice)."""
    from handles.desk import services

    job_ids = services.bulk_jobs_stalled()
    for job_id in job_ids:
        enqueue_bulk_job(job_id)
    return f"resumed {len(job_ids)}"
