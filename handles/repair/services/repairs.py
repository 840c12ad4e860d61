"""Reconciliations and the repairs chosen from them; settling this app's verifying imports and repairs."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime
from functools import partial

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet, Value
from django.utils import timezone

from handles import jobs
from handles import services as core
from handles.exceptions import HandleServiceError
from handles.models import Handle, HandleRequest, Prefix
from handles.notify import hooks as notify_hooks
from handles.repair import selectors, tasks
from handles.repair.models import (
    ImportBatch,
    JobState,
    ReconciliationRow,
    ReconciliationRun,
    RepairJob,
)
from handles.repair.services.common import (
    CHUNK,
    VERIFYING_MESSAGE,
    _record_verification,
    _retry,
)
from handles.repair.services.imports import import_batch_settle
from handles.services.common import User, user_of
from handles.validators import ascii_upper

logger = logging.getLogger(__name__)
Kind = ReconciliationRow.Kind
Op = HandleRequest.Op
Step = ImportBatch.Step


# --- Reconciliation ---------------------------------------------------------------------------------
@transaction.atomic
def reconciliation_start(*, prefix: Prefix, actor: User = None, via: str = "admin",
                         enqueue: bool = True) -> ReconciliationRun:
    """Record a reconciliation and hand it to the task queue (enqueue=False: the caller runs it itself)."""
    # enqueued_at: a job run in the caller's process is not "lost" to the sweep while it starts.
    run = ReconciliationRun.objects.create(prefix=prefix, created_by=user_of(actor), requested_via=via,
                                           message="Waiting for a worker" if enqueue else "Starting",
                                           enqueued_at=timezone.now())
    if enqueue:
        transaction.on_commit(partial(tasks.enqueue_job, "reconcile", run.pk))
    return run


def reconciliation_begin(run_id: int, *, total: int) -> ReconciliationRun:
    ReconciliationRow.objects.filter(run_id=run_id).delete()
    ReconciliationRun.objects.filter(pk=run_id).update(
        state=JobState.RUNNING, started_at=timezone.now(), progress_done=0, progress_total=total, counts={},
        error="", message="Reading the server's listing")
    return ReconciliationRun.objects.select_related("prefix").get(pk=run_id)


def reconciliation_record(run_id: int, *, rows: list[ReconciliationRow]) -> None:
    """Keep a page's findings. ignore_conflicts: a listing page that shifted repeats names, harmlessly."""
    if rows:
        ReconciliationRow.objects.bulk_create(rows, ignore_conflicts=True, batch_size=CHUNK)


def reconciliation_finish(run_id: int, *, counts: dict[str, int], error: str = "") -> ReconciliationRun:
    ReconciliationRun.objects.filter(pk=run_id).update(
        state=JobState.FAILED if error else JobState.DONE, finished_at=timezone.now(), counts=counts,
        error=error, message="" if error else "Done")
    run = ReconciliationRun.objects.select_related("prefix").get(pk=run_id)
    drift = {str(label): run.counts[value] for value, label in ReconciliationRow.Kind.choices
             if run.counts.get(value)}
    notify_hooks.reconciliation_finished(run, drift=drift)
    return run


# --- Repairs ---------------------------------------------------------------------------------------
# What a repair asks of the server for each class of drift. Orphans are adopted: recorded here with the
# server's URL (and the asset that URL belongs to), then verified.
REPAIR_OPS: dict[str, str] = {Kind.MISSING: Op.CREATE, Kind.URL_DIFFERS: Op.UPDATE, Kind.TOMBSTONE_DRIFT: Op.UPDATE,
              Kind.DELETED_ON_SERVER: Op.DELETE, Kind.UNREADABLE: Op.VERIFY, Kind.ORPHAN: "adopt"}


@transaction.atomic
def repair_start(*, run: ReconciliationRun, kinds: list[str] | None = None, row_ids: list[int] | None = None,
                 actor: User = None, via: str = "admin", enqueue: bool = True) -> RepairJob:
    kinds, row_ids = list(kinds or []), [int(pk) for pk in row_ids or []]
    if not kinds and not row_ids:
        raise HandleServiceError("Choose the classes or the rows to repair.", code="nothing_chosen")
    if unknown := set(kinds) - set(REPAIR_OPS):
        raise HandleServiceError(f"Unknown class {sorted(unknown)[0]!r}.", code="invalid_kind")
    if not run.finished or run.state != JobState.DONE:
        raise HandleServiceError("Repairs follow a finished reconciliation.", code="invalid_state")
    job = RepairJob.objects.create(run=run, kinds=kinds, row_ids=row_ids, created_by=user_of(actor),
                                   requested_via=via, message="Waiting for a worker", enqueued_at=timezone.now())
    if enqueue:
        transaction.on_commit(partial(tasks.enqueue_job, "repair", job.pk))
    return job


def repair_rows(job: RepairJob) -> QuerySet[ReconciliationRow]:
    return ReconciliationRow.objects.filter(run_id=job.run_id).to_repair(kinds=job.kinds, row_ids=job.row_ids)


def repair_execute(job_id: int) -> RepairJob:
    """Queue the repairs here, slice after slice (the `reconcile --repair --apply` command; the worker runs
    the same slices as tasks)."""
    return jobs.run_inline(REPAIR_RUNNER, job_id)


def _repair_slice(job: RepairJob, work: jobs.Slice) -> str:
    """One slice of a repair (handles.jobs.Runner.work): a chunk per transaction, the chunk's requests, its
    rows marked repaired and the job's counts together, so a resumed repair neither repeats nor skips a row."""
    job = RepairJob.objects.select_related("run__prefix", "created_by").get(pk=job.pk)
    if not job.checkpoint.get("begun"):
        total = repair_rows(job).count()
        with transaction.atomic():
            work.save({"begun": True}, progress_done=0, progress_total=total, counts={}, message="Queuing repairs")
        job.counts, job.progress_done = {}, 0
    counts: Counter[str] = Counter(job.counts)
    done = job.progress_done
    try:
        while chunk := list(repair_rows(job).select_related("handle").order_by("pk")[:settings.HANDLES_REPAIR_CHUNK]):
            with transaction.atomic():
                counts.update(_repair_chunk(job, chunk))
                done += len(chunk)
                work.save(progress_done=done, counts=dict(counts))
            if work.over():
                return jobs.CONTINUE
    except HandleServiceError as exc:
        return _repair_end(job.pk, counts, exc.message).state
    return _repair_end(job.pk, counts, "").state


def _repair_end(job_id: int, counts: Counter[str], error: str) -> RepairJob:
    """A repair that failed on its own stays failed; one that queued requests verifies them (settled at
    once: they may all have finished already); one that queued nothing is done."""
    queued = sum(n for outcome, n in counts.items() if outcome != "skipped")
    if error or not queued:
        RepairJob.objects.filter(pk=job_id).update(
            state=JobState.FAILED if error else JobState.DONE, finished_at=timezone.now(), counts=dict(counts),
            error=error, message="" if error else "Nothing to queue: every chosen row was skipped")
        return RepairJob.objects.get(pk=job_id)
    RepairJob.objects.filter(pk=job_id).update(state=JobState.VERIFYING, counts=dict(counts), error="",
                                               message=VERIFYING_MESSAGE)
    return repair_job_settle(job_id)


def repair_job_settle(job_id: int) -> RepairJob:
    """A verifying repair is done once each of its requests is verified on the server, incomplete once
    every request has finished and some failed."""
    return jobs.settle_job(REPAIRS, job_id)


def repair_job_retry_failed(*, job: RepairJob, actor: User = None) -> int:
    """Retry the repair's failed requests (fresh attempts); it verifies again. Returns how many."""
    return jobs.retry_failed(REPAIRS, job.pk, retry=partial(_retry, actor=actor))


def _repair_chunk(job: RepairJob, chunk: list[ReconciliationRow]) -> Counter[str]:
    now = timezone.now()
    counts: Counter[str] = Counter()
    ops: dict[int, str] = {}
    row_of: dict[int, ReconciliationRow] = {}
    orphans: list[ReconciliationRow] = []
    busy = set(HandleRequest.objects.unfinished().filter(
        handle_id__in=[r.handle_id for r in chunk if r.handle_id]).values_list("handle_id", flat=True))
    for row in chunk:
        row.repair_job_id = job.pk
        op = REPAIR_OPS[row.kind]
        if op == "adopt":
            orphans.append(row)
            continue
        handle = row.handle
        if handle is None:
            row.note, row.repaired_at = "Skipped: the handle no longer exists here.", now
        elif (op == Op.DELETE) != (handle.status == Handle.Status.DELETED) and op != Op.VERIFY:
            row.note, row.repaired_at = f"Skipped: its status is now {handle.status}; reconcile again.", now
        elif handle.pk in busy and op != Op.VERIFY:
            row.note, row.repaired_at = "Skipped: a request for this handle is already queued.", now
        else:
            ops[handle.pk] = op
            row_of[handle.pk] = row
            continue
        counts["skipped"] += 1
    queued = core.handles_queue_bulk(ops=list(ops.items()), actor=job.created_by,
                                     via=job.requested_via or "repair",
                                     reason=f"repair #{job.pk} of reconciliation #{job.run_id}") if ops else {}
    for handle_id, request_id in queued.items():
        row = row_of[handle_id]
        row.repair_request_id, row.repaired_at = request_id, now
        row.note = f"Queued {ops[handle_id]} (request #{request_id})."
        counts[ops[handle_id]] += 1
    request_ids = list(queued.values())
    request_ids += _adopt_orphans(job, orphans, counts, now)
    ReconciliationRow.objects.bulk_update(chunk, ["handle", "repair_request", "repaired_at", "note", "repair_job"])
    if request_ids:
        transaction.on_commit(partial(tasks.enqueue_request_ids, request_ids))
    return counts


def _adopt_orphans(job: RepairJob, orphans: list[ReconciliationRow], counts: Counter[str],
                   now: datetime) -> list[int]:
    """Record orphans here with the URL the server gives, linked to the asset that URL belongs to. The
    asset's primary handle is left as it is: a vendor handle becomes primary only of an asset without one."""
    if not orphans:
        return []
    prefix = job.run.prefix
    known = set(Handle.objects.filter(prefix=prefix, suffix_key__in=[_suffix_key(r) for r in orphans])
                .values_list("suffix_key", flat=True))
    with_primary = set(Handle.objects.filter(asset_id__in=[r.asset_id for r in orphans if r.asset_id],
                                             is_primary=True).values_list("asset_id", flat=True))
    items, adopted = [], []
    for row in orphans:
        key = _suffix_key(row)
        if not row.server_url:
            row.note, row.repaired_at = "Skipped: the server's record has no URL to adopt.", now
        elif key in known:
            row.note, row.repaired_at = "Skipped: this handle is now recorded here.", now
        else:
            primary = row.asset_id is not None and row.asset_id not in with_primary
            if primary:
                with_primary.add(row.asset_id)
            items.append(core.ImportItem(prefix_id=prefix.pk, suffix=row.full_handle.split("/", 1)[1],
                                         target_url=row.server_url, asset_id=row.asset_id, is_primary=primary))
            adopted.append(row)
            known.add(key)
            continue
        counts["skipped"] += 1
    if not items:
        return []
    created = core.handles_import_bulk(items=items, adopt=True, actor=job.created_by,
                                       via=job.requested_via or "repair",
                                       reason=f"adopted by repair #{job.pk} of reconciliation #{job.run_id}")
    for row in adopted:
        handle_id, request_id = created[(prefix.pk, _suffix_key(row))]
        row.handle_id, row.repair_request_id, row.repaired_at = handle_id, request_id, now
        row.note = f"Adopted; verification queued (request #{request_id})."
        counts["adopt"] += 1
    return [rid for _, rid in created.values() if rid]


def _suffix_key(row: ReconciliationRow) -> str:
    return ascii_upper(row.full_handle.split("/", 1)[1])


# --- Verification: an import or repair is done only when the server confirmed each request ----------
def jobs_settle() -> int:
    """This app's settler (registered in apps.py, called by the queue; see handles.jobs): settle every
    verifying import and repair. One query on two small partial indexes when none is verifying."""
    # order_by(): no model ordering inside the UNION, which SQLite (make run's database) refuses.
    verifying = list(RepairJob.objects.filter(state=JobState.VERIFYING).annotate(kind=Value("repair"))
                     .order_by().values_list("pk", "kind")
                     .union(ImportBatch.objects.filter(state=JobState.VERIFYING).annotate(kind=Value("import"))
                            .order_by().values_list("pk", "kind")))
    finished = 0
    for pk, kind in verifying:
        finished += (repair_job_settle(pk) if kind == "repair" else import_batch_settle(pk)).finished
    return finished


REPAIR_RUNNER = jobs.Runner(name="repair", label="repair", model=RepairJob, work=_repair_slice)
REPAIRS = jobs.JobKind(jobs=RepairJob.objects.all(), tally=selectors.repair_job_tally,
                       requests=selectors.repair_job_requests, noun="repair",
                       record=_record_verification)
