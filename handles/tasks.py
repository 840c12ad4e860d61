"""django-q2 task functions: thin. They take ids, call services and the push, and return a short status.

This is the one module that hands work to the broker (`async_task`). Services are imported inside the
functions, because services import this module.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django_q.conf import Conf
from django_q.tasks import async_task

from handles import jobs
from handles.labels import counted

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from handles import services


HANDOVER_CHUNK = 2000
PUSH_LIST_SIZE = 500  # requests per push_requests task
SETTLE_AFTER_DRAIN_SECONDS = 5  # a drain at least this long ends with a settle even while the queue is busy


def enqueue_request(request_id: int) -> None:
    """Hand a request to the task queue. Called after the transaction that recorded it commits."""
    from handles import services

    services.requests_mark_enqueued([request_id])
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
    from handles import services

    for start in range(0, len(request_ids), PUSH_LIST_SIZE):
        chunk = request_ids[start:start + PUSH_LIST_SIZE]
        services.requests_mark_enqueued(chunk)
        async_task("handles.tasks.push_requests", chunk, group="handle-requests",
                   task_name=f"push {len(chunk)} requests from #{chunk[0]}")


def hand_over_requests(request_ids: list[int]) -> str:
    """One task per request, for at most a quarter of HANDLES_TASK_TIMEOUT; the rest to a new task. (2,000 one
    by one on SQLite outlasted a 10 s timeout: the cluster killed the task and the rest waited for the sweep.)"""
    until = time.monotonic() + settings.HANDLES_TASK_TIMEOUT / 4
    for handed, request_id in enumerate(request_ids, start=1):
        enqueue_request(request_id)
        if time.monotonic() >= until and handed < len(request_ids):
            enqueue_request_ids(request_ids[handed:])
            return f"handed over {handed}, {len(request_ids) - handed} to a new task"
    return f"handed over {len(request_ids)}"


def push_request(request_id: int) -> str:
    """Push one request to the Handle server, then, for up to HANDLES_DRAIN_SECONDS, other due requests
    in batches: one hand-over then carries many pushes. Safe to run twice: the claims admit one worker
    at a time, per handle in request order, and a finished request is skipped."""
    from handles import services

    claimed_at = time.monotonic()
    # The cluster kills a task at HANDLES_TASK_TIMEOUT: no push may start that could outlast it.
    task_ends = claimed_at + settings.HANDLES_TASK_TIMEOUT - 3 * settings.HANDLES_SERVER_TIMEOUT
    claim = services.request_claim(request_id)
    if isinstance(claim, str):
        result = claim
    else:
        (kind,) = _push_batch([claim], claimed_at, task_ends)
        result = kind or "lease lost"
    drained, stopped = 0, "trouble"
    if result not in ("transient", "auth"):  # after a failure the rest wait for their backoff and the sweep
        drained, stopped = _drain(time.monotonic() + settings.HANDLES_DRAIN_SECONDS, task_ends)
    if drained:
        result = f"{result}; drained {drained}"
    # Settle verifying jobs when nothing is left to push (a job whose last request this was is done now, not
    # at the next sweep), and after a drain that ran its whole (long) time, so that a big job's "verified x
    # of y" moves while it runs. Not after each request of a busy queue: a settle counts a job's requests.
    long_drain = stopped == "time" and settings.HANDLES_DRAIN_SECONDS >= SETTLE_AFTER_DRAIN_SECONDS
    if stopped == "idle" or long_drain or not _anything_due():
        if settled := jobs.settle_all():
            result = f"{result}; settled {counted(settled, 'job')}"
    return result


def push_requests(request_ids: list[int]) -> str:
    """Push a list of requests in batches (claims as in a drain, limited to the list: per-handle order,
    leases and read-back as ever), for up to HANDLES_DRAIN_SECONDS; then drain other due requests and settle,
    as push_request does. Those of the list it did not take (the time was up, the server in trouble, a
    handle locked or waiting on an earlier request) are handed out one by one, as without the list."""
    from handles import services
    from handles.models import HandleRequest

    deadline = time.monotonic() + settings.HANDLES_DRAIN_SECONDS
    task_ends = time.monotonic() + settings.HANDLES_TASK_TIMEOUT - 3 * settings.HANDLES_SERVER_TIMEOUT
    pushed, trouble = 0, False
    for start in range(0, len(request_ids), settings.HANDLES_DRAIN_BATCH):
        if start and time.monotonic() >= deadline:  # the first batch goes in any case, as push_request's own
            break
        chunk = request_ids[start:start + settings.HANDLES_DRAIN_BATCH]
        claimed_at = time.monotonic()
        claims = services.requests_claim_batch(len(chunk), among=chunk)
        kinds = _push_batch(claims, claimed_at, task_ends) if claims else []
        pushed += sum(kind is not None for kind in kinds)
        if "transient" in kinds or None in kinds:
            trouble = True
            break
    left = list(HandleRequest.objects.due().filter(pk__in=request_ids).order_by("pk").values_list("pk", flat=True))
    for request_id in left:
        enqueue_request(request_id)
    result = f"pushed {pushed} of {len(request_ids)}" + (f"; handed out {len(left)}" if left else "")
    stopped = "trouble"
    if not trouble:
        drained, stopped = _drain(deadline, task_ends)
        if drained:
            result = f"{result}; drained {drained}"
    if stopped == "idle" or not _anything_due():
        if settled := jobs.settle_all():
            result = f"{result}; settled {settled} job(s)"
    return result


def _anything_due() -> bool:
    from handles.models import HandleRequest

    return HandleRequest.objects.due().exists()


def _drain(deadline: float, task_ends: float) -> tuple[int, str]:
    """Push batches of due requests until none is left, the time is up, or the server is in trouble.
    Returns how many were pushed, and why it stopped: "idle", "time" or "trouble"."""
    from handles import services

    pushed = 0
    while time.monotonic() < deadline:
        claimed_at = time.monotonic()
        claims = services.requests_claim_batch(settings.HANDLES_DRAIN_BATCH)
        if not claims:
            return pushed, "idle"
        kinds = _push_batch(claims, claimed_at, task_ends)
        pushed += sum(kind is not None for kind in kinds)
        if "transient" in kinds or "auth" in kinds or None in kinds:
            return pushed, "trouble"  # backoff and the sweep take it from here
    return pushed, "time"


def _push_batch(claims: list[services.Claim], claimed_at: float, task_ends: float) -> list[str | None]:
    """Push claimed requests one after another (no transaction open) and record them in one transaction.
    Once a push fails transiently, or the lease or the task (HANDLES_TASK_TIMEOUT) has no room left for a
    slowest push (3 calls that each time out), the rest go back to the queue unpushed: the sweep must never take back a request whose
    push is still running. Returns each claim's outcome kind; None for one not pushed or whose lease
    was lost."""
    from handles import services
    from handles.handle_server.client import client_for
    from handles.models import Prefix
    from handles.push import push

    prefixes = Prefix.objects.in_bulk({claim.prefix_id for claim in claims})
    clients = {pk: client_for(prefix.server_config()) for pk, prefix in prefixes.items()}
    give_back_at = min(claimed_at + settings.HANDLES_LEASE_SECONDS - 3 * settings.HANDLES_SERVER_TIMEOUT, task_ends)
    results: list[tuple[services.Claim, services.Outcome | None]] = []
    troubled = False
    for claim in claims:
        outcome = None
        if not results or (not troubled and time.monotonic() < give_back_at):  # the first fits, as alone
            outcome = push(claim, prefixes[claim.prefix_id], clients[claim.prefix_id])
            troubled = outcome.kind in ("transient", "auth")
        results.append((claim, outcome))
    recorded = {request.pk for request in services.requests_finish_batch(results)}
    for claim, outcome in results:
        if outcome is not None and outcome.kind == "auth":
            services.prefix_auth_failed(prefix_id=claim.prefix_id, error=outcome.error)
    # Only transient failures (outage, timeout, 5xx) say the server is unreachable.
    for prefix_id in prefixes:
        outcomes = [o for c, o in results if o is not None and c.prefix_id == prefix_id]
        if outcomes:
            errors = [o.error for o in outcomes if o.kind == "transient"]
            services.prefix_record_contact(prefix_id=prefix_id, ok=not errors, error=errors[0] if errors else "")
    return [outcome.kind if outcome and claim.request_id in recorded else None for claim, outcome in results]


def schedule_auth_probe(prefix_id: int, at: datetime) -> None:
    """Run probe_prefix_auth for a prefix at `at` (a one-off django-q2 schedule: the cluster's scheduler
    looks every 30 s or so; the minute sweep probes too, should the schedule be lost)."""
    from django_q.models import Schedule

    Schedule.objects.create(func="handles.tasks.probe_prefix_auth", args=repr(prefix_id), schedule_type=Schedule.ONCE,
                            repeats=-1, next_run=at, name=f"auth probe prefix {prefix_id} {at:%Y%m%d%H%M%S%f}")


def probe_prefix_auth(prefix_id: int) -> str:
    """Check a paused prefix's credentials without writing (client.authenticate); resume its queue if they
    work, else probe again later with backoff."""
    from handles import services
    from handles.handle_server.client import HandleServerError, client_for
    from handles.models import Prefix

    prefix = Prefix.objects.filter(pk=prefix_id).first()
    if prefix is None or not prefix.auth_failing:
        return "not paused"
    if not services.prefix_auth_probe_claim(prefix_id=prefix_id):
        return "not due"  # another probe runs, or ran and set the next time (a schedule and the sweep)
    try:
        client_for(prefix.server_config()).authenticate()
    except HandleServerError as exc:
        services.prefix_auth_probe_failed(prefix_id=prefix_id, error=str(exc))
        return f"still failing: {exc}"
    services.prefix_auth_recovered(prefix_id=prefix_id)
    return "recovered"


def sweep_requests() -> str:
    """Every minute (a django-q2 schedule): recover crashed workers' requests and lost enqueues, probe
    paused prefixes whose probe is due, and settle the jobs whose requests have all finished."""
    from handles import services

    for prefix_id in services.prefixes_auth_probe_due():
        probe_prefix_auth(prefix_id)
    counts = services.requests_sweep()
    settled = jobs.settle_all()  # the safety net for a settle missed at the end of a push (a crashed worker)
    resumed = resume_stalled_jobs()
    result = f"reclaimed {counts['reclaimed']}, enqueued {counts['enqueued']}"
    result = f"{result}, settled {counted(settled, 'job')}" if settled else result
    return f"{result}, resumed {counted(resumed, 'job')}" if resumed else result


# --- Long jobs: one slice per task (handles.jobs) ------------------------------------------------------
def enqueue_job_slice(kind: str, job_id: int) -> None:
    """Hand a job's next slice (or its first) to the task queue."""
    runner = jobs.runner(kind)
    jobs.mark_enqueued(runner, [job_id])
    async_task("handles.tasks.run_job_slice", kind, job_id, group="handles-jobs",
               task_name=f"{runner.label} {job_id}")


def run_job_slice(kind: str, job_id: int) -> str:
    """One slice of a long job; while work remains, the rest goes to a fresh task, so no task outlives the
    cluster's timeout. Running this twice at once is harmless: one task holds the job's lease."""
    outcome = jobs.run_slice(jobs.runner(kind), job_id)
    if outcome == jobs.CONTINUE:
        enqueue_job_slice(kind, job_id)
    return outcome


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
