"""django-q2 tasks of the desk: thin, they take ids and call handles.desk.services.

Services are imported inside the functions, because services import this module.
"""

from __future__ import annotations


def enqueue_bulk_job(job_id: int) -> None:
    """Hand a job (or the rest of it) to the task queue: its slices run as handles.tasks.run_job_slice."""
    from handles import tasks

    tasks.enqueue_job_slice("bulk", job_id)


def run_bulk_job(job_id: int) -> str:
    """Kept for slices a broker still holds from before every kind of job ran through handles.jobs."""
    from handles import tasks

    return tasks.run_job_slice("bulk", job_id)


def resume_bulk_jobs() -> str:
    """Every minute (a django-q2 schedule): hand stalled bulk jobs to a task again (the core sweep resumes
    every other kind)."""
    from handles import tasks

    return f"resumed {tasks.resume_stalled_jobs(['bulk'])}"
