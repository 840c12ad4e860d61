"""Reads that span models, for the admin pages, the commands and the dashboard.

For the dashboard: `latest_reconciliations()` (the last finished reconciliation of each prefix, with its
counts) and `latest_health()` (the last finished health check and the current shares).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery

from handles.jobs import Tally
from handles.labels import counted
from handles.models import Asset, Handle, HandleRequest, Prefix
from handles.repair.models import (
    LEFT_OUT,
    HandleCheck,
    HealthOutcome,
    HealthRun,
    ImportRow,
    JobState,
    ReconciliationRow,
    ReconciliationRun,
)
from handles.repair.rules import vendor_matcher, vendor_pattern_error

Kind = ReconciliationRow.Kind


@dataclass(frozen=True)
class ReconciliationSummary:
    prefix: str
    run_id: int
    finished_at: object
    state: str
    in_sync: int
    drift: int
    counts: dict[str, int]
    error: str


def latest_reconciliations() -> list[ReconciliationSummary]:
    """The latest finished reconciliation of each prefix (for the dashboard): drift = handles not in sync."""
    latest = ReconciliationRun.objects.filter(prefix=OuterRef("pk"), state__in=[JobState.DONE, JobState.FAILED])
    prefixes = Prefix.objects.annotate(run_id=Subquery(latest.order_by("-pk").values("pk")[:1])).filter(
        run_id__isnull=False)
    runs = ReconciliationRun.objects.in_bulk([p.run_id for p in prefixes])
    summaries = []
    for prefix in prefixes:
        run = runs[prefix.run_id]
        summaries.append(ReconciliationSummary(
            prefix=prefix.prefix, run_id=run.pk, finished_at=run.finished_at, state=run.state,
            in_sync=run.counts.get("in_sync", 0), drift=run.drift, counts=run.counts, error=run.error))
    return summaries


@dataclass
class HealthSummary:
    run: HealthRun | None
    checked: int = 0
    correct: int = 0
    by_outcome: dict[str, int] = field(default_factory=dict)
    previous: HealthRun | None = None

    @property
    def share_correct(self) -> float | None:
        return self.correct / self.checked if self.checked else None

    @property
    def change(self) -> float | None:
        """The change in the share resolving correctly since the run before (the trend's last step)."""
        before = self.previous.share_correct if self.previous else None
        return self.share_correct - before if before is not None and self.share_correct is not None else None


def previous_health_run(run: HealthRun) -> HealthRun | None:
    """The last finished health check over the same selection before this one: what it is compared with."""
    earlier = HealthRun.objects.filter(state=JobState.DONE, filters=run.filters, pk__lt=run.pk)
    return earlier.order_by("-pk").first()


def whole_runs() -> QuerySet[HealthRun]:
    """Finished runs over whole prefixes (not re-checks of a few handles), latest first."""
    return (HealthRun.objects.filter(state=JobState.DONE, progress_total__gt=0).order_by("-pk")
            .exclude(filters__has_key="handle_ids").exclude(filters__has_key="limit"))


def latest_health() -> HealthSummary:
    """The latest finished whole health check, and the one before it (for the dashboard and the health
    page): its counts are the share resolving correctly now, and the trend's last step."""
    runs = list(whole_runs()[:2])
    if not runs:
        return HealthSummary(run=None)
    run = runs[0]
    by_outcome = {o: n for o, n in run.counts.items() if o in HealthOutcome.values and n}
    return HealthSummary(run=run, checked=sum(by_outcome.values()), correct=by_outcome.get(HealthOutcome.CORRECT, 0),
                         by_outcome=by_outcome, previous=runs[1] if len(runs) > 1 else None)


def health_shares(run: HealthRun | None) -> dict[str, list[dict]]:
    """A run's share resolving correctly by prefix, source system and handle status."""
    if run is None:
        return {}
    checks = HandleCheck.objects.filter(run=run)
    return {
        "prefix": checks.shares_by("handle__prefix__prefix"),
        "source system": checks.shares_by("handle__asset__source_system"),
        "status": checks.shares_by("handle__status"),
    }


def health_trend(limit: int = 30) -> list[HealthRun]:
    """Finished whole runs, oldest first: the trend's points."""
    return list(whole_runs()[:limit])[::-1]


def vendor_q(field: str = "handle") -> Q:
    """Handles whose suffix is in their prefix's vendor sequence (Prefix.vendor_suffix_pattern)."""
    condition = Q(pk__in=[])
    for prefix in Prefix.objects.exclude(vendor_suffix_pattern=""):
        if not vendor_pattern_error(prefix.vendor_suffix_pattern):
            condition |= Q(**{f"{field}__prefix_id": prefix.pk, f"{field}__suffix__regex":
                              prefix.vendor_suffix_pattern})
    return condition


def health_results(run: HealthRun, *, outcome: str = "", prefix: Prefix | None = None, source: str = "",
                   origin: str = "") -> QuerySet[HandleCheck]:
    """A run's results as the health page filters them; no outcome: every one not resolving correctly."""
    checks = HandleCheck.objects.filter(run=run)
    checks = checks.filter(outcome=outcome) if outcome else checks.failing()
    if prefix is not None:
        checks = checks.filter(handle__prefix=prefix)
    if source:
        checks = checks.filter(handle__asset__source_system=source)
    if origin == "vendor":
        checks = checks.filter(vendor_q())
    elif origin == "legacy":
        checks = checks.exclude(vendor_q())
    return checks.select_related("handle__prefix", "handle__asset").order_by("outcome", "handle_id")


def failing_checks(run: HealthRun | None = None) -> QuerySet[HandleCheck]:
    run = run or latest_run_with_results()
    if run is None:
        return HandleCheck.objects.none()
    return (HandleCheck.objects.filter(run=run).failing().select_related("handle__prefix", "handle__asset")
            .order_by("outcome", "handle__prefix__prefix", "handle__suffix_key"))


def latest_run_with_results() -> HealthRun | None:
    """The health page's default: the latest finished run (whole or not) that still has its results."""
    return (HealthRun.objects.filter(state__in=[JobState.DONE, JobState.FAILED])
            .filter(Exists(HandleCheck.objects.filter(run_id=OuterRef("pk")))).order_by("-pk").first())


def handles_by_last_outcome(queryset: QuerySet[Handle], outcome: str) -> QuerySet[Handle]:
    """Handles whose latest check had this outcome ("never" for handles never checked)."""
    if outcome == "never":
        return queryset.exclude(Exists(HandleCheck.objects.filter(handle_id=OuterRef("pk"))))
    latest = HandleCheck.objects.filter(outcome=outcome).latest_per_handle()
    return queryset.filter(pk__in=latest.values("handle_id"))


def check_history(handle: Handle, limit: int = 50) -> list[HandleCheck]:
    """A handle's checks, latest first (one per health run that checked it)."""
    return list(HandleCheck.objects.filter(handle=handle).select_related("run").order_by("-pk")[:limit])


# --- Imports -------------------------------------------------------------------------------------------
def import_tally(batch_id: int) -> Tally:
    """What became of an applied import's handles: their requests by status (success means the worker read
    the server's record back), and the lines recorded but never pushed (push mode: the server could not be
    read). One GROUP BY over the batch's new lines, joined to their requests by primary key."""
    lines = ImportRow.objects.filter(batch_id=batch_id, outcome=ImportRow.Outcome.NEW, handle__isnull=False)
    return Tally.of(dict(lines.values_list("request__status").annotate(n=Count("pk")).order_by()))


@dataclass(frozen=True)
class LeftOut:
    """The lines of an import that import nothing (invalid, or conflicting), how many and why."""

    by_outcome: dict[str, int]
    reasons: list[tuple[str, int]]  # the commonest invalid-line reasons
    file_conflicts: int  # conflicting lines over a handle the file cites for several records

    @property
    def count(self) -> int:
        return sum(self.by_outcome.values())

    def sentence(self) -> str:
        if not self.count:
            return ""
        parts = [f"{n:,} {outcome}" for outcome, n in sorted(self.by_outcome.items()) if n]
        text = f"{counted(self.count, 'line')} left out: {', '.join(parts)}."
        if self.file_conflicts:
            text += (f" {self.file_conflicts:,} of the conflicting lines cite a handle the file gives to several "
                     "records: choose which keeps it on the import's conflicts page.")
        if self.reasons:
            text += " Commonest reasons: " + "; ".join(f"{reason} ({n:,}x)" for reason, n in self.reasons) + "."
        return text


def import_left_out(batch_id: int, reasons: int = 3) -> LeftOut:
    rows = ImportRow.objects.filter(batch_id=batch_id, outcome__in=LEFT_OUT)
    by_outcome = dict(rows.values_list("outcome").annotate(n=Count("pk")).order_by())
    common = list(rows.filter(outcome=ImportRow.Outcome.INVALID).values_list("reason").annotate(n=Count("pk"))
                  .order_by("-n", "reason")[:reasons]) if by_outcome.get(ImportRow.Outcome.INVALID) else []
    conflicts = ImportRow.objects.filter(batch_id=batch_id).file_conflicts().count() \
        if by_outcome.get(ImportRow.Outcome.CONFLICT) else 0
    return LeftOut(by_outcome=by_outcome, reasons=common, file_conflicts=conflicts)


def import_requests(batch_id: int) -> QuerySet[HandleRequest]:
    return HandleRequest.objects.filter(pk__in=ImportRow.objects.filter(batch_id=batch_id, request__isnull=False)
                                        .values("request_id"))


def reconcile_schedule() -> Any:  # a django_q Schedule or None (django-q2 has no types)
    """The django-q2 schedule that reconciles every prefix nightly (made by migration), if still there."""
    from django_q.models import Schedule

    return Schedule.objects.filter(func="handles.repair.tasks.reconcile_all_prefixes").first()


# --- Reconciliation and repair -------------------------------------------------------------------------
REPAIR_ACTIONS: dict[str, str] = {
    Kind.MISSING: "Create it on the server with our URL",
    Kind.URL_DIFFERS: "Update the server's URL to ours",
    Kind.TOMBSTONE_DRIFT: "Point it at its tombstone page",
    Kind.DELETED_ON_SERVER: "Delete it from the server (our record stays)",
    Kind.UNREADABLE: "Read it again (verify)",
    Kind.ORPHAN: "Adopt it: record it here with the server's URL (and its asset, if known), then verify",
}


@dataclass
class RepairPlan:
    """The dry run of a repair: what would be queued, per class, before anything is."""

    counts: dict[str, int]
    sample: list[ReconciliationRow]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def lines(self) -> list[tuple[str, str, int]]:
        return [(Kind(kind).label, REPAIR_ACTIONS[kind], n) for kind, n in sorted(self.counts.items()) if n]


def repair_plan(run: ReconciliationRun, *, kinds: list[str] | None = None, row_ids: list[int] | None = None,
                sample: int = 50) -> RepairPlan:
    rows = ReconciliationRow.objects.filter(run=run).to_repair(kinds=kinds or [], row_ids=row_ids or [])
    counts = dict(rows.values_list("kind").annotate(n=Count("pk")).order_by())
    return RepairPlan(counts=counts, sample=list(rows.select_related("handle", "asset").order_by("kind", "pk")[:sample]))


def repair_verification(run: ReconciliationRun) -> dict[str, int]:
    """The state of the requests a run's repairs queued: only `success` is verified on the server."""
    return dict(ReconciliationRow.objects.filter(run=run, repair_request__isnull=False)
                .values_list("repair_request__status").annotate(n=Count("pk")).order_by())


def _repair_job_rows(job_id: int) -> QuerySet[ReconciliationRow]:
    return ReconciliationRow.objects.filter(repair_job_id=job_id, repair_request__isnull=False)


def repair_job_tally(job_id: int) -> Tally:
    """The requests one repair queued, by status (several repairs can work on one reconciliation)."""
    return Tally.of(dict(_repair_job_rows(job_id).values_list("repair_request__status").annotate(n=Count("pk"))
                         .order_by()))


def repair_job_requests(job_id: int) -> QuerySet[HandleRequest]:
    return HandleRequest.objects.filter(pk__in=_repair_job_rows(job_id).values("repair_request_id"))


# --- Assets with several handles -------------------------------------------------------------------------
def assets_with_several_handles() -> QuerySet[Asset]:
    return Asset.objects.annotate(handle_count=Count("handles")).filter(handle_count__gt=1)


@dataclass
class SiblingHandle:
    handle: Handle
    vendor: bool
    last_request: HandleRequest | None


def asset_handles(asset: Asset) -> list[SiblingHandle]:
    """An asset's handles (a few), primary first, each with its vendor flag and latest request."""
    handles = list(Handle.objects.filter(asset=asset).select_related("prefix").order_by("-is_primary", "pk"))
    matchers = {h.prefix_id: vendor_matcher(h.prefix) for h in handles}
    return [SiblingHandle(h, matchers[h.prefix_id](h.suffix), h.requests.order_by("-pk").first()) for h in handles]
