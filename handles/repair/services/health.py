"""Resolution health checks: start, record, prune, finish, and repairs from the health page."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from django.db import transaction
from django.utils import timezone

from handles import services as core
from handles.exceptions import HandleServiceError
from handles.models import Handle, HandleRequest
from handles.notify import hooks as notify_hooks
from handles.repair import selectors, tasks
from handles.repair.models import (
    NOT_ON_SERVER,
    HandleCheck,
    HealthOutcome,
    HealthRun,
    ImportBatch,
    JobState,
    ReconciliationRow,
)
from handles.repair.services.common import CHUNK
from handles.services.common import User, user_of

logger = logging.getLogger(__name__)
Kind = ReconciliationRow.Kind
Op = HandleRequest.Op
Step = ImportBatch.Step


# --- Resolution health --------------------------------------------------------------------------------
HEALTH_FILTERS = ("prefix_ids", "source_system", "status", "handle_ids", "via_proxy", "title_check", "limit")


@transaction.atomic
def health_start(*, filters: dict[str, Any], actor: User = None, via: str = "admin",
                 enqueue: bool = True) -> HealthRun:
    unknown = set(filters) - set(HEALTH_FILTERS)
    if unknown:
        raise HandleServiceError(f"Unknown health check filter {sorted(unknown)[0]!r}.", code="invalid_filter")
    run = HealthRun.objects.create(filters=filters, created_by=user_of(actor), requested_via=via,
                                   message="Waiting for a worker" if enqueue else "Starting",
                                   enqueued_at=timezone.now())
    if enqueue:
        transaction.on_commit(partial(tasks.enqueue_job, "health", run.pk))
    return run


HEALTH_REPAIR_LIMIT = 10_000  # handles per repair from the health page; more: narrow the filters


@transaction.atomic
def health_repair(*, checks: list[HandleCheck], action: str, actor: User = None, via: str = "health") -> int:
    """Act on handles a health check found not resolving correctly, through the request queue: `repair`
    pushes our record (a create where the server lacked the handle, else an update), `verify` reads the
    server's record and compares it with ours. Returns how many requests were queued."""
    if action not in ("repair", "verify"):
        raise HandleServiceError(f"Unknown action {action!r}.", code="invalid_action")
    if not checks:
        raise HandleServiceError("No handle chosen.", code="nothing_chosen")
    if len(checks) > HEALTH_REPAIR_LIMIT:
        raise HandleServiceError(f"{len(checks):,} handles chosen; at most {HEALTH_REPAIR_LIMIT:,} at a time. "
                                 "Narrow the filters.", code="too_many")
    ops = {}
    for check in checks:
        if action == "verify":
            ops[check.handle_id] = Op.VERIFY
        elif check.handle.status not in (Handle.Status.ACTIVE, Handle.Status.PENDING, Handle.Status.TOMBSTONED):
            raise HandleServiceError(f"{check.handle} is {check.handle.status}; it cannot be repaired from here.",
                                     code="invalid_state")
        else:
            missing = check.detail == NOT_ON_SERVER
            ops[check.handle_id] = Op.CREATE if missing else Op.UPDATE
    queued = core.handles_queue_bulk(ops=list(ops.items()), actor=actor, via=via,
                                     reason=f"{action} from health check #{checks[0].run_id}")
    transaction.on_commit(partial(tasks.enqueue_request_ids, list(queued.values())))
    return len(queued)


def health_begin(run_id: int, *, total: int) -> HealthRun:
    HealthRun.objects.filter(pk=run_id).update(state=JobState.RUNNING, started_at=timezone.now(), progress_done=0,
                                               progress_total=total, counts={}, error="",
                                               message="Following each handle")
    return HealthRun.objects.get(pk=run_id)


def health_record(checks: list[HandleCheck]) -> None:
    """Keep a slice's results. One row per handle per run: a handle already recorded in this run (a slice
    that ran twice) keeps its first result."""
    if checks:
        HandleCheck.objects.bulk_create(checks, ignore_conflicts=True, batch_size=CHUNK)


def health_prune(run_id: int) -> int:
    """Remove an old run's per-handle results; the run and its counts stay (the trend's point)."""
    with transaction.atomic():
        removed, _ = HandleCheck.objects.filter(run_id=run_id).delete()
        HealthRun.objects.filter(pk=run_id).update(message="Results pruned (HANDLES_HEALTH_KEEP_RUNS)")
    return removed


def health_finish(run_id: int, *, counts: dict[str, int], error: str = "") -> HealthRun:
    HealthRun.objects.filter(pk=run_id).update(
        state=JobState.FAILED if error else JobState.DONE, finished_at=timezone.now(), counts=counts, error=error,
        message="" if error else "Done")
    run = HealthRun.objects.get(pk=run_id)
    # The outcomes whose growth staff hear of, in the words of the notification.
    watched = {outcome.value: outcome.label.lower()
               for outcome in (HealthOutcome.BROKEN, HealthOutcome.WRONG_OBJECT)}
    notify_hooks.health_run_finished(run, previous=None if error else selectors.previous_health_run(run),
                                     watched=watched)
    return run
