"""Jobs that queue HandleRequests (imports, repairs, bulk jobs) succeed only once the server confirmed them.

Such a job does not end when its requests are queued: it waits in a *verifying* state until every request
has finished, then settles as done (every request verified on the server) or incomplete (some failed).

The core app pushes the requests but does not know the apps whose jobs queue them. Each of those apps
registers a settler here from its AppConfig.ready(); the queue calls settle_all() when a push task finds
nothing more to do, and the minute sweep calls it as the safety net.

Every kind of job is a model inheriting `Job` (one state machine, `JobState`, and the same field names for
progress, counts, verification, who and when, error and lease), and its work runs through one runner
(`Runner`, `run_slice`): see docs/jobs.md.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from django.conf import settings
from django.contrib.admin.decorators import display as admin_display
from django.db import models, transaction
from django.db.models import F, Q, QuerySet, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from handles.exceptions import HandleStateError
from handles.labels import counted
from handles.models import HandleRequest
from handles.notify import hooks as notify_hooks
from handles.selectors import commonest_error

logger = logging.getLogger(__name__)

Settler = Callable[[], int]
_settlers: list[Settler] = []

RStatus = HandleRequest.Status


def register_settler(settler: Settler) -> None:
    """Called from an app's ready(). A settler settles its app's verifying jobs and returns how many it
    finished; with none verifying it must cost one indexed query."""
    if settler not in _settlers:
        _settlers.append(settler)


def settle_all() -> int:
    """Settle every verifying job of every app; returns how many finished. A settler that fails is logged
    and skipped: settling is bookkeeping that the next call repeats, and must never break a push."""
    finished = 0
    for settler in list(_settlers):
        try:
            finished += settler()
        except Exception:
            logger.exception("settling verifying jobs failed in %s", getattr(settler, "__qualname__", settler))
    return finished


@dataclass(frozen=True)
class Tally:
    """What became of a job's changes. `success` alone means verified on the server; `error` failed for
    good (until retried); `queued` and `running` are under way; `unpushed` are changes that never got a
    request (an import's lines whose handle could not be read from the server)."""

    success: int = 0
    error: int = 0
    queued: int = 0
    running: int = 0
    unpushed: int = 0

    @classmethod
    def of(cls, by_status: dict[str | None, int]) -> Tally:
        """From counts by request status; the None key counts changes without a request."""
        return cls(success=by_status.get(RStatus.SUCCESS, 0), error=by_status.get(RStatus.ERROR, 0),
                   queued=by_status.get(RStatus.QUEUED, 0), running=by_status.get(RStatus.RUNNING, 0),
                   unpushed=by_status.get(None, 0))

    @property
    def total(self) -> int:
        return self.success + self.error + self.queued + self.running + self.unpushed

    @property
    def under_way(self) -> int:
        return self.queued + self.running

    @property
    def failed(self) -> int:
        return self.error + self.unpushed

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def failure_summary(tally: Tally, requests: QuerySet[HandleRequest], *, noun: str = "change",
                    unpushed_note: str = "") -> str:
    """Why a settled job is incomplete, in words: how many of its changes failed and the commonest error."""
    parts = [f"{tally.failed:,} of {counted(tally.total, noun)} {'was' if tally.failed == 1 else 'were'} not verified "
             "on the server."]
    if tally.error:
        top = commonest_error(requests)
        parts.append(f"{tally.error:,} failed" + (f"; the commonest error ({top[1]:,}×), for example: {top[0].rstrip('.')}."
                                                   if top else "."))
        parts.append("Retry the failed requests once the cause is fixed.")
    if tally.unpushed:
        parts.append(f"{tally.unpushed:,} {unpushed_note or 'were never pushed.'}")
    return " ".join(parts)


# --- Settling and retrying one job: the mechanism the apps' services share ------------------------------
class JobState(models.TextChoices):
    """The one state machine of every kind of job. A job that changes the server through the request queue
    (bulk job, import, repair) is verifying until the server confirmed each request, then done or
    incomplete; a job that only reads the server (reconciliation, health check) goes from running to done."""

    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    VERIFYING = "verifying", "Verifying on the server"
    DONE = "done", "Done"
    INCOMPLETE = "incomplete", "Incomplete: some changes failed on the server"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ENDED = (JobState.DONE, JobState.INCOMPLETE, JobState.FAILED, JobState.CANCELLED)  # a job in these waits for nothing
WAITING = (JobState.QUEUED, JobState.RUNNING)  # a runner may claim the job: it waits for, or is doing, its work

VERIFYING, INCOMPLETE, DONE = JobState.VERIFYING, JobState.INCOMPLETE, JobState.DONE


# The job model a kind of job or a runner works on (ImportBatch, RepairJob, BulkJob...).
J = TypeVar("J", bound="Job")


@dataclass(frozen=True)
class JobKind(Generic[J]):
    """How one kind of job is verified: its rows, where its requests are, and what it records besides the
    tally (`record(job, tally)` sets fields and returns their names)."""

    jobs: QuerySet[J]
    tally: Callable[[int], Tally]
    requests: Callable[[int], QuerySet[HandleRequest]]
    noun: str = "change"
    unpushed_note: str = ""
    record: Callable[[J, Tally], list[str]] = lambda job, tally: []


def settle_job(kind: JobKind[J], job_id: int) -> J:
    """Count the job's requests by status (one GROUP BY) under the job's row lock, so two settles of one job
    run one after the other and the later one sees every finished request. Still under way: the tally
    moves the progress bar (verified of all). All finished: done, or incomplete with the reason."""
    with transaction.atomic():
        job = kind.jobs.select_for_update().get(pk=job_id)
        if job.state != VERIFYING:
            return job
        counted = kind.tally(job_id)
        job.verification = counted.as_dict()
        fields = ["verification"]
        if not counted.under_way:
            job.state = INCOMPLETE if counted.failed else DONE
            job.error = failure_summary(counted, kind.requests(job_id), noun=kind.noun,
                                        unpushed_note=kind.unpushed_note) if counted.failed else ""
            job.finished_at = timezone.now()
            fields += ["state", "error", "finished_at"]
        fields += kind.record(job, counted)
        job.save(update_fields=fields)
        notify_hooks.job_settled(job)
    return job


def retry_failed(kind: JobKind[Any], job_id: int, *, retry: Callable[[list[int]], int]) -> int:
    """Give a job's failed requests fresh attempts (`retry`, handles.services.requests_retry_bulk) and put the
    job back to verifying, in one transaction under its row lock: a settle in between cannot find it
    finished with nothing under way. Returns how many were retried."""
    with transaction.atomic():
        job = kind.jobs.select_for_update().get(pk=job_id)
        if job.state not in (VERIFYING, INCOMPLETE):
            shown = job.get_state_display().lower()
            raise HandleStateError(f"{job} is {shown}; only the failed requests of a job that is verifying or "
                                   "incomplete are retried.")
        retried = retry(list(kind.requests(job_id).filter(status=RStatus.ERROR).values_list("pk", flat=True)))
        if not retried:
            raise HandleStateError(f"{job} has no failed requests to retry.")
        job.state = VERIFYING
        job.error, job.finished_at = "", None
        job.save(update_fields=["state", "error", "finished_at"])
    settle_job(kind, job_id)  # the tally (and what `record` keeps) now counts them as queued
    return retried


# --- One runner for every kind of long work ------------------------------------------------------------
# A job's work runs in slices, each one django-q2 task that stops taking new work after a time budget
# (HANDLES_JOB_SLICE_SECONDS, a fraction of HANDLES_TASK_TIMEOUT). A slice holds the job's lease; its
# effects and its checkpoint commit together (or its per-item effects are idempotent), so a slice killed by
# the task timeout or a dead worker is resumed by the minute sweep where it stopped, once its lease runs out.
CONTINUE = "continue"  # a slice's outcome: more work remains (the task hands it to a new task)
BUSY = "busy"  # another task holds the job's lease, or the job is not waiting for work
CANCELLED, FAILED = JobState.CANCELLED, JobState.FAILED


class LeaseLost(Exception):
    """The slice no longer holds the job (its lease ran out and another task took it): roll back."""


VERIFICATION_HELP = ("What became of the job's requests (handles.jobs.Tally): success is verified on the server; "
                     "error, queued, running; unpushed: lines without a request.")


class Job(models.Model):
    """What every kind of job keeps, under the same names: its state, its progress (progress_done of
    progress_total), its counts, the verification tally of its requests (where it queues any), who started
    it and when, its error; and what the runner keeps: the lease of the task working on it, where its work
    stopped, and whether staff asked it to stop."""

    state = models.CharField(max_length=10, choices=JobState.choices, default=JobState.QUEUED)
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    counts = models.JSONField(default=dict, blank=True)
    verification = models.JSONField(default=dict, blank=True, help_text=VERIFICATION_HELP)
    message = models.CharField(max_length=500, blank=True, help_text="What the job is doing now.")
    error = models.TextField(blank=True, help_text="Why the job itself stopped, or which of its changes failed.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")
    requested_via = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    lease_token = models.UUIDField(null=True, blank=True, editable=False)
    lease_until = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    checkpoint = models.JSONField(default=dict, blank=True, editable=False,
                                  help_text="Where the work stopped: the next slice starts there.")
    slice_attempts = models.PositiveSmallIntegerField(
        default=0, editable=False, help_text="Slices started since the last one that finished (a slice killed "
                                             "again and again fails the job instead of looping).")

    # A kind's own words for some states (e.g. a repair's running is "Queuing the repairs").
    state_labels: dict[str, str] = {}

    class Meta:
        abstract = True

    # Django's name (noqa: N802): get_state_display(), which Django adds to each model, says state_label.
    def _get_FIELD_display(self, field: models.Field[Any, Any]) -> str:  # noqa: N802
        if field.name == "state":
            return self.state_label
        # django-stubs does not declare this private hook of Model, which every get_FOO_display() calls.
        return super()._get_FIELD_display(field)  # type: ignore[misc]

    @property
    @admin_display(description="State", ordering="state")
    def state_label(self) -> str:
        if self.state not in JobState.values:
            return str(self.state)
        return self.state_labels.get(self.state) or JobState(self.state).label

    @property
    def finished(self) -> bool:
        return self.state in ENDED

    @property
    def percent(self) -> int | None:
        if not self.progress_total:
            return None
        return min(100, round(100 * self.progress_done / self.progress_total))


@dataclass(frozen=True)
class Runner(Generic[J]):
    """One kind of long work. `work(job, slice)` does one slice: it returns CONTINUE while work remains
    (checking slice.over() between units, after at least one), or, once the work is done, the job's new
    state (which it has saved itself, e.g. verifying or done)."""

    name: str
    label: str
    model: type[J]
    work: Callable[[J, Slice], str]
    claimable: Q = Q(state__in=WAITING)  # the job waits for, or is in the middle of, its work
    budget: Callable[[], float] = lambda: settings.HANDLES_JOB_SLICE_SECONDS
    defer: tuple[str, ...] = ()  # fields a slice never needs (an import's file)

    @property
    def jobs(self) -> QuerySet[J]:
        return self.model._default_manager.defer(*self.defer)

    def state_of(self, job: J) -> str:
        return job.state


_runners: dict[str, Runner[Any]] = {}


def register_runner(runner: Runner[Any]) -> None:
    """Called from an app's ready(): the task, the sweep and `cancel_job` find the kind by its name."""
    _runners[runner.name] = runner


def runner(name: str) -> Runner[Any]:
    try:
        return _runners[name]
    except KeyError:
        raise HandleStateError(f"Unknown kind of job {name!r}; known: {', '.join(sorted(_runners))}.") from None


def runners() -> list[Runner[Any]]:
    return list(_runners.values())


def lease_seconds() -> float:
    """A slice cannot outlive the task timeout (the cluster kills it): a lease a little longer is free once
    the task surely ended."""
    return settings.HANDLES_TASK_TIMEOUT * 1.5 + 5.0


@dataclass
class Slice:
    """The running slice, as its work sees it."""

    runner: Runner[Any]
    job_id: int
    token: uuid.UUID
    deadline: float

    def over(self) -> bool:
        """The budget is spent: finish the unit at hand, save the checkpoint, return CONTINUE."""
        return time.monotonic() >= self.deadline

    def time_left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def save(self, checkpoint: dict | None = None, **fields: Any) -> None:
        """Record progress (and where to start next) while holding the lease. Call it inside the
        transaction of the work it records: both commit, or neither. Raises LeaseLost."""
        if checkpoint is not None:
            fields["checkpoint"] = checkpoint
        fields.setdefault("slice_attempts", 0)  # progress: a slice killed after this was not in vain
        if not self.runner.jobs.filter(pk=self.job_id, lease_token=self.token).update(**fields):
            raise LeaseLost(f"{self.runner.label} {self.job_id}")

    def cancel_requested(self) -> bool:
        return self.runner.jobs.filter(pk=self.job_id, cancel_requested=True).exists()


def _touch(runner: Runner[Any], changes: dict[str, Any], now: datetime) -> dict[str, Any]:
    if any(f.name == "updated_at" for f in runner.model._meta.concrete_fields):
        changes["updated_at"] = now
    return changes


def claim(runner: Runner[Any], job_id: int, *, now: datetime | None = None) -> uuid.UUID | None:
    """Take the job's lease (a conditional UPDATE): only one task works on a job at a time, and a lease
    that ran out (a dead worker, a task killed at its timeout) can be taken by the next."""
    now = now or timezone.now()
    token = uuid.uuid4()
    changes: dict[str, Any] = {"lease_token": token, "lease_until": now + timedelta(seconds=lease_seconds()),
                               "started_at": Coalesce("started_at", Value(now)),
                               "slice_attempts": F("slice_attempts") + 1, "state": "running"}
    taken = runner.jobs.filter(runner.claimable, pk=job_id).filter(
        Q(lease_until__isnull=True) | Q(lease_until__lt=now)).update(**_touch(runner, changes, now))
    return token if taken else None


def release(runner: Runner[Any], job_id: int, token: uuid.UUID | None, **changes: Any) -> bool:
    """Give up the lease, with whatever else changes (a final state)."""
    now = timezone.now()
    return bool(runner.jobs.filter(pk=job_id, lease_token=token).update(
        **_touch(runner, {"lease_token": None, "lease_until": None, **changes}, now)))


def _end(runner: Runner[Any], job_id: int, token: uuid.UUID | None, state: str, error: str = "",
         message: str = "") -> None:
    changes: dict[str, Any] = {"state": state, "error": error, "finished_at": timezone.now(), "message": message}
    release(runner, job_id, token, **changes)


def run_slice(runner: Runner[Any], job_id: int, *, now: datetime | None = None) -> str:
    """One slice of a job: CONTINUE (the caller hands the rest to a new task), the job's state once its
    work is done (or cancelled, or failed), or BUSY (another task holds it, or it waits for nothing)."""
    token = claim(runner, job_id, now=now)
    if token is None:
        return BUSY
    job = runner.jobs.get(pk=job_id)
    if job.cancel_requested:
        _end(runner, job_id, token, CANCELLED, message="Cancelled by staff")
        return CANCELLED
    if job.slice_attempts > settings.HANDLES_JOB_MAX_ATTEMPTS:
        _end(runner, job_id, token, FAILED, error=(
            f"Stopped: {job.slice_attempts - 1} slices in a row did not finish (the worker died, or a slice outran "
            f"the task timeout, HANDLES_TASK_TIMEOUT = {settings.HANDLES_TASK_TIMEOUT:g} s)."))
        return FAILED
    work = Slice(runner, job_id, token, time.monotonic() + runner.budget())
    try:
        outcome = runner.work(job, work)
    except LeaseLost:
        return BUSY  # the job went on in another task; what this one did in its last transaction rolled back
    except Exception as exc:  # a bug or a lost database must stop the job visibly, not leave it "running"
        logger.exception("%s %s failed", runner.label, job_id)
        _end(runner, job_id, token, FAILED, error=f"{exc.__class__.__name__}: {exc}")
        return FAILED
    if outcome == CONTINUE and work.cancel_requested():
        _end(runner, job_id, token, CANCELLED, message="Cancelled by staff")
        return CANCELLED
    release(runner, job_id, token, slice_attempts=0)
    return outcome


def run_inline(runner: Runner[J], job_id: int, *, on_slice: Callable[[J], None] | None = None,
               poll: float = 1.0) -> J:
    """Every slice in this process (a command without --background, the tests), one after another. If a
    worker holds the job (the sweep handed it out), wait for that worker instead."""
    while True:
        outcome = run_slice(runner, job_id)
        job = runner.jobs.get(pk=job_id)
        if on_slice:
            on_slice(job)
        if outcome == CONTINUE:
            continue
        if outcome != BUSY or not runner.jobs.filter(runner.claimable, pk=job_id).exists():
            return job
        time.sleep(poll)


def stalled(runner: Runner[Any], *, now: datetime | None = None) -> list[int]:
    """Jobs to hand to a task again: a lease ran out (the worker died, or the task was killed at its
    timeout), or a job's task seems lost. A duplicate hand-over is harmless: one task holds the lease."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.HANDLES_REENQUEUE_AFTER_SECONDS)
    return list(runner.jobs.filter(runner.claimable).filter(
        Q(lease_until__lt=now) | Q(lease_until__isnull=True) & (Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=stale))
    ).order_by("pk").values_list("pk", flat=True)[:100])


def mark_enqueued(runner: Runner[Any], job_ids: list[int]) -> None:
    runner.jobs.filter(pk__in=job_ids).update(enqueued_at=timezone.now())


def cancel(runner: Runner[J], job_id: int) -> J:
    """Staff ask a job to stop: it stops at its next slice boundary (a job no task has started stops at
    once). What it already did stays done, and its page says so."""
    with transaction.atomic():
        job = runner.jobs.select_for_update().get(pk=job_id)
        if not runner.jobs.filter(runner.claimable, pk=job_id).exists():
            shown = job.get_state_display().lower()
            raise HandleStateError(f"{job} is {shown}; only a job that is waiting for or doing its work can be "
                                   "cancelled.")
        changes: dict[str, Any] = {"cancel_requested": True}
        if job.lease_until is None and (job.started_at is None or job.state == "queued"):
            # No task has started it: it stops at once (a task that comes later finds it cancelled).
            changes.update({"state": CANCELLED, "finished_at": timezone.now(), "lease_token": None,
                            "lease_until": None, "message": "Cancelled by staff"})
        else:
            changes["message"] = "Cancelling: stops after the slice under way"
        runner.jobs.filter(pk=job_id).update(**changes)
    return runner.jobs.get(pk=job_id)


# A job (re)started for new work: no lease, no checkpoint, no cancel request left from before.
FRESH: dict[str, Any] = {"lease_token": None, "lease_until": None, "checkpoint": {}, "slice_attempts": 0,
                         "cancel_requested": False}


def wait(runner: Runner[J], job_id: int, *, timeout: float, poll: float = 1.0,
         on_change: Callable[[J], None] | None = None) -> J:
    """Poll until the job's work ends (verifying is settled on the way: settling is idempotent)."""
    deadline = time.monotonic() + timeout
    shown = None
    while True:
        job = runner.jobs.get(pk=job_id)
        state = runner.state_of(job)
        if state == VERIFYING:
            settle_all()
            job = runner.jobs.get(pk=job_id)
            state = runner.state_of(job)
        seen = (state, getattr(job, "step", None), job.progress_done)
        if on_change and seen != shown:
            shown = seen
            on_change(job)
        if state in ENDED or time.monotonic() >= deadline:
            return job
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
