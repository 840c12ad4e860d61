"""django-q2 task functions: thin. Each takes ids and calls the outbox (or the jobs), returning a short status.

Queued tasks and schedules name these functions by their dotted path (`handles.tasks.push_request`, ...), so
the names stay here for good; the work is done in `handles.outbox`. Handing work to the queue is the outbox's
`handover` module; its functions are also importable from here for the apps that call them.
"""

from __future__ import annotations

from handles import jobs
from handles.outbox import drain, handover, pause, sweep
from handles.outbox.handover import (  # re-exported: other apps hand work over through handles.tasks
    broker_backlog,
    enqueue_job_slice,
    enqueue_request,
    enqueue_request_batches,
    enqueue_request_ids,
    enqueue_request_on_commit,
    queue_in_our_database,
    resume_stalled_jobs,
    schedule_auth_probe,
)

__all__ = [
    "broker_backlog", "enqueue_job_slice", "enqueue_request", "enqueue_request_batches", "enqueue_request_ids",
    "enqueue_request_on_commit", "hand_over_requests", "probe_prefix_auth", "push_request", "push_requests",
    "queue_in_our_database", "resume_stalled_jobs", "run_job_slice", "schedule_auth_probe", "sweep_requests",
]


def push_request(request_id: int) -> str:
    """Push one request, then drain other due ones for up to HANDLES_DRAIN_SECONDS (handles.outbox.drain)."""
    return drain.push_request(request_id)


def push_requests(request_ids: list[int]) -> str:
    """Push a bulk mint's list of requests in batches, then drain (handles.outbox.drain)."""
    return drain.push_requests(request_ids)


def hand_over_requests(request_ids: list[int]) -> str:
    """Hand thousands of requests to the queue one by one, within this task's time (handles.outbox.handover)."""
    return handover.hand_over(request_ids)


def probe_prefix_auth(prefix_id: int) -> str:
    """Check a paused prefix's credentials; resume its queue if they work (handles.outbox.pause)."""
    return pause.probe_prefix_auth(prefix_id)


def sweep_requests() -> str:
    """Every minute (a django-q2 schedule): the outbox's safety net (handles.outbox.sweep)."""
    return sweep.minute_sweep()


def run_job_slice(kind: str, job_id: int) -> str:
    """One slice of a long job; while work remains, the rest goes to a fresh task, so no task outlives the
    cluster's timeout. Running this twice at once is harmless: one task holds the job's lease."""
    outcome = jobs.run_slice(jobs.runner(kind), job_id)
    if outcome == jobs.CONTINUE:
        handover.enqueue_job_slice(kind, job_id)
    return outcome
