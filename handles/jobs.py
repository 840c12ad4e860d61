"""Jobs that queue HandleRequests (imports, repairs, bulk jobs) succeed only once the server confirmed them.

Such a job does not end when its requests are queued: it waits in a *verifying* state until every request
has finished, then settles as done (every request verified on the server) or incomplete (some failed).

The core app pushes the requests but does not know the apps whose jobs queue them. Each of those apps
registers a settler here from its AppConfig.ready(); the queue calls settle_all() when a push task finds
nothing more to do, and the minute sweep calls it as the safety net.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass

from django.db import models, transaction
from django.db.models import Count, QuerySet
from django.utils import timezone

from handles.exceptions import HandleStateError
from handles.labels import counted
from handles.models import ErrorSignature, HandleRequest
from handles.notify import hooks as notify_hooks

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


def commonest_error(requests: QuerySet[HandleRequest]) -> tuple[str, int] | None:
    """The most frequent error among the failed ones of these requests (compared with the handle's name,
    quoted values and URLs taken out, so one outage is one error): one request's own words for it, and
    how many requests it hit."""
    failed = requests.filter(status=RStatus.ERROR).annotate(signature=ErrorSignature()).order_by()
    top = failed.values("signature").annotate(n=Count("pk")).order_by("-n", "signature").first()
    if top is None:
        return None
    example = failed.filter(signature=top["signature"]).order_by("pk").values_list("error", flat=True).first()
    return example or top["signature"], top["n"]


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
VERIFYING, INCOMPLETE = "verifying", "incomplete"  # the same stored values in every job model


@dataclass(frozen=True)
class JobKind:
    """How one kind of job is verified: its rows, its state field, where its requests are, and what it
    records besides the tally (`record(job, tally)` sets fields and returns their names)."""

    jobs: QuerySet
    state_field: str
    tally: Callable[[int], Tally]
    requests: Callable[[int], QuerySet[HandleRequest]]
    done: str
    noun: str = "change"
    unpushed_note: str = ""
    record: Callable[[models.Model, Tally], list[str]] = lambda job, tally: []


def settle_job(kind: JobKind, job_id: int) -> models.Model:
    """Count the job's requests by status (one GROUP BY) under the job's row lock, so two settles of one job
    run one after the other and the later one sees every finished request. Still under way: the tally
    moves the progress bar (verified of all). All finished: done, or incomplete with the reason."""
    with transaction.atomic():
        job = kind.jobs.select_for_update().get(pk=job_id)
        if getattr(job, kind.state_field) != VERIFYING:
            return job
        counted = kind.tally(job_id)
        job.verification = counted.as_dict()
        fields = ["verification"]
        if not counted.under_way:
            setattr(job, kind.state_field, INCOMPLETE if counted.failed else kind.done)
            job.error = failure_summary(counted, kind.requests(job_id), noun=kind.noun,
                                        unpushed_note=kind.unpushed_note) if counted.failed else ""
            job.finished_at = timezone.now()
            fields += [kind.state_field, "error", "finished_at"]
        fields += kind.record(job, counted)
        job.save(update_fields=fields)
        notify_hooks.job_settled(job)
    return job


def retry_failed(kind: JobKind, job_id: int, *, retry: Callable[[list[int]], int]) -> int:
    """Give a job's failed requests fresh attempts (`retry`, handles.services.requests_retry_bulk) and put the
    job back to verifying, in one transaction under its row lock: a settle in between cannot find it
    finished with nothing under way. Returns how many were retried."""
    with transaction.atomic():
        job = kind.jobs.select_for_update().get(pk=job_id)
        if getattr(job, kind.state_field) not in (VERIFYING, INCOMPLETE):
            shown = getattr(job, f"get_{kind.state_field}_display")().lower()
            raise HandleStateError(f"{job} is {shown}; only the failed requests of a job that is verifying or "
                                   "incomplete are retried.")
        retried = retry(list(kind.requests(job_id).filter(status=RStatus.ERROR).values_list("pk", flat=True)))
        if not retried:
            raise HandleStateError(f"{job} has no failed requests to retry.")
        setattr(job, kind.state_field, VERIFYING)
        job.error, job.finished_at = "", None
        job.save(update_fields=[kind.state_field, "error", "finished_at"])
    settle_job(kind, job_id)  # the tally (and what `record` keeps) now counts them as queued
    return retried
