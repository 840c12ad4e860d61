"""What the rest of the project calls, one line at each place where something worth telling happens.

Each hook turns its caller's object into an event (handles.notify.services.emit) and never raises: a
notification problem is logged and the caller carries on. Events are recorded after the caller's
transaction commits.
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, ParamSpec

from django.conf import settings

from handles.labels import counted
from handles.models import Prefix
from handles.notify import services
from handles.notify.models import Kind

logger = logging.getLogger(__name__)
P = ParamSpec("P")
SAMPLE_LINES = 20


def never_raises(function: Callable[P, None]) -> Callable[P, None]:
    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            function(*args, **kwargs)
        except Exception:
            logger.exception("notification hook %s failed", function.__name__)

    return wrapper


@never_raises
def requests_failed(requests: Iterable[Any]) -> None:
    """Handle requests just finished (handles.services): those that ended in error wait for their prefix's
    digest, as one event per prefix and call (a batch of up to HANDLES_DRAIN_BATCH requests)."""
    by_prefix: dict[str, list[Any]] = defaultdict(list)
    for request in requests:
        if request.status == "error":
            by_prefix[request.full_handle.split("/", 1)[0]].append(request)
    for prefix, failed in by_prefix.items():
        lines = [f"#{r.pk} {r.op} {r.full_handle}: {(r.error or '').splitlines()[0][:300] if r.error else ''}"
                 for r in failed[:SAMPLE_LINES]]
        services.emit(Kind.REQUEST_ERRORS, prefix=prefix, subject=f"{counted(len(failed), 'request')} ended in error",
                      details="\n".join(lines), count=len(failed))


@never_raises
def reconciliation_finished(run: Any, *, drift: dict[str, int]) -> None:
    """A reconciliation ended (handles.repair.services): drift found, or the run failed. `drift`: how many
    handles drift in each way the run found, by the way's label (repair knows its kinds; notify does not)."""
    prefix = run.prefix
    url = services.admin_url("admin:handles_repair_reconciliationrun_change", run.pk)
    if run.error:
        services.emit(Kind.JOB, prefix=prefix, subject=f"Reconciliation of {prefix.prefix} failed",
                      details=f"{run.error}\n\n{url}")
        return
    if drift:
        total = sum(drift.values())
        lines = [f"{count} × {label}" for label, count in drift.items()]
        services.emit(Kind.DRIFT, prefix=prefix, subject=f"Reconciliation found {counted(total, 'drifting handle')} under "
                      f"{prefix.prefix}", details="\n".join([*lines, "", f"Review and repair: {url}"]), count=total)


@never_raises
def health_run_finished(run: Any, *, previous: Any | None, watched: dict[str, str]) -> None:
    """A resolution health check ended (handles.repair.services): it failed, its share of correct handles
    dropped by more than HANDLES_NOTIFY_HEALTH_DROP against `previous` (the last finished run over the same
    selection; None: nothing to compare with), or it found more handles of a `watched` outcome than that run
    (outcome -> how to say it, e.g. "broken"). Repair hands over these facts: notify knows none of its models."""
    url = services.admin_url("admin:handles_repair_healthrun_change", run.pk)
    prefix_ids = run.filters.get("prefix_ids") or []
    prefix = int(prefix_ids[0]) if len(prefix_ids) == 1 else None
    if run.error:
        services.emit(Kind.JOB, prefix=prefix, subject=f"{run} failed", details=f"{run.error}\n\n{url}")
        return
    if previous is None:
        return
    problems = []
    now_share, before_share = run.share_correct, previous.share_correct
    if now_share is not None and before_share is not None and before_share - now_share > settings.HANDLES_NOTIFY_HEALTH_DROP:
        problems.append(f"The share of correctly resolving handles fell from {before_share:.1%} to {now_share:.1%}.")
    for outcome, words in watched.items():
        more = run.counts.get(outcome, 0) - previous.counts.get(outcome, 0)
        if more > 0:
            problems.append(f"{more} more {words} {'handle' if more == 1 else 'handles'} than {previous} "
                            f"({run.counts.get(outcome, 0)} now).")
    if problems:
        services.emit(Kind.HEALTH, prefix=prefix, subject=f"{run}: resolution health got worse",
                      details="\n".join([*problems, "", url]))


@never_raises
def job_settled(job: Any) -> None:
    """A job that queued handle requests settled (handles.jobs.settle_job): tell if it ended incomplete."""
    if job.state != "incomplete":
        return
    prefix = getattr(job, "prefix", None) or getattr(getattr(job, "run", None), "prefix", None)
    services.emit(Kind.JOB, prefix=prefix, subject=f"{job} ended incomplete", details=job.error or "")


@never_raises
def prefix_auth_failed(*, prefix_id: int, error: str = "") -> None:
    """The Handle server refused our credentials for this prefix (the queue paused it, or the watchdog saw
    it): one alarm until it recovers, whoever noticed first (they share one condition)."""
    prefix = Prefix.objects.get(pk=prefix_id)
    services.condition_report(Kind.SERVER, key=services.auth_condition_key(prefix_id), failing=True, prefix=prefix,
                              subject=f"The Handle server of {prefix.prefix} refuses our credentials",
                              details=error or "Requests to it wait until the credentials work again.")


@never_raises
def prefix_auth_recovered(*, prefix_id: int) -> None:
    prefix = Prefix.objects.get(pk=prefix_id)
    services.condition_report(Kind.SERVER, key=services.auth_condition_key(prefix_id), failing=False, prefix=prefix,
                              subject=f"The Handle server of {prefix.prefix} accepts our credentials again",
                              details="Requests to it go out again.")
