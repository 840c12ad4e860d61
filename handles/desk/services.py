"""Writes to the desk's models, and the bulk actions that call the per-handle services.

A bulk action changes each handle through handles.services (one lock, one version bump, one
HandleRequest per handle), never with a bulk UPDATE: the history and the queue must see every change.
Small selections run in the request (bulk_apply); large ones become a BulkJob that a django-q2 task
works through in chunks (bulk_job_run_slice), recording one BulkJobItem per handle in the same
transaction as the change, so a job resumed after a crash neither repeats nor skips a handle. A job that
queued requests then verifies them: it is done only once the server confirmed each (bulk_jobs_settle,
called by the queue through handles.jobs), else incomplete.
"""

from __future__ import annotations

import bisect
import logging
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from handles import jobs
from handles import services as handle_services
from handles.desk import selectors, tasks
from handles.desk.filters import DESK, InvalidFilter
from handles.desk.models import BulkJob, BulkJobItem, Collection
from handles.exceptions import HandleServiceError, HandleStateError
from handles.models import Handle, HandleRequest
from handles.selectors import failed_requests, open_failures_of, with_signature
from handles.services.common import User, user_of

logger = logging.getLogger(__name__)
Kind = BulkJob.Kind
Outcome = BulkJobItem.Outcome
JState = jobs.JobState


# --- Collections ----------------------------------------------------------------------------------
@transaction.atomic
def collection_save(*, collection: Collection) -> Collection:
    collection.full_clean()
    collection.save()
    return collection


@transaction.atomic
def collection_delete(*, collection: Collection) -> None:
    """A collection is only a rule: deleting it leaves every asset and handle as it was."""
    Collection.objects.filter(pk=collection.pk).delete()


# --- One action on one handle -----------------------------------------------------------------------
@dataclass(frozen=True)
class ItemResult:
    outcome: str
    message: str = ""
    request: HandleRequest | None = None
    before: str = ""
    after: str = ""


def rewrite_url(url: str, find: str, replace: str) -> str:
    """The find-and-replace rule: every occurrence, case-sensitive (URL paths are case-sensitive)."""
    return url.replace(find, replace) if find else url


def _validate_parameters(kind: str, parameters: dict[str, Any]) -> None:
    if kind == Kind.REDIRECT_RULE and not parameters.get("find"):
        raise HandleServiceError("Give the text to find in the URLs.", code="find_required")
    if kind == Kind.TOMBSTONE and not (parameters.get("reason") or "").strip():
        raise HandleServiceError("Give the reason for withdrawing the handles; the tombstone page shows it.",
                                 code="reason_required")


def _apply(kind: str, obj: Handle | HandleRequest, parameters: dict[str, Any], actor: User, via: str) -> ItemResult:
    """Run one service for one object. A refusal (the handle's state does not allow it) is `skipped`;
    invalid input (e.g. the rewritten URL is not a valid URL) is `failed`. Either leaves it unchanged."""
    if kind == Kind.RETRY:
        if not isinstance(obj, HandleRequest):
            raise HandleServiceError("Only a request can be retried.", code="invalid_kind")
        return ItemResult(Outcome.OK, request=handle_services.request_retry(request=obj, actor=actor))
    if not isinstance(obj, Handle):
        raise HandleServiceError(f"A {kind} job acts on handles, not requests.", code="invalid_kind")
    if kind == Kind.REDIRECT_RULE:
        # Read the URL under the row lock the service is about to take, so the rule rewrites what is there now.
        current = Handle.objects.select_for_update().get(pk=obj.pk).target_url
        rewritten = rewrite_url(current, parameters["find"], parameters.get("replace", ""))
        if rewritten == current:
            return ItemResult(Outcome.SKIPPED, f"The URL does not contain {parameters['find']!r}.", before=current)
        request = handle_services.handle_redirect(handle=obj, target_url=rewritten, actor=actor, via=via)
        return ItemResult(Outcome.OK, request=request, before=current, after=rewritten)
    before = obj.resolver_target
    if kind == Kind.TOMBSTONE:
        request = handle_services.handle_tombstone(handle=obj, reason=parameters["reason"], actor=actor, via=via,
                                                   successor_url=parameters.get("successor_url", ""))
    elif kind == Kind.RESTORE:
        request = handle_services.handle_restore(handle=obj, actor=actor, via=via)
    elif kind == Kind.DELETE:
        request = handle_services.handle_delete(handle=obj, reason=parameters.get("reason", ""), actor=actor,
                                                via=via)
    elif kind == Kind.VERIFY:
        request = handle_services.handle_verify(handle=obj, actor=actor, via=via)
    else:
        raise HandleServiceError(f"Unknown bulk action {kind!r}.", code="invalid_kind")
    return ItemResult(Outcome.OK, request=request, before=before, after=request.url)


def bulk_apply_one(*, kind: str, obj: Handle | HandleRequest, parameters: dict[str, Any], actor: User = None,
                   via: str = "admin") -> ItemResult:
    try:
        with transaction.atomic():
            return _apply(kind, obj, parameters, actor, via)
    except HandleStateError as exc:
        return ItemResult(Outcome.SKIPPED, exc.message)
    except HandleServiceError as exc:
        return ItemResult(Outcome.FAILED, exc.message)


def bulk_apply(*, kind: str, objects: Iterable[Handle | HandleRequest], parameters: dict[str, Any] | None = None,
               actor: User = None, via: str = "admin") -> list[tuple[Handle | HandleRequest, ItemResult]]:
    """A small selection, in the request: each object in its own transaction, like a job's items."""
    parameters = parameters or {}
    _validate_parameters(kind, parameters)
    return [(obj, bulk_apply_one(kind=kind, obj=obj, parameters=parameters, actor=actor, via=via))
            for obj in objects]


# --- Selections -------------------------------------------------------------------------------------
def _request_selection(selection: dict[str, Any]) -> QuerySet:
    if "ids" in selection:
        return HandleRequest.objects.filter(pk__in=selection["ids"], status=HandleRequest.Status.ERROR)
    filters = selection.get("filters", {})
    prefix = filters.get("prefix")
    requests = failed_requests(
        prefix_id=int(prefix) if str(prefix or "").isdigit() else None,
        since=parse_datetime(filters["since"]) if filters.get("since") else None,
        until=parse_datetime(filters["until"]) if filters.get("until") else None,
    )
    if filters.get("handle_ids") is not None:
        requests = open_failures_of(Handle.objects.filter(pk__in=filters["handle_ids"]))
    elif filters.get("handle_filters") is not None:
        handles = DESK.parse(filters["handle_filters"]).queryset()
        requests = open_failures_of(handles)
    if filters.get("signature"):
        requests = with_signature(requests, filters["signature"])
    return requests


def selection_queryset(*, kind: str, selection: dict[str, Any], parameters: dict[str, Any]) -> QuerySet:
    """The objects a job works on, re-read chunk by chunk as the job goes (keyset on the primary key)."""
    if kind == Kind.RETRY:
        return _request_selection(selection)
    handles: QuerySet[Handle]
    if "ids" in selection:
        handles = Handle.objects.filter(pk__in=selection["ids"])
    else:
        handles = DESK.parse(selection.get("filters", {})).queryset()
    if kind == Kind.REDIRECT_RULE:
        handles = selectors.redirect_rule_matches(handles, parameters["find"])
    return handles.select_related("prefix")


def _frozen_ids(job: BulkJob) -> list[int] | None:
    """The handles a job acts on, fixed when it was confirmed (None: a job that re-reads its filter)."""
    if job.on_requests or "ids" not in job.selection:
        return None
    return sorted({int(pk) for pk in job.selection["ids"]})


NO_LONGER_MATCHES = "No longer matches the job's selection"


def _frozen_chunk(job: BulkJob, ids: list[int], cursor: int) -> tuple[list[int], list[Handle], set[int] | None]:
    """The next ids of a frozen selection after `cursor`, their handles, and which of them still match the
    filter the selection was made with and a find-and-replace rule's text (None: no filter, no rule)."""
    start = bisect.bisect_right(ids, cursor)
    chunk_ids = ids[start:start + settings.HANDLES_DESK_JOB_CHUNK]
    handles = list(Handle.objects.select_related("prefix").filter(pk__in=chunk_ids).order_by("pk"))
    filters = job.selection.get("filters")
    if not filters and job.kind != Kind.REDIRECT_RULE:
        return chunk_ids, handles, None
    matching = DESK.parse(filters or {}).queryset(Handle.objects.filter(pk__in=chunk_ids))
    if job.kind == Kind.REDIRECT_RULE:
        matching = selectors.redirect_rule_matches(matching, job.parameters["find"])
    return chunk_ids, handles, set(matching.values_list("pk", flat=True))


# --- Bulk jobs --------------------------------------------------------------------------------------
@transaction.atomic
def bulk_job_create(*, kind: str, selection: dict[str, Any], parameters: dict[str, Any] | None = None,
                    description: str = "", actor: User = None) -> BulkJob:
    """Record a job and hand it to the task queue once the transaction commits."""
    parameters = parameters or {}
    if kind not in Kind.values:
        raise HandleServiceError(f"Unknown bulk action {kind!r}.", code="invalid_kind")
    if not ("ids" in selection or "filters" in selection):
        raise HandleServiceError("A job needs a selection: ids or filters.", code="invalid_selection")
    _validate_parameters(kind, parameters)
    filters = selection.get("filters") or {}
    handle_filters = filters.get("handle_filters") if kind == Kind.RETRY else filters
    if handle_filters:
        try:
            DESK.parse(handle_filters)
        except InvalidFilter as exc:  # never a job over more handles than were asked for
            raise HandleServiceError(str(exc), code="invalid_selection") from None
    job = BulkJob(kind=kind, selection=selection, parameters=parameters, description=description[:500],
                  created_by=user_of(actor))
    try:
        job.full_clean()
    except ValidationError as exc:
        raise HandleServiceError(" ".join(exc.messages), code="invalid") from exc
    job.save()
    transaction.on_commit(partial(tasks.enqueue_bulk_job, job.pk))
    return job


def bulk_job_cancel(*, job: BulkJob, actor: User = None) -> BulkJob:
    """Ask a job to stop after its current chunk. What it already did stays done (and in its report)."""
    job = BulkJob.objects.get(pk=job.pk)
    if job.finished:
        raise HandleStateError(f"{job} is already {job.get_state_display().lower()}.")
    if job.state == JState.VERIFYING:
        raise HandleStateError(f"{job} has queued every change; the worker is verifying them on the server, "
                               "and there is nothing left to cancel.")
    return jobs.cancel(BULK_RUNNER, job.pk)


def bulk_jobs_mark_enqueued(job_ids: list[int], *, now: datetime | None = None) -> None:
    BulkJob.objects.filter(pk__in=job_ids).update(enqueued_at=now or timezone.now())


def bulk_jobs_stalled(*, now: datetime | None = None) -> list[int]:
    """Jobs to hand to a task again (handles.jobs.stalled): a lease ran out, or a queued job's task seems lost."""
    return jobs.stalled(BULK_RUNNER, now=now)


def _lease_seconds() -> float:
    return jobs.lease_seconds()


def _claim(job_id: int, now: datetime) -> uuid.UUID | None:
    return jobs.claim(BULK_RUNNER, job_id, now=now)


def _recount(job: BulkJob) -> Counter:
    """Counters from the items themselves: exact after a crash between a chunk's items and its counters."""
    counts = job.items.outcome_counts()
    BulkJob.objects.filter(pk=job.pk).update(progress_done=sum(counts.values()), counts=counts)
    return Counter(counts)


def _record_progress(work: jobs.Slice, counts: Counter) -> None:
    """The slice's running counts (it alone writes them while it holds the lease), with its chunk's items."""
    work.save(progress_done=sum(counts.values()), counts=dict(counts),
              lease_until=timezone.now() + timedelta(seconds=jobs.lease_seconds()), updated_at=timezone.now())


def _process(job: BulkJob, obj: Handle | HandleRequest) -> str:
    """One object: the change and its item row commit together, or neither does."""
    via = f"job:{job.pk}"
    with transaction.atomic():
        result = bulk_apply_one(kind=job.kind, obj=obj, parameters=job.parameters, actor=job.created_by, via=via)
        handle = obj.handle if isinstance(obj, HandleRequest) else obj
        BulkJobItem.objects.create(
            job=job, key=obj.pk, handle_id=handle.pk, full_handle=handle.full_handle, outcome=result.outcome,
            message=result.message, before=result.before[:2000], after=result.after[:2000], request=result.request)
    return result.outcome


def _skip(job: BulkJob, handle: Handle, message: str) -> str:
    BulkJobItem.objects.create(job=job, key=handle.pk, handle_id=handle.pk, full_handle=handle.full_handle,
                               outcome=Outcome.SKIPPED, message=message)
    return Outcome.SKIPPED


def bulk_job_run_slice(job_id: int, *, now: datetime | None = None) -> str:
    """Work on a job for up to HANDLES_DESK_JOB_SLICE_SECONDS, chunk by chunk (handles.jobs.run_slice).

    Returns the job's state once every object is processed ("verifying" while the server confirms the
    requests it queued; "done" or "incomplete" if they have all finished already, or "done" if it queued
    none), "cancelled", "failed", "continue" (the caller hands the rest to a new task) or "busy" (another
    task holds the job, or it is not waiting for work).
    """
    return jobs.run_slice(BULK_RUNNER, job_id, now=now)


def _bulk_job_work(job: BulkJob, work: jobs.Slice) -> str:
    """One slice: each object's change and its item commit together, so the cursor is the last item."""
    job = BulkJob.objects.select_related("created_by").get(pk=job.pk)
    objects = selection_queryset(kind=job.kind, selection=job.selection, parameters=job.parameters)
    if job.on_requests:
        objects = objects.select_related("handle__prefix")
    frozen = _frozen_ids(job)
    if job.progress_total is None:
        BulkJob.objects.filter(pk=job.pk).update(
            progress_total=len(frozen) if frozen is not None else objects.count())
    counts = _recount(job)
    cursor = job.items.aggregate(last=Max("key"))["last"] or 0
    while True:
        if work.cancel_requested():
            return jobs.CONTINUE  # the runner ends it cancelled at this boundary
        still = None
        if frozen is not None:
            chunk_ids, chunk, still = _frozen_chunk(job, frozen, cursor)
        else:
            chunk = list(objects.filter(pk__gt=cursor).order_by("pk")[: settings.HANDLES_DESK_JOB_CHUNK])
            chunk_ids = [obj.pk for obj in chunk]
        if not chunk_ids:
            work.save(progress_total=Coalesce("progress_done", 0))
            if not job.items.filter(request__isnull=False).exists():
                work.save(state=JState.DONE, finished_at=timezone.now())  # all skipped or failed: nothing to verify
                return JState.DONE
            work.save(state=JState.VERIFYING, finished_at=None, error="")
            return bulk_job_settle(job.pk).state  # its requests may all have finished already
        for obj in chunk:
            if still is not None and obj.pk not in still:
                counts[_skip(job, obj, f"{NO_LONGER_MATCHES} ({job.description}): it changed after the job "
                                       "was confirmed, and was left unchanged.")] += 1
            else:
                counts[_process(job, obj)] += 1
        cursor = chunk_ids[-1]
        _record_progress(work, counts)
        if work.over():
            return jobs.CONTINUE


# --- Verification: a job is done only when the server confirmed each request it queued ---------------
def bulk_jobs_settle() -> int:
    """This app's settler (registered in apps.py, called by the queue; see handles.jobs): settle every
    verifying job. One query on the status index when none is verifying."""
    verifying = list(BulkJob.objects.filter(state=JState.VERIFYING).values_list("pk", flat=True))
    return sum(bulk_job_settle(pk).finished for pk in verifying)


def _record_verification(job: BulkJob, tally: jobs.Tally) -> list[str]:
    job.updated_at = timezone.now()  # the job page's "last change"; save(update_fields) leaves auto_now alone
    return ["updated_at"]


BULK_JOBS = jobs.JobKind(jobs=BulkJob.objects.all(), tally=selectors.bulk_job_tally,
                         requests=selectors.bulk_job_requests, record=_record_verification)


BULK_RUNNER = jobs.Runner(
    name="bulk", label="bulk job", model=BulkJob, work=_bulk_job_work,
    budget=lambda: settings.HANDLES_DESK_JOB_SLICE_SECONDS)


def bulk_job_settle(job_id: int) -> BulkJob:
    """Done once the server confirmed each request the job queued, incomplete once every request has
    finished and some failed (see handles.jobs.settle_job)."""
    return jobs.settle_job(BULK_JOBS, job_id)


def bulk_job_retry_failed(*, job: BulkJob, actor: User = None) -> int:
    """Retry the failed requests of a verifying or incomplete job (fresh attempts, handed to the queue);
    it verifies again. Returns how many."""
    return jobs.retry_failed(BULK_JOBS, job.pk, retry=lambda request_ids: handle_services.requests_retry_bulk(
        request_ids=request_ids, actor=actor))
