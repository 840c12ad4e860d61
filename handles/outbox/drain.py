"""What a queue task does with the worker's time: push its own request (or list), then drain.

A drain claims due requests in batches (one transaction), pushes them one after another with no transaction
open, and records every outcome in one transaction, for up to HANDLES_DRAIN_SECONDS: one hand-over then
carries many pushes. No push starts that its lease or the task's timeout (HANDLES_TASK_TIMEOUT) could not
hold; after a transient failure the rest go back and backoff and the sweep pace the retries. A drain ends by
settling the verifying jobs when nothing is left to push.
"""

from __future__ import annotations

import time

from django.conf import settings

from handles import jobs
from handles.handle_server.client import client_for
from handles.labels import counted
from handles.models import HandleRequest, Prefix
from handles.outbox import handover, pause
from handles.outbox.claims import Claim, request_claim, requests_claim_batch
from handles.outbox.finish import Outcome, requests_finish_batch
from handles.outbox.push import push

SETTLE_AFTER_DRAIN_SECONDS = 5  # a drain at least this long ends with a settle even while the queue is busy


def _task_ends() -> float:
    """The cluster kills a task at HANDLES_TASK_TIMEOUT: no push may start that could outlast it."""
    return time.monotonic() + settings.HANDLES_TASK_TIMEOUT - 3 * settings.HANDLES_SERVER_TIMEOUT


def push_request(request_id: int) -> str:
    """Push one request to the Handle server, then, for up to HANDLES_DRAIN_SECONDS, other due requests
    in batches. Safe to run twice: the claims admit one worker at a time, per handle in request order, and
    a finished request is skipped. Returns a short status."""
    claimed_at = time.monotonic()
    task_ends = _task_ends()
    claim = request_claim(request_id)
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
    return _settled_if(stopped == "idle" or long_drain, result)


def push_requests(request_ids: list[int]) -> str:
    """Push a list of requests in batches (claims as in a drain, limited to the list: per-handle order,
    leases and read-back as ever), for up to HANDLES_DRAIN_SECONDS; then drain other due requests and settle,
    as push_request does. Those of the list it did not take (the time was up, the server in trouble, a
    handle locked or waiting on an earlier request) are handed out one by one, as without the list."""
    deadline = time.monotonic() + settings.HANDLES_DRAIN_SECONDS
    task_ends = _task_ends()
    pushed, trouble = 0, False
    for start in range(0, len(request_ids), settings.HANDLES_DRAIN_BATCH):
        if start and time.monotonic() >= deadline:  # the first batch goes in any case, as push_request's own
            break
        chunk = request_ids[start:start + settings.HANDLES_DRAIN_BATCH]
        claimed_at = time.monotonic()
        claims = requests_claim_batch(len(chunk), among=chunk)
        kinds = _push_batch(claims, claimed_at, task_ends) if claims else []
        pushed += sum(kind is not None for kind in kinds)
        if "transient" in kinds or None in kinds:
            trouble = True
            break
    left = list(HandleRequest.objects.due().filter(pk__in=request_ids).order_by("pk").values_list("pk", flat=True))
    for request_id in left:
        handover.enqueue_request(request_id)
    result = f"pushed {pushed} of {len(request_ids)}" + (f"; handed out {len(left)}" if left else "")
    stopped = "trouble"
    if not trouble:
        drained, stopped = _drain(deadline, task_ends)
        if drained:
            result = f"{result}; drained {drained}"
    return _settled_if(stopped == "idle", result)


def _settled_if(idle: bool, result: str) -> str:
    """Settle the verifying jobs if the drain found nothing more to push, or nothing is due any more."""
    if idle or not HandleRequest.objects.due().exists():
        if settled := jobs.settle_all():
            result = f"{result}; settled {counted(settled, 'job')}"
    return result


def _drain(deadline: float, task_ends: float) -> tuple[int, str]:
    """Push batches of due requests until none is left, the time is up, or the server is in trouble.
    Returns how many were pushed, and why it stopped: "idle", "time" or "trouble"."""
    pushed = 0
    while time.monotonic() < deadline:
        claimed_at = time.monotonic()
        claims = requests_claim_batch(settings.HANDLES_DRAIN_BATCH)
        if not claims:
            return pushed, "idle"
        kinds = _push_batch(claims, claimed_at, task_ends)
        pushed += sum(kind is not None for kind in kinds)
        if "transient" in kinds or "auth" in kinds or None in kinds:
            return pushed, "trouble"  # backoff and the sweep take it from here
    return pushed, "time"


def _push_batch(claims: list[Claim], claimed_at: float, task_ends: float) -> list[str | None]:
    """Push claimed requests one after another (no transaction open) and record them in one transaction.
    Once a push fails transiently, or the lease or the task (HANDLES_TASK_TIMEOUT) has no room left for a
    slowest push (3 calls that each time out), the rest go back to the queue unpushed: the sweep must never
    take back a request whose push is still running. Returns each claim's outcome kind; None for one not
    pushed or whose lease was lost."""
    prefixes = Prefix.objects.in_bulk({claim.prefix_id for claim in claims})
    clients = {pk: client_for(prefix.server_config()) for pk, prefix in prefixes.items()}
    give_back_at = min(claimed_at + settings.HANDLES_LEASE_SECONDS - 3 * settings.HANDLES_SERVER_TIMEOUT, task_ends)
    results: list[tuple[Claim, Outcome | None]] = []
    troubled = False
    for claim in claims:
        outcome = None
        if not results or (not troubled and time.monotonic() < give_back_at):  # the first fits, as alone
            outcome = push(claim, prefixes[claim.prefix_id], clients[claim.prefix_id])
            troubled = outcome.kind in ("transient", "auth")
        results.append((claim, outcome))
    recorded = {request.pk for request in requests_finish_batch(results)}
    for claim, outcome in results:
        if outcome is not None and outcome.kind == "auth":
            pause.prefix_auth_failed(prefix_id=claim.prefix_id, error=outcome.error)
    # Only transient failures (outage, timeout, 5xx) say the server is unreachable.
    for prefix_id in prefixes:
        outcomes = [o for c, o in results if o is not None and c.prefix_id == prefix_id]
        if outcomes:
            errors = [o.error for o in outcomes if o.kind == "transient"]
            pause.prefix_record_contact(prefix_id=prefix_id, ok=not errors, error=errors[0] if errors else "")
    return [outcome.kind if outcome and claim.request_id in recorded else None for claim, outcome in results]
