"""The minute's safety net (the `sweep_requests` schedule): nothing recorded is ever left behind.

It takes back the requests of crashed workers when their lease runs out, hands out again the due requests
whose hand-over was lost (or whose backoff is over), probes paused prefixes whose probe is due, settles the
jobs whose requests have all finished and resumes stalled jobs.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Min, Q
from django.utils import timezone

from handles import jobs
from handles.labels import counted
from handles.models import HandleRequest
from handles.notify import hooks as notify_hooks
from handles.outbox import handover, pause
from handles.outbox.claims import with_abandoned_note

RStatus = HandleRequest.Status


def minute_sweep() -> str:
    """The whole round: probe the paused prefixes whose probe is due, recover crashed workers' requests and
    lost enqueues, settle the jobs whose requests have all finished, resume stalled jobs. Returns a summary."""
    for prefix_id in pause.prefixes_auth_probe_due():
        pause.probe_prefix_auth(prefix_id)
    counts = requests_sweep()
    settled = jobs.settle_all()  # the safety net for a settle missed at the end of a push (a crashed worker)
    resumed = handover.resume_stalled_jobs()
    result = f"reclaimed {counts['reclaimed']}, enqueued {counts['enqueued']}"
    result = f"{result}, settled {counted(settled, 'job')}" if settled else result
    return f"{result}, resumed {counted(resumed, 'job')}" if resumed else result


def requests_sweep(*, now: datetime | None = None, limit: int = 5000) -> dict[str, int]:
    """Take back requests of crashed workers and hand every due request that heads its handle's queue to
    the task queue again (lost enqueues, retry times)."""
    now = now or timezone.now()
    reclaimed = 0
    for request_id in HandleRequest.objects.lease_expired(now).values_list("pk", flat=True)[:limit]:
        with transaction.atomic():
            request = HandleRequest.objects.select_for_update().get(pk=request_id)
            if request.status != RStatus.RUNNING or not request.lease_until or request.lease_until >= now:
                continue
            request.lease_token = None
            request.lease_until = None
            request.server_output = with_abandoned_note(request, now)
            if request.attempts >= request.max_attempts:
                request.status = RStatus.ERROR
                request.finished_at = now
                request.error = f"Gave up after {counted(request.attempts, 'attempt')}: the worker stopped each time."
                notify_hooks.requests_failed([request])
            else:
                request.status = RStatus.QUEUED
                request.next_attempt_at = None  # due at once
                request.enqueued_at = None  # so the hand-out below sends it now, not REENQUEUE_AFTER later
            request.save()
            reclaimed += 1

    stale = now - timedelta(seconds=settings.HANDLES_REENQUEUE_AFTER_SECONDS)
    heads = (HandleRequest.objects.unfinished().values("handle_id").annotate(first=Min("id"))
             .values_list("first", flat=True))
    not_handed_out = Q(enqueued_at__isnull=True)
    if handover.broker_backlog() == 0:
        # Tasks still waiting in the broker drain due requests when they run, so only an empty broker says
        # that a request handed out long ago (or one whose backoff is over) has no task coming for it.
        # Without this, a backlog older than HANDLES_REENQUEUE_AFTER_SECONDS would be handed out twice.
        not_handed_out |= Q(enqueued_at__lt=stale) | Q(enqueued_at__lt=F("next_attempt_at"))
    due = (HandleRequest.objects.due(now).filter(pk__in=heads).filter(not_handed_out)
           .order_by("pk").values_list("pk", flat=True)[:limit])
    # The sweep is one task: it hands out for at most a quarter of HANDLES_TASK_TIMEOUT, the rest next minute.
    # Handing out thousands one by one (a backlog after a server outage; SQLite) outlasted a 10 s timeout, the
    # cluster killed the sweep every minute, and the job resume and settle after it never ran.
    hand_out_until = time.monotonic() + settings.HANDLES_TASK_TIMEOUT / 4
    enqueued = 0
    for request_id in due:
        handover.enqueue_request(request_id)
        enqueued += 1
        if time.monotonic() >= hand_out_until:
            break
    return {"reclaimed": reclaimed, "enqueued": enqueued}
