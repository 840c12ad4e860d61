"""Staff's say over requests: a failed one gets a fresh set of attempts, a queued one can be given up."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from functools import partial

from django.conf import settings
from django.db import transaction
from django.db.models import F, TextField, Value
from django.db.models.functions import Concat
from django.utils import timezone

from handles.dbwrites import chunks, update_rows
from handles.exceptions import HandleStateError
from handles.models import HandleRequest
from handles.outbox import handover
from handles.outbox.claims import stamp
from handles.outbox.finish import hand_over_next
from handles.services.common import RStatus, User, user_of


def _retried_note(actor: User, now: datetime) -> str:
    who = getattr(user_of(actor), "get_username", lambda: "system")()
    return f"\n[{now:%Y-%m-%d %H:%M:%S}] retried by {who}"


@transaction.atomic
def request_retry(*, request: HandleRequest, actor: User = None) -> HandleRequest:
    """Give a failed request a fresh set of attempts. Safe: a push always sends the current state."""
    request = HandleRequest.objects.select_for_update().get(pk=request.pk)
    if request.status != RStatus.ERROR:
        raise HandleStateError(f"Request #{request.pk} is {request.status}; only failed requests are retried.")
    request.status = RStatus.QUEUED
    request.max_attempts = request.attempts + settings.HANDLES_MAX_ATTEMPTS
    request.next_attempt_at = None
    request.finished_at = None
    request.server_output += _retried_note(actor, timezone.now())
    request.save(update_fields=["status", "max_attempts", "next_attempt_at", "finished_at", "server_output",
                                "updated_at"])
    handover.enqueue_request_on_commit(request.pk)
    return request


def requests_retry_bulk(*, request_ids: Iterable[int], actor: User = None) -> int:
    """request_retry for many requests (the failed requests of a job): each failed one among them gets a
    fresh set of attempts and a note in its output, and is handed to the queue after commit. Others are
    left alone. A chunk per transaction (savepoints inside a caller's transaction). Returns how many."""
    retried = 0
    now = timezone.now()
    note = _retried_note(actor, now)
    for chunk in chunks(sorted(set(request_ids))):
        with transaction.atomic():
            failed = list(HandleRequest.objects.select_for_update().filter(pk__in=chunk, status=RStatus.ERROR)
                          .order_by("pk").values_list("pk", flat=True))
            HandleRequest.objects.filter(pk__in=failed).update(
                status=RStatus.QUEUED, max_attempts=F("attempts") + settings.HANDLES_MAX_ATTEMPTS,
                next_attempt_at=None, finished_at=None, updated_at=now,
                server_output=Concat("server_output", Value(note), output_field=TextField()))
            if failed:
                transaction.on_commit(partial(handover.enqueue_request_ids, failed))
        retried += len(failed)
    return retried



def requests_cancel(*, request_ids: Iterable[int], actor: User = None, now: datetime | None = None) -> int:
    """Staff give up on queued requests (e.g. while their prefix's authentication fails): they end in
    error, never pushed by this request, and can be retried later like any failed request. Running ones
    are left to finish. Returns how many were cancelled."""
    now = now or timezone.now()
    who = getattr(user_of(actor), "username", "") or "staff"
    with transaction.atomic():
        requests = list(HandleRequest.objects.select_for_update().filter(
            pk__in=list(request_ids), status=RStatus.QUEUED).order_by("pk"))
        for request in requests:
            request.status = RStatus.ERROR
            request.finished_at = now
            request.updated_at = now
            request.error = f"Cancelled by {who} before it reached the server." + (
                f" Last error: {request.error}" if request.error else "")
            request.server_output = "\n".join(filter(None, [request.server_output,
                                                            stamp(f"cancelled by {who}", now)]))
        update_rows(requests, ["status", "finished_at", "updated_at", "error", "server_output"])
        hand_over_next([r.handle_id for r in requests])
    return len(requests)

