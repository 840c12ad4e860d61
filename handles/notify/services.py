"""Every write of the notifications app, and `emit`, the one entry point the rest of the project calls.

An event becomes a Notification row after the caller's transaction commits (emit never raises and never
holds the caller back). Each matching subscriber's address and webhook endpoint then gets a Delivery, sent
by a task and retried with backoff by the minute sweep; request errors wait for their prefix's digest.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone

from handles.labels import counted
from handles.models import HandleRequest, Prefix
from handles.notify.models import (
    Condition,
    Delivery,
    DeliveryAttempt,
    Kind,
    Notification,
    Subscription,
    WatchdogRun,
    WebhookEndpoint,
)
from handles.selectors import commonest_error

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

PrefixRef = Prefix | int | str | None
DIGESTED_KINDS = {Kind.REQUEST_ERRORS}
DETAILS_LIMIT = 20_000


# --- Emitting -----------------------------------------------------------------------------------------
def emit(kind: str, *, prefix: PrefixRef = None, subject: str, details: str = "", dedupe_key: str | None = None,
         count: int = 1) -> None:
    """Record an event for the subscribers, once the caller's transaction commits (at once outside one).

    Never raises: a notification problem is logged and must not break what the caller was doing. A rolled
    back transaction records nothing (what it reported did not happen). With `dedupe_key`, an event whose
    key was already recorded within HANDLES_NOTIFY_DEDUPE_SECONDS is dropped. `count`: how many events of
    the same sort this one stands for (request errors of one batch)."""
    try:
        prefix_ref = prefix.pk if isinstance(prefix, Prefix) else prefix
        transaction.on_commit(partial(_record_safely, str(kind), prefix_ref, subject, details, dedupe_key, count),
                              robust=True)
    except Exception:
        logger.exception("could not emit the notification %r", subject)


def _record_safely(*args: Any) -> None:
    try:
        notification_record(*args)
    except Exception:
        logger.exception("could not record the notification %r", args[2] if len(args) > 2 else args)


def _prefix_id(prefix: int | str | None) -> int | None:
    if prefix is None or isinstance(prefix, int):
        return prefix
    return Prefix.objects.filter(prefix__iexact=prefix).values_list("pk", flat=True).first()


@transaction.atomic
def notification_record(kind: str, prefix: int | str | None, subject: str, details: str = "",
                        dedupe_key: str | None = None, count: int = 1) -> Notification | None:
    """Keep the event and, unless it waits for a digest, make its deliveries."""
    now = timezone.now()
    if dedupe_key:
        window = now - timedelta(seconds=settings.HANDLES_NOTIFY_DEDUPE_SECONDS)
        if Notification.objects.filter(dedupe_key=dedupe_key, created_at__gte=window).exists():
            return None
    notification = Notification.objects.create(
        kind=kind, prefix_id=_prefix_id(prefix), subject=" ".join(subject.split())[:300], details=details[:DETAILS_LIMIT],
        dedupe_key=(dedupe_key or "")[:200], occurrences=max(1, count), created_at=now)
    if kind not in DIGESTED_KINDS:
        _fan_out(notification)
    return notification


def condition_report(kind: str, *, key: str, failing: bool, prefix: PrefixRef = None, subject: str,
                     details: str = "") -> bool:
    """Report the state of something that alarms on change: notifies only when `key` starts failing or
    recovers, never again while it stays as it was (the first report of a healthy state is quiet).
    Returns whether it notified. Never raises; inside a transaction it keeps to a savepoint."""
    try:
        with transaction.atomic():
            now = timezone.now()
            state, created = Condition.objects.select_for_update().get_or_create(
                key=key, defaults={"failing": failing, "detail": details[:2000], "changed_at": now, "checked_at": now})
            changed = state.failing != failing
            if not created:
                state.checked_at = now
                state.detail = details[:2000]
                if changed:
                    state.failing, state.changed_at = failing, now
                state.save()
            if (created and failing) or (not created and changed):
                emit(kind, prefix=prefix, subject=subject, details=details)
                return True
            return False
    except Exception:
        logger.exception("could not record the condition %s", key)
        return False


# --- Fan-out: who hears of what -------------------------------------------------------------------------
def _wants(kinds: list[str], prefix_id: int | None, kind: str, target_prefix_id: int | None) -> bool:
    return kind in (kinds or []) and (prefix_id is None or prefix_id == target_prefix_id)


def webhook_recipient(endpoint: WebhookEndpoint) -> str:
    """How the log names an endpoint: its name and host. A chat service's webhook URL is itself a secret
    (Slack's carries its token in the path), and staff who read the log may not manage endpoints."""
    return f"{endpoint.name} ({urlsplit(endpoint.url).scheme}://{urlsplit(endpoint.url).netloc}/…)"


def _fan_out(notification: Notification) -> list[Delivery]:
    """A delivery per distinct address and per endpoint that subscribed to this kind (and prefix)."""
    subscriptions = [s for s in Subscription.objects.filter(active=True, user__is_active=True, user__is_staff=True)
                     .select_related("user").order_by("pk")
                     if _wants(s.kinds, s.prefix_id, notification.kind, notification.prefix_id)]
    endpoints = [e for e in WebhookEndpoint.objects.filter(active=True).order_by("pk")
                 if _wants(e.kinds, e.prefix_id, notification.kind, notification.prefix_id)]
    deliveries: list[Delivery] = []
    addresses: set[str] = set()
    for subscription in subscriptions:
        address = subscription.address
        if address and address.lower() not in addresses:
            addresses.add(address.lower())
            deliveries.append(Delivery(notification=notification, channel=Delivery.Channel.EMAIL,
                                       subscription=subscription, recipient=address))
    for endpoint in endpoints:
        deliveries.append(Delivery(notification=notification, channel=Delivery.Channel.WEBHOOK, endpoint=endpoint,
                                   recipient=webhook_recipient(endpoint)))
    Delivery.objects.bulk_create(deliveries)
    created = list(Delivery.objects.filter(notification=notification).values_list("pk", flat=True))
    from handles.notify import tasks

    for delivery_id in created:
        transaction.on_commit(partial(tasks.enqueue_delivery, delivery_id), robust=True)
    return deliveries


# --- Digests of request errors ----------------------------------------------------------------------------
def admin_url(name: str, *args: Any) -> str:
    return settings.HANDLES_PUBLIC_BASE_URL + reverse(name, args=args)


def digests_make(*, now: datetime | None = None) -> int:
    """Collect each prefix's waiting request errors into one digest, at most one per prefix and
    HANDLES_NOTIFY_DIGEST_SECONDS. Returns how many digests were made."""
    now = now or timezone.now()
    interval = timedelta(seconds=settings.HANDLES_NOTIFY_DIGEST_SECONDS)
    waiting = Notification.objects.filter(kind=Kind.REQUEST_ERRORS, is_digest=False, digest__isnull=True)
    made = 0
    for prefix_id in sorted(set(waiting.values_list("prefix_id", flat=True)), key=lambda pk: pk or 0):
        with transaction.atomic():
            last = (Notification.objects.filter(kind=Kind.REQUEST_ERRORS, is_digest=True, prefix_id=prefix_id)
                    .order_by("-created_at").values_list("created_at", flat=True).first())
            if last is not None and last > now - interval:
                continue
            events = list(waiting.filter(prefix_id=prefix_id).select_for_update(skip_locked=True).order_by("pk"))
            if not events:
                continue
            digest = Notification.objects.create(
                kind=Kind.REQUEST_ERRORS, prefix_id=prefix_id, is_digest=True, created_at=now,
                occurrences=sum(e.occurrences for e in events), **_digest_text(events, prefix_id))
            Notification.objects.filter(pk__in=[e.pk for e in events]).update(digest=digest)
            _fan_out(digest)
            made += 1
    return made


def _digest_text(events: list[Notification], prefix_id: int | None) -> dict[str, str]:
    total = sum(e.occurrences for e in events)
    prefix = Prefix.objects.filter(pk=prefix_id).values_list("prefix", flat=True).first() if prefix_id else None
    where = f" under {prefix}" if prefix else ""
    first, last = events[0].created_at, events[-1].created_at
    lines = [f"{counted(total, 'handle request')}{where} ended in error between {first:%Y-%m-%d %H:%M:%S} and "
             f"{last:%Y-%m-%d %H:%M:%S} UTC. They wait, failed, for staff to retry them once the cause is fixed."]
    failed = HandleRequest.objects.filter(status=HandleRequest.Status.ERROR, finished_at__gte=first - timedelta(
        seconds=5), finished_at__lte=last + timedelta(seconds=5))
    if prefix:
        failed = failed.filter(full_handle__startswith=f"{prefix}/")
    top = commonest_error(failed)
    if top:
        lines.append(f"Commonest error ({top[1]}×): {top[0]}")
    samples = [line for e in events for line in e.details.splitlines() if line.strip()]
    lines += ["", "Some of them:", *samples[:20]]
    if len(samples) > 20:
        lines.append(f"… and {len(samples) - 20} more.")
    lines += ["", f"Review and retry: {admin_url('admin:handles_handlerequest_failures')}"]
    return {"subject": f"{counted(total, 'handle request')}{where} ended in error", "details": "\n".join(lines)}


# --- Deliveries ---------------------------------------------------------------------------------------
def _backoff(attempts: int) -> timedelta:
    seconds = settings.HANDLES_NOTIFY_BACKOFF_BASE_SECONDS * (2 ** max(0, attempts - 1))
    return timedelta(seconds=min(seconds, settings.HANDLES_NOTIFY_BACKOFF_MAX_SECONDS))


LEASE = timedelta(minutes=5)


def delivery_claim(delivery_id: int, *, now: datetime | None = None) -> Delivery | None:
    """Take a due delivery for one attempt (a conditional UPDATE: two tasks never send it twice at once)."""
    now = now or timezone.now()
    taken = Delivery.objects.filter(pk=delivery_id, status=Delivery.Status.PENDING).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)).update(
        status=Delivery.Status.SENDING, attempts=F("attempts") + 1, lease_until=now + LEASE)
    if not taken:
        return None
    return Delivery.objects.select_related("notification__prefix", "endpoint", "subscription__user").get(pk=delivery_id)


@dataclass(frozen=True)
class AttemptResult:
    ok: bool
    status_code: int | None = None
    response_excerpt: str = ""
    error: str = ""
    elapsed_ms: int = 0


@transaction.atomic
def delivery_record(delivery_id: int, result: AttemptResult, *, now: datetime | None = None) -> Delivery:
    """Log the attempt; sent, or pending again after a backoff, or failed for good after the last attempt."""
    now = now or timezone.now()
    delivery = Delivery.objects.select_for_update().get(pk=delivery_id)
    DeliveryAttempt.objects.create(delivery=delivery, at=now, ok=result.ok, status_code=result.status_code,
                                   response_excerpt=result.response_excerpt[:1000], error=result.error,
                                   elapsed_ms=result.elapsed_ms)
    delivery.lease_until = None
    if result.ok:
        delivery.status, delivery.sent_at, delivery.last_error = Delivery.Status.SENT, now, ""
    else:
        delivery.last_error = result.error or f"HTTP {result.status_code}: {result.response_excerpt[:300]}"
        if delivery.attempts >= settings.HANDLES_NOTIFY_MAX_ATTEMPTS:
            delivery.status = Delivery.Status.FAILED
        else:
            delivery.status, delivery.next_attempt_at = Delivery.Status.PENDING, now + _backoff(delivery.attempts)
    delivery.save()
    return delivery


@transaction.atomic
def deliveries_retry(*, delivery_ids: Iterable[int]) -> int:
    """Staff's "send again": failed (or waiting) deliveries get a fresh set of attempts, due now."""
    ids = list(Delivery.objects.filter(pk__in=list(delivery_ids), status__in=[
        Delivery.Status.FAILED, Delivery.Status.PENDING]).values_list("pk", flat=True))
    Delivery.objects.filter(pk__in=ids).update(status=Delivery.Status.PENDING, attempts=0, next_attempt_at=None)
    from handles.notify import tasks

    for delivery_id in ids:
        transaction.on_commit(partial(tasks.enqueue_delivery, delivery_id), robust=True)
    return len(ids)


def deliveries_due(*, now: datetime | None = None, limit: int = 500) -> list[int]:
    """Deliveries to hand to the queue again: due retries, never-sent ones, and those whose sender died."""
    now = now or timezone.now()
    Delivery.objects.filter(status=Delivery.Status.SENDING, lease_until__lt=now).update(
        status=Delivery.Status.PENDING, lease_until=None, next_attempt_at=None)
    return list(Delivery.objects.filter(status=Delivery.Status.PENDING).filter(
        Q(next_attempt_at__isnull=True, created_at__lt=now - timedelta(seconds=30)) | Q(next_attempt_at__lte=now))
        .order_by("pk").values_list("pk", flat=True)[:limit])


# --- Test send --------------------------------------------------------------------------------------------
@transaction.atomic
def test_send(*, actor: User, endpoints: Iterable[WebhookEndpoint] = (), to_self: bool = True) -> Notification:
    """A test message to the staff member who asked (their subscription's address, else their own) and to
    the given endpoints, through the same deliveries as real events: what arrives shows the path works."""
    notification = Notification.objects.create(
        kind=Kind.TEST, subject="Test notification from the handle service",
        details=f"Sent by {actor.get_username()} from the notification settings page. If you read this, "
        "notifications reach you.")
    deliveries = []
    if to_self:
        subscription = Subscription.objects.filter(user=actor).exclude(email="").order_by("pk").first()
        address = subscription.address if subscription else actor.email
        if address:
            deliveries.append(Delivery(notification=notification, channel=Delivery.Channel.EMAIL,
                                       subscription=subscription, recipient=address))
    deliveries += [Delivery(notification=notification, channel=Delivery.Channel.WEBHOOK, endpoint=endpoint,
                            recipient=webhook_recipient(endpoint)) for endpoint in endpoints]
    Delivery.objects.bulk_create(deliveries)
    from handles.notify import tasks

    for delivery_id in Delivery.objects.filter(notification=notification).values_list("pk", flat=True):
        transaction.on_commit(partial(tasks.enqueue_delivery, delivery_id), robust=True)
    return notification


# --- Subscriptions and endpoints (admin forms) ---------------------------------------------------------------
@transaction.atomic
def subscription_save(*, subscription: Subscription) -> Subscription:
    subscription.full_clean()
    subscription.save()
    return subscription


@transaction.atomic
def endpoint_save(*, endpoint: WebhookEndpoint) -> WebhookEndpoint:
    endpoint.full_clean()
    endpoint.save()
    return endpoint


# --- Watchdog ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckResult:
    check: str
    ok: bool | None  # None: not checked (it depends on a check that failed, or it is switched off)
    detail: str = ""


CHECK_LABELS = {
    "server": "our Handle server answers",
    "credentials": "our credentials authenticate",
    "homed": "the prefix is homed on our server",
    "registry": "the global registry sends the prefix to our server",
    "global_resolution": "a sample of handles resolves through the global proxy as we intend",
    "local": "our tombstone page and local resolver answer",
}


def _condition_of(prefix: Prefix, result: CheckResult) -> tuple[str, str, str]:
    """(kind, condition key, subject) of a check's state change."""
    p = prefix.prefix
    if result.check == "server":
        return Kind.SERVER, f"server-reach:{prefix.pk}", (
            f"The Handle server of {p} does not answer" if not result.ok else f"The Handle server of {p} answers again")
    if result.check == "credentials":
        return Kind.SERVER, auth_condition_key(prefix.pk), (
            f"The Handle server of {p} refuses our credentials" if not result.ok
            else f"The Handle server of {p} accepts our credentials again")
    label = CHECK_LABELS.get(result.check, result.check)
    return Kind.WATCHDOG, f"watchdog:{prefix.pk}:{result.check}", (
        f"Watchdog alarm for {p}: it is no longer true that {label}" if not result.ok
        else f"Watchdog recovery for {p}: {label} again")


def auth_condition_key(prefix_id: int) -> str:
    return f"server-auth:{prefix_id}"


@transaction.atomic
def watchdog_record(*, prefix: Prefix, results: list[CheckResult], started_at: datetime) -> WatchdogRun:
    """Keep one pass's results (history) and notify each check that started failing or recovered."""
    failing = [r.check for r in results if r.ok is False]
    run = WatchdogRun.objects.create(
        prefix=prefix, started_at=started_at, finished_at=timezone.now(),
        light=WatchdogRun.Light.RED if failing else WatchdogRun.Light.GREEN, failing=failing,
        results=[{"check": r.check, "ok": r.ok, "detail": r.detail[:2000]} for r in results])
    for result in results:
        if result.ok is None:
            continue
        kind, key, subject = _condition_of(prefix, result)
        details = result.detail or CHECK_LABELS.get(result.check, result.check)
        condition_report(kind, key=key, failing=not result.ok, prefix=prefix, subject=subject,
                         details=f"{details}\n\nWatchdog history: {admin_url('admin:handles_notify_watchdogrun_changelist')}"
                         f"?prefix__id__exact={prefix.pk}")
    return run


def watchdog_prune(*, now: datetime | None = None) -> int:
    """Forget watchdog runs older than HANDLES_WATCHDOG_KEEP_DAYS."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.HANDLES_WATCHDOG_KEEP_DAYS)
    deleted, _ = WatchdogRun.objects.filter(started_at__lt=cutoff).delete()
    return deleted
