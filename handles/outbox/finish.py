"""Recording what a push achieved: success (read back), a retry with backoff, an error, or a pause.

A result counts only while its claim's lease holds: a worker the sweep took a request back from records
nothing. A finished request hands its handle's next one to the queue as the transaction commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from handles.dbwrites import update_rows
from handles.labels import counted
from handles.models import Handle, HandleRequest
from handles.notify import hooks as notify_hooks
from handles.outbox import handover
from handles.outbox.claims import Claim, heads_of, stamp

RStatus = HandleRequest.Status
HStatus = Handle.Status


@dataclass(frozen=True)
class Outcome:
    kind: str  # "success" | "transient" | "permanent" | "auth" (credentials refused: the prefix pauses)
    output: str = ""
    server_error: str = ""
    error: str = ""
    pushed: bool = True  # False: nothing was sent (superseded by a later change)


def backoff(attempts: int) -> timedelta:
    seconds = settings.HANDLES_BACKOFF_BASE_SECONDS * (2 ** max(0, attempts - 1))
    return timedelta(seconds=min(seconds, settings.HANDLES_BACKOFF_MAX_SECONDS))


_FINISH_FIELDS = ["server_output", "lease_token", "lease_until", "status", "updated_at", "finished_at", "error",
                  "server_error", "pushed_version", "next_attempt_at"]
_SYNC_FIELDS = ["synced_version", "synced_at", "status"]


def _apply_outcome(request: HandleRequest, handle: Handle, claim: Claim, outcome: Outcome | None,
                   now: datetime) -> bool:
    """Set on `request` (and `handle`) what the outcome means; the caller saves _FINISH_FIELDS and, when
    this returns True, the handle's _SYNC_FIELDS. No outcome: the push was never tried, the request goes
    back to the queue without spending the attempt."""
    request.lease_token = None
    request.lease_until = None
    request.updated_at = now
    if outcome is None:
        request.status = RStatus.QUEUED
        request.attempts -= 1
        request.next_attempt_at = now + backoff(1)  # past enqueued_at, so the sweep hands it over when due
        return False
    request.server_output = "\n".join(filter(None, [request.server_output, stamp(outcome.output, now)]))
    if outcome.kind == "success":
        request.status = RStatus.SUCCESS
        request.finished_at = now
        request.error = ""
        request.server_error = ""
        if outcome.pushed:
            request.pushed_version = claim.version
            if claim.version >= handle.synced_version:
                handle.synced_version = claim.version
                handle.synced_at = now
                if handle.status == HStatus.PENDING and claim.exists:
                    handle.status = HStatus.ACTIVE
                return True
    elif outcome.kind == "auth":
        # Not this request's failure: it waits for its prefix's probe, its attempt not spent.
        request.status = RStatus.QUEUED
        request.attempts -= 1
        request.next_attempt_at = None
        request.error = f"Waiting: {outcome.error}"
        request.server_error = outcome.server_error
    elif outcome.kind == "transient" and request.attempts < request.max_attempts:
        request.status = RStatus.QUEUED
        request.next_attempt_at = now + backoff(request.attempts)
        request.error = outcome.error
        request.server_error = outcome.server_error
    else:
        request.status = RStatus.ERROR
        request.finished_at = now
        request.error = outcome.error
        if outcome.kind == "transient":
            request.error = f"Gave up after {counted(request.attempts, 'attempt')}. Last error: {outcome.error}"
        request.server_error = outcome.server_error
    return False


def hand_over_next(handle_ids: list[int]) -> None:
    """As finished requests commit, hand each handle's next unfinished request to the queue."""
    for request_id in sorted(heads_of(handle_ids).values()):
        handover.enqueue_request_on_commit(request_id)


def request_finish(claim: Claim, outcome: Outcome, *, now: datetime | None = None) -> HandleRequest | None:
    """Record what a push achieved. Ignored if the lease was lost (another worker took the request over)."""
    finished = requests_finish_batch([(claim, outcome)], now=now)
    return finished[0] if finished else None


def requests_finish_batch(results: list[tuple[Claim, Outcome | None]], *,
                          now: datetime | None = None) -> list[HandleRequest]:
    """Record what a batch of pushes achieved, in one transaction. A result whose lease was lost (the
    sweep took the request back) is ignored; an outcome of None gives a claim back unpushed.
    Returns the requests recorded."""
    if not results:
        return []
    with transaction.atomic():
        handles = {h.pk: h for h in Handle.objects.select_for_update().filter(
            pk__in=sorted({claim.handle_id for claim, _ in results})).order_by("pk")}
        now = now or timezone.now()
        requests = HandleRequest.objects.select_for_update().in_bulk([claim.request_id for claim, _ in results])
        recorded, synced = [], []
        for claim, outcome in results:
            request = requests[claim.request_id]
            if request.status != RStatus.RUNNING or request.lease_token != claim.lease_token:
                continue
            handle = handles[claim.handle_id]
            if _apply_outcome(request, handle, claim, outcome, now):
                synced.append(handle)
            recorded.append(request)
        update_rows(recorded, [*_FINISH_FIELDS, "attempts"])
        update_rows(synced, _SYNC_FIELDS)
        hand_over_next([r.handle_id for r in recorded if r.finished])
        notify_hooks.requests_failed(recorded)
        return recorded
