"""The desk's reads: a handle's sync state with the server (as a filter and per row), find-and-replace
matches, bulk job selections and tallies, and the dashboard. The reads every list shares (counts,
searches, failed requests) are in handles.selectors; the handle filter is handles.desk.filters.

Everything here must stay fast at a million handles on PostgreSQL: the sync state of a handle is read
from the request log's (handle_id, id) and (status, ...) indexes instead of scanning it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.apps import apps
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import Count, Exists, F, JSONField, Max, OuterRef, Q, QuerySet, Subquery
from django.db.models.expressions import RawSQL
from django.db.models.functions import JSONObject, Left
from django.utils import timezone

from handles.jobs import Tally
from handles.labels import counted
from handles.models import Handle, HandleRequest, Prefix
from handles.selectors import (
    UNFINISHED,
    capped_count,
    failed_requests,
    failure_groups,
    latest_failed_requests,
)

RStatus = HandleRequest.Status

# --- Sync state -----------------------------------------------------------------------------------
class SyncState:
    IN_SYNC = "in_sync"
    PENDING = "pending"
    ERROR = "error"
    DRIFT = "drift"
    CHOICES = [(IN_SYNC, "In sync"), (PENDING, "Pending"), (ERROR, "Error"), (DRIFT, "Drift")]
    LABELS = dict(CHOICES)


# A failed verify whose error says the server disagrees with us (handles.outbox.push._verify) is drift, not an
# outage: the server answered, and it holds something else.
DRIFT_ERROR = (Q(op=HandleRequest.Op.VERIFY)
               & (Q(error__startswith="Drift:") | Q(error__contains="is missing on the Handle server")
                  | Q(error__contains="still on the server")))


def _unfinished_handle_ids() -> QuerySet:
    # order_by(): no model ordering, so the set can be one side of a UNION (SQLite refuses ORDER BY there).
    return HandleRequest.objects.filter(status__in=UNFINISHED).order_by().values("handle_id")



# Up to this many pending handles, the pending filter passes their ids (see filter_sync_state).
PENDING_IDS = 100_000


def _id_list(ids: list[int]) -> list[int] | RawSQL:
    """A list of ids for `pk__in`: on PostgreSQL one array parameter (unnest), whatever its length."""
    if connection.vendor != "postgresql":
        return ids
    return RawSQL("SELECT unnest(%s::bigint[])", (ids,))
RECONCILE_DRIFT_KINDS = ["missing", "url_differs", "deleted_on_server", "tombstone_drift"]


def _reconciliation_drift() -> QuerySet | None:
    """Rows of each prefix's latest finished reconciliation that say the server differs, not yet repaired,
    and whose handle has not been pushed and read back since that reconciliation ended."""
    if not apps.is_installed("handles.repair"):
        return None
    from handles.repair.models import JobState, ReconciliationRow, ReconciliationRun

    latest = (ReconciliationRun.objects.filter(state=JobState.DONE).order_by().values("prefix_id")
              .annotate(latest=Max("pk")).values("latest"))
    return (ReconciliationRow.objects.filter(run_id__in=latest, kind__in=RECONCILE_DRIFT_KINDS,
                                             repaired_at__isnull=True, handle__isnull=False)
            .filter(Q(handle__synced_at__isnull=True) | Q(handle__synced_at__lt=F("run__finished_at"))))


def filter_sync_state(queryset: QuerySet, state: str) -> QuerySet:
    """The same classification as health_of(), as a filter. Precedence: pending (a request is under
    way) > the latest request failed (error, or drift when a verify found a difference) > a
    reconciliation found drift > not yet confirmed on the server (pending) > in sync."""
    unfinished = _unfinished_handle_ids()
    latest_failed = latest_failed_requests()
    recon = _reconciliation_drift()
    recon_ids = recon.values("handle_id") if recon is not None else None
    if state == SyncState.PENDING:
        # A UNION of two index-driven sets (the request queue; the partial index of unconfirmed handles):
        # an OR of the two would make PostgreSQL read every handle to find a rare few. PostgreSQL cannot
        # estimate "synced_version <> version", so the ids themselves are handed over while they are few.
        not_confirmed = Handle.objects.exclude(synced_version=F("version")).exclude(
            pk__in=latest_failed.values("handle_id"))
        if recon_ids is not None:
            not_confirmed = not_confirmed.exclude(pk__in=recon_ids)
        pending = unfinished.union(not_confirmed.order_by().values("pk"))
        ids = [row["handle_id"] for row in pending[: PENDING_IDS + 1]]
        return queryset.filter(pk__in=_id_list(ids) if len(ids) <= PENDING_IDS else pending)
    if state == SyncState.ERROR:
        return queryset.filter(pk__in=latest_failed.exclude(DRIFT_ERROR).values("handle_id")).exclude(
            pk__in=unfinished)
    if state == SyncState.DRIFT:
        drift = latest_failed.filter(DRIFT_ERROR).order_by().values("handle_id")
        if recon is not None:
            drift = drift.union(recon.exclude(handle_id__in=latest_failed.values("handle_id")).order_by()
                                .values("handle_id"))
        return queryset.filter(pk__in=drift).exclude(pk__in=unfinished)
    if state == SyncState.IN_SYNC:
        queryset = queryset.filter(synced_version=F("version")).exclude(pk__in=unfinished).exclude(
            pk__in=latest_failed.values("handle_id"))
        return queryset.exclude(pk__in=recon_ids) if recon_ids is not None else queryset
    return queryset


def with_health(queryset: QuerySet) -> QuerySet:
    """Annotate what health_of() needs: a few index lookups per row, evaluated for the rows shown only."""
    latest = (HandleRequest.objects.filter(handle=OuterRef("pk")).order_by("-pk")
              .values(info=JSONObject(id="id", status="status", op="op", action="action", error=Left("error", 300),
                                      created_at="created_at"))[:1])
    annotated = queryset.annotate(
        health_unfinished=Exists(HandleRequest.objects.filter(handle=OuterRef("pk"), status__in=UNFINISHED)),
        health_latest=Subquery(latest, output_field=JSONField()),
    )
    recon = _reconciliation_drift()
    if recon is not None:
        annotated = annotated.annotate(health_recon=Exists(recon.filter(handle=OuterRef("pk"))))
    return annotated


@dataclass(frozen=True)
class Health:
    state: str
    detail: str = ""

    @property
    def label(self) -> str:
        return SyncState.LABELS[self.state]

    @property
    def ok(self) -> bool:
        return self.state == SyncState.IN_SYNC


def health_of(handle: Handle) -> Health:
    """A handle's sync state from the with_health() annotations (or, without them, a few queries)."""
    if not hasattr(handle, "health_latest"):
        handle = with_health(Handle.objects.filter(pk=handle.pk)).get()
    # with_health()'s annotations, which the model does not declare.
    latest = getattr(handle, "health_latest", None) or {}
    if isinstance(latest, str):  # SQLite returns the JSON object as text
        latest = json.loads(latest)
    if getattr(handle, "health_unfinished", False):
        return Health(SyncState.PENDING, "A request is queued or running.")
    if latest.get("status") == RStatus.ERROR:
        error = latest.get("error") or "The latest request failed."
        is_drift = latest.get("op") == HandleRequest.Op.VERIFY and (
            error.startswith("Drift:") or "is missing on the Handle server" in error or "still on the server" in error)
        return Health(SyncState.DRIFT if is_drift else SyncState.ERROR, error)
    if getattr(handle, "health_recon", False):
        return Health(SyncState.DRIFT, "The latest reconciliation found the server's record differs.")
    if handle.synced_version != handle.version:
        return Health(SyncState.PENDING, f"Version {handle.version} is not yet confirmed on the server.")
    return Health(SyncState.IN_SYNC, f"The server holds version {handle.synced_version}.")


# --- Find and replace on URLs ---------------------------------------------------------------------------
REDIRECTABLE = [Handle.Status.ACTIVE, Handle.Status.PENDING]


def redirect_rule_matches(queryset: QuerySet, find: str) -> QuerySet:
    """Redirectable handles whose URL contains `find` (case-sensitive). The case-insensitive condition is
    there for the trigram index on upper(target_url); the exact one rechecks the rows it finds."""
    return queryset.filter(status__in=REDIRECTABLE).filter(target_url__icontains=find, target_url__contains=find)


@dataclass(frozen=True)
class RewriteExample:
    handle: Handle
    before: str
    after: str
    problem: str


def redirect_rule_preview(queryset: QuerySet, find: str, replace: str, limit: int = 20) -> list[RewriteExample]:
    """The first matches, old -> new, each with the reason it would be refused (an invalid URL), if any."""
    from handles.validators import validate_target_url

    examples = []
    for handle in redirect_rule_matches(queryset, find).select_related("prefix").order_by("pk")[:limit]:
        after = handle.target_url.replace(find, replace)
        try:
            validate_target_url(after)
            problem = ""
        except ValidationError as exc:
            problem = " ".join(exc.messages)
        examples.append(RewriteExample(handle, handle.target_url, after, problem))
    return examples


# --- Bulk jobs --------------------------------------------------------------------------------------------
def _bulk_job_items(job_id: int) -> QuerySet:
    from handles.desk.models import BulkJobItem

    return BulkJobItem.objects.filter(job_id=job_id, request__isnull=False)


def selection_ids(queryset: QuerySet) -> list[int]:
    """The ids a selection holds now, in order: what a job acts on, fixed when it is confirmed."""
    return list(queryset.order_by("pk").values_list("pk", flat=True))


def selection_digest(ids: list[int]) -> str:
    """A fingerprint of a selection's ids: the preview carries it, the confirmation compares it."""
    return hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()[:32]


def bulk_job_tally(job_id: int) -> Tally:
    """The requests a job queued, by status: one GROUP BY over its items, joined to the requests by key."""
    return Tally.of(dict(_bulk_job_items(job_id).values_list("request__status").annotate(n=Count("pk")).order_by()))


def bulk_job_requests(job_id: int) -> QuerySet:
    return HandleRequest.objects.filter(pk__in=_bulk_job_items(job_id).values("request_id"))


# --- Dashboard -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerState:
    alive: bool
    detail: str


def worker_state(now: datetime | None = None) -> WorkerState:
    """Whether a django-q2 cluster is running: its Stat heartbeat (needs a cache shared with the workers,
    e.g. Redis), else the minute sweep schedule, which a running cluster keeps moving forward."""
    from django_q.models import Schedule
    from django_q.status import Stat

    now = now or timezone.now()
    try:
        stats = [s for s in Stat.get_all() if getattr(s, "status", "") not in ("Stopped", "")]
    except Exception:  # the stat cache is optional: an unreachable cache says nothing about the workers
        stats = []
    if stats:
        workers = sum(len(s.workers) for s in stats)
        return WorkerState(True, f"{counted(len(stats), 'cluster')}, {counted(workers, 'worker')}: "
                                 + ", ".join(f"{s.host} ({s.status})" for s in stats))
    schedule = Schedule.objects.filter(func="handles.tasks.sweep_requests").order_by("pk").first()
    if schedule is None or schedule.next_run is None:
        return WorkerState(False, "No sweep schedule: run the migrations.")
    if schedule.task and now - schedule.next_run <= timedelta(minutes=2):
        return WorkerState(True, f"The scheduler ran the sweep on time (next run {schedule.next_run:%H:%M:%S}).")
    # A worker that has just pushed a request is running, though its first sweep may be a minute away.
    # Only workers set finished_at; the newest requests (primary key order) are where they work.
    finished = [t for t in HandleRequest.objects.order_by("-pk").values_list("finished_at", flat=True)[:200] if t]
    if finished and now - max(finished) <= timedelta(minutes=2):
        return WorkerState(True, f"A worker finished a request at {timezone.localtime(max(finished)):%H:%M:%S}.")
    if not schedule.task:
        return WorkerState(False, "No worker has run the minute sweep yet: start one with `manage.py qcluster`.")
    return WorkerState(False, f"No worker has run the minute sweep since {schedule.next_run:%Y-%m-%d %H:%M}: "
                              "start one with `manage.py qcluster`.")


def prefixes_with_waiting() -> list[Prefix]:
    """Every prefix, each with `waiting`: how many queued requests wait for its authentication to work
    (counted only for prefixes whose authentication fails, which are few)."""
    prefixes = list(Prefix.objects.order_by("prefix"))
    failing = [p.pk for p in prefixes if p.auth_failing]
    counts = dict(HandleRequest.objects.paused().filter(handle__prefix_id__in=failing).order_by()
                  .values_list("handle__prefix_id").annotate(n=Count("pk"))) if failing else {}
    for prefix in prefixes:
        prefix.waiting = counts.get(prefix.pk, 0)
    return prefixes


def dashboard(now: datetime | None = None) -> dict:
    """Every figure of the dashboard. Each is one indexed query (counts by status read one small index)."""
    from django_q.brokers import get_broker

    from handles.desk.models import BulkJob

    now = now or timezone.now()
    by_status = dict(Handle.objects.order_by().values_list("status").annotate(n=Count("pk")))
    queue = dict(HandleRequest.objects.filter(status__in=UNFINISHED).order_by().values_list("status")
                 .annotate(n=Count("pk")))
    waiting = HandleRequest.objects.filter(status=RStatus.QUEUED, next_attempt_at__gt=now).count()
    day_ago = now - timedelta(days=1)
    failures = failed_requests(since=day_ago)
    try:
        broker_depth = get_broker().queue_size()
    except Exception:  # a broker that cannot be reached: the dashboard still shows the rest
        broker_depth = None
    return {
        "statuses": [(value, label, by_status.get(value, 0)) for value, label in Handle.Status.choices],
        "total": sum(by_status.values()),
        "sync_problems": {state: capped_count(filter_sync_state(Handle.objects.all(), state), 1000)
                          for state in (SyncState.ERROR, SyncState.DRIFT)},
        "queued": queue.get(RStatus.QUEUED, 0),
        "running": queue.get(RStatus.RUNNING, 0),
        "waiting_retry": waiting,
        "broker_depth": broker_depth,
        "failures_day": failures.count(),
        "failure_groups_day": failure_groups(failures, limit=5),
        "worker": worker_state(now),
        "prefixes": prefixes_with_waiting(),
        "jobs": list(BulkJob.objects.order_by("-pk")[:5]),
        "day_ago": day_ago,
        "health": _health_figures(),
    }


def _health_figures() -> dict | None:
    """The share resolving correctly at the latest whole health check, and its trend (two small queries)."""
    if not apps.is_installed("handles.repair"):
        return None
    from handles.repair.selectors import health_trend, latest_health
    from handles.repair.trend import trend_svg

    trend = health_trend(limit=12)
    return {"summary": latest_health(), "trend_svg": trend_svg(trend) if len(trend) > 1 else ""}
