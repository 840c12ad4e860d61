"""Reads shared by the admin, the browse pages, exports, bulk jobs and the dashboard.

Everything here must stay fast at a million handles on PostgreSQL: searches are shaped so that every
branch of the OR can use an index on the handles table (the trigram indexes of migration
handles_desk.0002), counts are capped, and the sync state of a handle is read from the request log's
(handle_id, id) and (status, ...) indexes instead of scanning it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta

from django.apps import apps
from django.conf import settings
from django.core.exceptions import BadRequest, ValidationError
from django.core.paginator import EmptyPage, Paginator
from django.db import connection
from django.db.models import (
    Count,
    Exists,
    F,
    JSONField,
    Max,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
)
from django.db.models.expressions import RawSQL
from django.db.models.functions import JSONObject, Left
from django.utils import timezone
from django.utils.functional import cached_property

from handles.jobs import Tally
from handles.labels import counted
from handles.models import Asset, ErrorSignature, Handle, HandleRequest, Prefix
from handles.validators import ascii_upper, split_handle

RStatus = HandleRequest.Status
UNFINISHED = [RStatus.QUEUED, RStatus.RUNNING]

# Up to this many matching assets, the search hands PostgreSQL their ids (an index probe each); more, and
# the term is so common (1 % of a million assets) that walking the list in order finds a page at once.
SEARCH_ASSET_IDS = 10_000
ASSET_KEY = re.compile(r"^(?P<source>[a-z0-9][a-z0-9_.-]*):(?P<external_id>\S.*)$")


# --- Counting -------------------------------------------------------------------------------------
def capped_count(queryset: QuerySet, cap: int | None = None) -> tuple[int, bool]:
    """(count, capped): counts at most cap + 1 rows, so a million-row list costs what 10,001 rows cost."""
    cap = cap or settings.HANDLES_DESK_COUNT_LIMIT
    count = queryset.order_by().values("pk")[: cap + 1].count()  # no annotations: count rows, not health
    return min(count, cap), count > cap


class CappedCountPaginator(Paginator):
    """A paginator that never counts more than HANDLES_DESK_COUNT_LIMIT rows. Past the cap, pages are
    still served (by OFFSET); the list says "more than 1000" and asks for a narrower filter."""

    @cached_property
    def _capped(self) -> tuple[int, bool]:
        return capped_count(self.object_list)

    @cached_property
    def count(self) -> int:
        count, capped = self._capped
        return count + 1 if capped else count

    @property
    def count_capped(self) -> bool:
        return self._capped[1]

    @property
    def count_limit(self) -> int:
        return self._capped[0]

    def validate_number(self, number):
        try:
            return super().validate_number(number)
        except EmptyPage:
            if self.count_capped and int(number) >= 1:
                return int(number)
            raise

    def page(self, number):
        number = self.validate_number(number)
        if not self.count_capped:
            return super().page(number)
        bottom = (number - 1) * self.per_page
        return self._get_page(self.object_list[bottom:bottom + self.per_page], number, self)


# --- Search ---------------------------------------------------------------------------------------
def _named_handle(term: str) -> tuple[Prefix, str] | None:
    """(prefix, suffix) when the term is a handle of one of our prefixes: 20.500.1/x, hdl:..., resolver URLs."""
    if "/" not in term:
        return None
    try:
        prefix, suffix = split_handle(term)
    except ValidationError:
        return None
    known = Prefix.objects.filter(prefix__iexact=prefix).first()
    return (known, suffix) if known else None


def handle_search(queryset: QuerySet, term: str) -> QuerySet:
    """Full handle, suffix fragment, URL fragment, asset title or external id; case-insensitive.

    A full handle is looked up exactly (then as a suffix beginning, if nothing has that exact name).
    Anything else is an OR of conditions on the handles table that each have an index: the suffix key
    (trigram), the target URL (trigram on upper(target_url)), and the ids of matching assets, found first
    through the assets' own trigram indexes (a join inside the OR would make PostgreSQL read every
    handle). Only for a term in more than SEARCH_ASSET_IDS titles is the join used: matches are then
    dense, and reading the list in its order finds a page of them after a few hundred rows.
    """
    term = (term or "").strip()
    if not term:
        return queryset
    named = _named_handle(term)
    if named is not None:
        prefix, suffix = named
        exact = queryset.filter(prefix=prefix, suffix_key=ascii_upper(suffix))
        if exact.exists():
            return exact
        return queryset.filter(prefix=prefix, suffix_key__startswith=ascii_upper(suffix))
    condition = Q(suffix_key__contains=ascii_upper(term)) | Q(target_url__icontains=term)
    assets = Asset.objects.filter(Q(title__icontains=term) | Q(external_id__icontains=term))
    keyed = ASSET_KEY.match(term)
    if keyed and not term.lower().startswith(("http:", "https:")):
        assets = Asset.objects.filter(
            Q(pk__in=assets.values("pk"))
            | Q(source_system=keyed["source"], external_id=keyed["external_id"])
        )
    asset_ids = list(assets.order_by().values_list("pk", flat=True)[: SEARCH_ASSET_IDS + 1])
    if len(asset_ids) > SEARCH_ASSET_IDS:
        condition |= Q(asset__title__icontains=term) | Q(asset__external_id__icontains=term)
        if keyed:
            condition |= Q(asset__source_system=keyed["source"], asset__external_id=keyed["external_id"])
    elif asset_ids:
        condition |= Q(asset_id__in=asset_ids)
    return queryset.filter(condition)


def request_search(queryset: QuerySet, term: str) -> QuerySet:
    """The request log's search: a full handle finds that handle's requests, anything else is part of a
    handle's name (trigram index on upper(full_handle))."""
    term = (term or "").strip()
    if not term:
        return queryset
    named = _named_handle(term)
    if named is not None:
        prefix, suffix = named
        return queryset.filter(handle__prefix=prefix, handle__suffix_key=ascii_upper(suffix))
    return queryset.filter(full_handle__icontains=term)


# --- Sync state -----------------------------------------------------------------------------------
class SyncState:
    IN_SYNC = "in_sync"
    PENDING = "pending"
    ERROR = "error"
    DRIFT = "drift"
    CHOICES = [(IN_SYNC, "In sync"), (PENDING, "Pending"), (ERROR, "Error"), (DRIFT, "Drift")]
    LABELS = dict(CHOICES)


# A failed verify whose error says the server disagrees with us (handles.push._verify) is drift, not an
# outage: the server answered, and it holds something else.
DRIFT_ERROR = (Q(op=HandleRequest.Op.VERIFY)
               & (Q(error__startswith="Drift:") | Q(error__contains="is missing on the Handle server")
                  | Q(error__contains="still on the server")))


def _unfinished_handle_ids() -> QuerySet:
    # order_by(): no model ordering, so the set can be one side of a UNION (SQLite refuses ORDER BY there).
    return HandleRequest.objects.filter(status__in=UNFINISHED).order_by().values("handle_id")


def _latest_failed() -> QuerySet:
    """Failed requests that are the latest request of their handle (nothing was asked of it since)."""
    later = HandleRequest.objects.filter(handle_id=OuterRef("handle_id"), pk__gt=OuterRef("pk"))
    return HandleRequest.objects.filter(status=RStatus.ERROR).filter(~Exists(later))


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
    latest_failed = _latest_failed()
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
    latest = handle.health_latest or {}
    if isinstance(latest, str):  # SQLite returns the JSON object as text
        latest = json.loads(latest)
    if handle.health_unfinished:
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


# --- Filters shared by the admin list, browse pages, exports and bulk jobs -----------------------------
MAX_SEARCH = 500


class InvalidFilter(ValueError):
    """Filter values that name nothing we know (an unknown collection, a bogus status). Refused, never
    ignored: ignoring one would show, export or change a wider set of handles than was asked for."""

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = problems
        super().__init__(" ".join(problems.values()))


@dataclass(frozen=True)
class HandleFilter:
    """The list filters, by their query-string names. `apply` refuses a value that selects nothing we
    know (InvalidFilter); a value that is valid but matches no handle selects none."""

    q: str = ""
    prefix: str = ""
    status: str = ""
    sync: str = ""
    source: str = ""
    collection: str = ""
    health: str = ""  # the outcome of the handle's latest resolution check, or "never"

    @classmethod
    def from_params(cls, params: Mapping[str, object]) -> HandleFilter:
        values = {}
        for field in fields(cls):
            value = params.get(field.name, "")
            if isinstance(value, list | tuple):
                value = value[-1] if value else ""
            values[field.name] = str(value or "").strip()
        return cls(**values)

    def as_params(self) -> dict[str, str]:
        return {name: value for name, value in asdict(self).items() if value}

    def problems(self) -> dict[str, str]:
        """Why each value is refused, by parameter name ({} when every value is valid)."""
        from handles.desk.models import Collection

        problems = {}
        if len(self.q) > MAX_SEARCH:
            problems["q"] = f"The search is longer than {MAX_SEARCH} characters."
        if self.prefix and not (self.prefix.isdigit() and Prefix.objects.filter(pk=int(self.prefix)).exists()):
            problems["prefix"] = f"There is no prefix with id {self.prefix!r}."
        if self.status and self.status not in Handle.Status.values:
            problems["status"] = f"Unknown status {self.status!r} (one of {', '.join(Handle.Status.values)})."
        if self.sync and self.sync not in SyncState.LABELS:
            problems["sync"] = f"Unknown sync state {self.sync!r} (one of {', '.join(SyncState.LABELS)})."
        if self.source and self.source not in source_systems():
            problems["source"] = f"No asset comes from the source system {self.source!r}."
        if self.collection and not (self.collection.isdigit()
                                    and Collection.objects.filter(pk=int(self.collection)).exists()):
            problems["collection"] = f"There is no collection with id {self.collection!r}."
        if self.health and self.health not in dict(health_choices()):
            problems["health"] = (f"Unknown health check outcome {self.health!r} (one of "
                                  f"{', '.join(dict(health_choices()))}).")
        return problems

    def validate(self) -> HandleFilter:
        if problems := self.problems():
            raise InvalidFilter(problems)
        return self

    def apply(self, queryset: QuerySet) -> QuerySet:
        self.validate()
        if self.prefix:
            queryset = queryset.filter(prefix_id=int(self.prefix))
        if self.status:
            queryset = queryset.filter(status=self.status)
        if self.source:
            queryset = queryset.filter(asset__source_system=self.source)
        if self.collection:
            from handles.desk.models import Collection

            queryset = queryset.filter(Collection.objects.get(pk=int(self.collection)).handle_q())
        if self.sync:
            queryset = filter_sync_state(queryset, self.sync)
        if self.health:
            queryset = filter_last_health(queryset, self.health)
        return handle_search(queryset, self.q)

    def describe(self) -> str:
        parts = []
        if self.q:
            parts.append(f'matching "{self.q}"')
        if self.prefix.isdigit():
            prefix = Prefix.objects.filter(pk=int(self.prefix)).first()
            parts.append(f"of prefix {prefix.prefix if prefix else self.prefix}")
        if self.status:
            parts.append(f"status {self.status}")
        if self.sync:
            parts.append(f"sync {SyncState.LABELS.get(self.sync, self.sync).lower()}")
        if self.source:
            parts.append(f"from {self.source}")
        if self.health:
            parts.append(f"latest health check {dict(health_choices()).get(self.health, self.health).lower()}")
        if self.collection.isdigit():
            from handles.desk.models import Collection

            parts.append(f"in collection {Collection.objects.filter(pk=int(self.collection)).first() or '?'}")
        return "all handles " + ", ".join(parts) if parts else "all handles"


def health_choices() -> list[tuple[str, str]]:
    """The outcomes a handle's latest resolution check can have, and "never checked"."""
    if not apps.is_installed("handles.repair"):
        return []
    from handles.repair.models import HealthOutcome

    return [*HealthOutcome.choices, ("never", "Never checked")]


def filter_last_health(queryset: QuerySet, outcome: str) -> QuerySet:
    """Handles whose latest resolution check had this outcome. Not one of the outcomes: BadRequest (400),
    never the unfiltered list."""
    if outcome not in dict(health_choices()):
        raise BadRequest(f"Unknown health outcome {outcome[:40]!r}; one of: "
                         + ", ".join(value for value, _ in health_choices()) + ".")
    from handles.repair.selectors import handles_by_last_outcome

    return handles_by_last_outcome(queryset, outcome)


def source_systems() -> list[str]:
    """The distinct asset source systems. On PostgreSQL a loose index scan over the (source_system,
    external_id) unique index: a handful of index probes instead of reading a million assets."""
    if connection.vendor != "postgresql":
        return list(Asset.objects.order_by("source_system").values_list("source_system", flat=True).distinct())
    table = Asset._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""WITH RECURSIVE sources AS (
                  (SELECT source_system FROM {table} ORDER BY source_system LIMIT 1)
                  UNION ALL
                  SELECT (SELECT a.source_system FROM {table} a WHERE a.source_system > s.source_system
                          ORDER BY a.source_system LIMIT 1)
                  FROM sources s WHERE s.source_system IS NOT NULL)
                SELECT source_system FROM sources WHERE source_system IS NOT NULL"""
        )
        return [row[0] for row in cursor.fetchall()]


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


# --- Failed requests, grouped by error ---------------------------------------------------------------
def failed_requests(*, prefix_id: int | None = None, since: datetime | None = None,
                    until: datetime | None = None) -> QuerySet:
    requests = HandleRequest.objects.filter(status=RStatus.ERROR)
    if prefix_id:
        requests = requests.filter(handle__prefix_id=prefix_id)
    if since:
        requests = requests.filter(finished_at__gte=since)
    if until:
        requests = requests.filter(finished_at__lt=until)
    return requests


def failure_groups(requests: QuerySet, limit: int = 100) -> list[dict]:
    """Failed requests grouped by error signature, the largest group first."""
    return list(requests.annotate(signature=ErrorSignature()).order_by().values("signature").annotate(
        count=Count("pk"), handles=Count("handle_id", distinct=True), first=Min("finished_at"),
        last=Max("finished_at"), latest_id=Max("pk"),
    ).order_by("-count", "signature")[:limit])


def with_signature(requests: QuerySet, signature: str) -> QuerySet:
    return requests.annotate(signature=ErrorSignature()).filter(signature=signature)


def open_failures_of(handles: QuerySet) -> QuerySet:
    """The failed requests that still stand for these handles (nothing was asked of the handle since)."""
    return _latest_failed().filter(handle__in=handles.values("pk"))


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
