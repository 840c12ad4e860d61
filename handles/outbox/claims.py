"""A worker takes requests: one (a task's own) or a batch (a drain), each under a lease.

A request is taken only while it is its handle's oldest unfinished one and its handle's row is locked,
so changes reach the server in the order asked and only one worker holds a handle at a time.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Min, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from handles.models import Handle, HandleRequest

RStatus = HandleRequest.Status


@dataclass(frozen=True)
class Claim:
    """A request taken by one worker, with the handle's state at the moment it was taken."""

    request_id: int
    lease_token: uuid.UUID
    op: str
    attempts: int
    handle_id: int
    full_handle: str
    prefix_id: int
    url: str  # what the server should resolve to now
    exists: bool  # whether the handle should exist on the server now
    version: int


def stamp(text: str, now: datetime) -> str:
    return f"[{now:%Y-%m-%d %H:%M:%S}] {text}" if text else ""


def with_abandoned_note(request: HandleRequest, now: datetime) -> str:
    """The request's output with its cut-off attempt on record (a crashed worker's, taken back)."""
    note = stamp(f"attempt {request.attempts} abandoned: the worker stopped before finishing", now)
    return "\n".join(filter(None, [request.server_output, note]))


def heads_of(handle_ids: Iterable[int]) -> dict[int, int]:
    """Each handle's oldest unfinished request id: the only one of its requests that may be pushed."""
    rows = (HandleRequest.objects.unfinished().filter(handle_id__in=list(handle_ids)).values("handle_id")
            .annotate(first=Min("id")).values_list("handle_id", "first"))
    return dict(rows)


def _take(request_ids: list[int], now: datetime) -> uuid.UUID:
    """Mark requests running under one new lease (the caller holds their handles' locks)."""
    token = uuid.uuid4()
    HandleRequest.objects.filter(pk__in=request_ids).update(
        status=RStatus.RUNNING, attempts=F("attempts") + 1, lease_token=token,
        lease_until=now + timedelta(seconds=settings.HANDLES_LEASE_SECONDS),
        started_at=Coalesce("started_at", Value(now)), updated_at=now,
    )
    return token


def _claim_of(request: HandleRequest, handle: Handle, token: uuid.UUID) -> Claim:
    return Claim(
        request_id=request.pk, lease_token=token, op=request.op, attempts=request.attempts + 1,
        handle_id=handle.pk, full_handle=handle.full_handle, prefix_id=handle.prefix_id,
        url=handle.resolver_target, exists=handle.exists_on_server, version=handle.version,
    )


def request_claim(request_id: int, *, now: datetime | None = None) -> Claim | str:
    """Take a request if it is due and is its handle's oldest unfinished one (per-handle order).

    Returns a Claim, or a short reason why not. The handle row lock serialises claims across workers.
    """
    with transaction.atomic():
        handle_id = HandleRequest.objects.filter(pk=request_id).values_list("handle_id", flat=True).first()
        if handle_id is None:
            return "missing"
        handle = Handle.objects.select_for_update(of=("self",)).select_related("prefix").get(pk=handle_id)
        now = now or timezone.now()  # after the lock: a claim waiting on it starts when the lock is ours
        request = HandleRequest.objects.get(pk=request_id)
        if request.finished:
            return "finished"
        if request.status == RStatus.RUNNING and request.lease_until and request.lease_until > now:
            return "running"
        if request.status == RStatus.QUEUED and request.next_attempt_at and request.next_attempt_at > now:
            return "not due"
        if request.status == RStatus.QUEUED and handle.prefix.auth_failing:
            return "paused"
        if heads_of([handle_id]).get(handle_id) != request.pk:
            return "waiting"
        if request.status == RStatus.RUNNING:  # its lease ran out: the worker that held it stopped
            HandleRequest.objects.filter(pk=request.pk).update(server_output=with_abandoned_note(request, now))
        return _claim_of(request, handle, _take([request.pk], now))


def requests_claim_batch(limit: int, *, now: datetime | None = None, among: list[int] | None = None) -> list[Claim]:
    """Take up to `limit` due head requests of different handles in one transaction, oldest first.

    Handles another transaction holds (a worker claiming or finishing, a change being recorded) are
    skipped, so two workers never take the same handle and neither waits. Only the oldest due requests
    are looked at: a handle's head is found per candidate handle, which stays cheap however the planner
    guesses (a NOT EXISTS over the whole queue became a quadratic join on a fresh table).
    `among`: only these requests (a task's own list)."""
    with transaction.atomic():
        given_now = now
        now = now or timezone.now()
        due = HandleRequest.objects.due(now)
        if among is not None:
            due = due.filter(pk__in=among)
        oldest = list(due.order_by("pk").values_list("pk", "handle_id")[:4 * limit])
        heads = heads_of({handle_id for _, handle_id in oldest})
        candidates = [pk for pk, handle_id in oldest if heads.get(handle_id) == pk]
        locked = list(HandleRequest.objects.filter(pk__in=candidates).select_related("handle__prefix")
                      .select_for_update(of=("handle",), skip_locked=True).order_by("pk")[:limit])
        # The head test ran before the locks: check again now that the handles are ours.
        heads = heads_of(r.handle_id for r in locked)
        still_due = set(HandleRequest.objects.due(now).filter(pk__in=[r.pk for r in locked])
                        .values_list("pk", flat=True))
        requests = [r for r in locked if r.pk in still_due and heads.get(r.handle_id) == r.pk]
        if not requests:
            return []
        # Started now that the handles are ours: a request finished by another worker while this one was
        # looking must never seem to have been started before it (its started_at after that finish).
        token = _take([r.pk for r in requests], given_now or timezone.now())
        return [_claim_of(r, r.handle, token) for r in requests]
