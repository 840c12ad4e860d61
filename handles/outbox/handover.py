"""Handing work to the task queue (django-q2): the one module that calls `async_task`.

A request is handed over as the transaction that records it commits, never before; the task names are the
dotted paths in `handles.tasks`, which queued tasks and schedules keep, so they never move.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime
from functools import partial

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_q.conf import Conf
from django_q.tasks import async_task

from handles import jobs
from handles.models import HandleRequest

logger = logging.getLogger(__name__)

HANDOVER_CHUNK = 2000
PUSH_LIST_SIZE = 500  # requests per push_requests task


def requests_mark_enqueued(request_ids: Sequence[int], *, now: datetime | None = None) -> None:
    HandleRequest.objects.filter(pk__in=request_ids).update(enqueued_at=now or timezone.now())


def enqueue_request(request_id: int) -> None:
    """Hand a request to the task queue. Called after the transaction that recorded it commits."""
    requests_mark_enqueued([request_id])
    _send(request_id)


def _send(request_id: int) -> None:
    async_task("handles.tasks.push_request", request_id, group="handle-requests",
               task_name=f"handle request {request_id}")


def queue_in_our_database() -> bool:
    """The ORM broker, whose queue table is in our database, with tasks run by workers (not inline)."""
    return Conf.ORM == "default" and not Conf.SYNC


def enqueue_request_on_commit(request_id: int, *, marked: bool = False) -> None:
    """Hand a request to the task queue as the transaction that records it commits (call it inside that
    transaction). With the ORM broker the task row is written in the same transaction: it commits with the
    request or not at all, and that commit is the only one (each commit waits for the disk, most of what a
    mint costs). With Redis, or with tasks run inline (tests), the hand-over runs after the commit.
    `marked`: the request was recorded with its enqueued_at already set (queue_in_our_database() said so)."""
    if not queue_in_our_database():
        transaction.on_commit(partial(enqueue_request, request_id))
    elif marked:
        _send(request_id)
    else:
        enqueue_request(request_id)


def broker_backlog() -> int:
    """How many tasks wait in the broker (Redis or the ORM queue) for a worker; 0 if it cannot say."""
    from django_q.brokers import get_broker

    try:
        return int(get_broker().queue_size() or 0)
    except Exception:  # an unreachable broker: the sweep then hands out as if the queue were empty
        logger.warning("could not read the task queue's size", exc_info=True)
        return 0


def enqueue_request_ids(request_ids: list[int]) -> None:
    """Hand thousands of requests to the queue without making the caller wait for each: one background
    task per chunk does the per-request hand-over (an import, a repair, a retry of a whole job)."""
    for start in range(0, len(request_ids), HANDOVER_CHUNK):
        chunk = request_ids[start:start + HANDOVER_CHUNK]
        async_task("handles.tasks.hand_over_requests", chunk, group="handle-requests",
                   task_name=f"hand over {len(chunk)} requests from #{chunk[0]}")


def enqueue_request_batches(request_ids: list[int]) -> None:
    """Hand many new requests to the queue at once (a bulk mint): one task per PUSH_LIST_SIZE requests, which
    pushes them in batches (push_requests), instead of one task per request whose runs would mostly find
    their request already pushed by another task's drain. Called after the transaction that recorded them."""
    for start in range(0, len(request_ids), PUSH_LIST_SIZE):
        chunk = request_ids[start:start + PUSH_LIST_SIZE]
        requests_mark_enqueued(chunk)
        async_task("handles.tasks.push_requests", chunk, group="handle-requests",
                   task_name=f"push {len(chunk)} requests from #{chunk[0]}")


def hand_over(request_ids: list[int]) -> str:
    """One task per request, for at most a quarter of HANDLES_TASK_TIMEOUT; the rest to a new task. (2,000 one
    by one on SQLite outlasted a 10 s timeout: the cluster killed the task and the rest waited for the sweep.)"""
    until = time.monotonic() + settings.HANDLES_TASK_TIMEOUT / 4
    for handed, request_id in enumerate(request_ids, start=1):
        enqueue_request(request_id)
        if time.monotonic() >= until and handed < len(request_ids):
            enqueue_request_ids(request_ids[handed:])
            return f"handed over {handed}, {len(request_ids) - handed} to a new task"
    return f"handed over {len(request_ids)}"


def schedule_auth_probe(prefix_id: int, at: datetime) -> None:
    """Run probe_prefix_auth for a prefix at `at` (a one-off django-q2 schedule: the cluster's scheduler
    looks every 30 s or so; the minute sweep probes too, should the schedule be lost)."""
    from django_q.models import Schedule

    Schedule.objects.create(func="handles.tasks.probe_prefix_auth", args=repr(prefix_id), schedule_type=Schedule.ONCE,
                            repeats=-1, next_run=at, name=f"auth probe prefix {prefix_id} {at:%Y%m%d%H%M%S%f}")


# --- Long jobs: one slice per task (handles.jobs) ------------------------------------------------------
def enqueue_job_slice(kind: str, job_id: int) -> None:
    """Hand a job's next slice (or its first) to the task queue."""
    runner = jobs.runner(kind)
    jobs.mark_enqueued(runner, [job_id])
    async_task("handles.tasks.run_job_slice", kind, job_id, group="handles-jobs",
               task_name=f"{runner.label} {job_id}")


def resume_stalled_jobs(kinds: list[str] | None = None) -> int:
    """From the minute sweep: hand each stalled job (a dead worker, a slice killed at the timeout, a lost
    task) to a new task, which resumes it where it stopped."""
    resumed = 0
    for runner in jobs.runners():
        if kinds is not None and runner.name not in kinds:
            continue
        for job_id in jobs.stalled(runner):
            enqueue_job_slice(runner.name, job_id)
            resumed += 1
    return resumed
