"""What the worker learns of a prefix's server: when it last answered, and whether it takes our credentials.

A 401/402 means the server refuses our credentials for now (it is shutting down, its admin handle is being
restored, the secret was rotated): no request is spent or ended for it. The prefix's queue pauses, a probe
checks the credentials with backoff (`probe_prefix_auth`, run by the task of that name and by the minute
sweep), and the queue resumes when they work. prefix_auth_failed and prefix_auth_recovered are the two
transitions: hook notifications there.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import transaction
from django.db.models import Min, Q
from django.utils import timezone

from handles.handle_server.client import HandleServerError, client_for
from handles.models import HandleRequest, Prefix
from handles.notify import hooks as notify_hooks
from handles.outbox import handover


def prefix_record_contact(*, prefix_id: int, ok: bool, error: str = "", now: datetime | None = None) -> None:
    """Remember the last contact with a prefix's server for the dashboard. Written at most every few
    seconds per prefix, so many workers do not queue up on one row; skipped while another transaction
    holds the row (an import locks its prefix for its whole run), so a worker never waits for it."""
    now = now or timezone.now()
    recent = now - timedelta(seconds=5)
    with transaction.atomic():
        stale = Prefix.objects.select_for_update(skip_locked=True).filter(pk=prefix_id).filter(
            Q(last_contact_at__isnull=True) | Q(last_contact_at__lt=recent) | ~Q(last_contact_ok=ok))
        Prefix.objects.filter(pk__in=stale.values("pk")).update(
            last_contact_at=now, last_contact_ok=ok, last_contact_error=error[:2000])


def _probe_delay(failed_probes: int) -> timedelta:
    seconds = settings.HANDLES_AUTH_PROBE_BASE_SECONDS * (2 ** failed_probes)
    return timedelta(seconds=min(seconds, settings.HANDLES_AUTH_PROBE_MAX_SECONDS))


def prefix_auth_failed(*, prefix_id: int, error: str, now: datetime | None = None) -> bool:
    """The server refused the prefix's credentials: pause its queue and schedule a probe. Returns True if
    this call started the pause (many workers may report the same refusal; one starts it)."""
    now = now or timezone.now()
    probe_at = now + _probe_delay(0)
    with transaction.atomic():
        started = Prefix.objects.filter(pk=prefix_id, auth_failing_since__isnull=True).update(
            auth_failing_since=now, auth_error=error[:2000], auth_probes=0, auth_probe_at=probe_at)
        if started:
            transaction.on_commit(partial(handover.schedule_auth_probe, prefix_id, probe_at))
            notify_hooks.prefix_auth_failed(prefix_id=prefix_id, error=error)
    return bool(started)


def prefix_auth_probe_claim(*, prefix_id: int, now: datetime | None = None) -> bool:
    """Take the prefix's due probe: its next time moves past the probe's longest run, so a second probe
    (the schedule and the sweep may both fire) finds it not due and schedules nothing."""
    now = now or timezone.now()
    busy_until = now + timedelta(seconds=2 * settings.HANDLES_SERVER_TIMEOUT)
    return bool(Prefix.objects.filter(pk=prefix_id, auth_failing_since__isnull=False, auth_probe_at__lte=now)
                .update(auth_probe_at=busy_until))


def prefix_auth_probe_failed(*, prefix_id: int, error: str, now: datetime | None = None) -> None:
    """A probe was refused too (or could not reach the server): probe again later, waiting twice as long."""
    now = now or timezone.now()
    with transaction.atomic():
        prefix = Prefix.objects.select_for_update().filter(pk=prefix_id, auth_failing_since__isnull=False).first()
        if prefix is None:
            return
        prefix.auth_probes += 1
        prefix.auth_error = error[:2000]
        prefix.auth_probe_at = now + _probe_delay(prefix.auth_probes)
        prefix.save(update_fields=["auth_probes", "auth_error", "auth_probe_at", "updated_at"])
        transaction.on_commit(partial(handover.schedule_auth_probe, prefix_id, prefix.auth_probe_at))


def prefix_auth_recovered(*, prefix_id: int) -> bool:
    """The credentials work again: end the pause and hand the prefix's waiting requests to the queue.
    Returns True if this call ended a pause."""
    with transaction.atomic():
        ended = Prefix.objects.filter(pk=prefix_id, auth_failing_since__isnull=False).update(
            auth_failing_since=None, auth_error="", auth_probes=0, auth_probe_at=None)
        if ended:
            heads = (HandleRequest.objects.unfinished().filter(handle__prefix_id=prefix_id).values("handle_id")
                     .annotate(first=Min("id")).values_list("first", flat=True))
            ids = list(HandleRequest.objects.due().filter(pk__in=heads).order_by("pk").values_list("pk", flat=True))
            transaction.on_commit(partial(handover.enqueue_request_ids, ids))
            notify_hooks.prefix_auth_recovered(prefix_id=prefix_id)
    return bool(ended)


def prefixes_auth_probe_due(*, now: datetime | None = None) -> list[int]:
    """Paused prefixes whose probe time has come (the sweep's safety net for a lost probe schedule)."""
    return list(Prefix.objects.filter(auth_failing_since__isnull=False, auth_probe_at__lte=now or timezone.now())
                .values_list("pk", flat=True))


def probe_prefix_auth(prefix_id: int) -> str:
    """Check a paused prefix's credentials without writing (client.authenticate); resume its queue if they
    work, else probe again later with backoff."""
    prefix = Prefix.objects.filter(pk=prefix_id).first()
    if prefix is None or not prefix.auth_failing:
        return "not paused"
    if not prefix_auth_probe_claim(prefix_id=prefix_id):
        return "not due"  # another probe runs, or ran and set the next time (a schedule and the sweep)
    try:
        client_for(prefix.server_config()).authenticate()
    except HandleServerError as exc:
        prefix_auth_probe_failed(prefix_id=prefix_id, error=str(exc))
        return f"still failing: {exc}"
    prefix_auth_recovered(prefix_id=prefix_id)
    return "recovered"
