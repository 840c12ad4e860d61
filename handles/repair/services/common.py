"""What every job of the repair app shares: the actor, chunks, progress, cancel, the verification record."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any, TypeVar

from handles import jobs
from handles import services as core
from handles.models import HandleRequest
from handles.repair.models import (
    ImportBatch,
    ReconciliationRow,
    RepairJob,
)
from handles.services.common import User

logger = logging.getLogger(__name__)
Kind = ReconciliationRow.Kind
Op = HandleRequest.Op
Step = ImportBatch.Step


CHUNK = 2000
T = TypeVar("T")


def chunked(iterable: Iterable[T], size: int = CHUNK) -> Iterator[list[T]]:
    iterator = iter(iterable)
    while chunk := list(islice(iterator, size)):
        yield chunk


def job_progress(job_model: type[jobs.Job], job_id: int, *, done: int | None = None, total: int | None = None,
                 message: str | None = None, counts: dict[str, int] | None = None) -> None:
    """Progress of a running job, committed at once so the status view sees it."""
    fields: dict[str, Any] = {}
    if done is not None:
        fields["progress_done"] = done
    if total is not None:
        fields["progress_total"] = total
    if message is not None:
        fields["message"] = message[:500]
    if counts is not None:
        fields["counts"] = counts
    job_model._default_manager.filter(pk=job_id).update(**fields)


def _internal_error(exc: Exception) -> str:
    return f"Internal error ({exc.__class__.__name__}: {exc}). Nothing was half-applied; the log has details."


def job_cancel(*, kind: str, job_id: int, actor: User = None) -> jobs.Job:
    """Staff stop a job (import, reconcile, repair, health): at once if no task has started it, else at
    the end of the slice under way (handles.jobs.cancel). What it did stays done."""
    return jobs.cancel(jobs.runner(kind), job_id)



# Applied or recorded, while the worker pushes the requests and reads each back.
VERIFYING_MESSAGE = "Verifying on the server"


def _record_verification(job: ImportBatch | RepairJob, tally: jobs.Tally) -> list[str]:
    """What an import or repair keeps beside the tally: its progress bar (verified of all) and message."""
    job.progress_done, job.progress_total = tally.success, tally.total
    messages: dict[str, str] = {jobs.VERIFYING: VERIFYING_MESSAGE,
                                jobs.INCOMPLETE: "Some changes were not verified on the server"}
    job.message = messages.get(job.state, "Verified on the server")
    return ["progress_done", "progress_total", "message"]


def _retry(request_ids: list[int], actor: User) -> int:
    return core.requests_retry_bulk(request_ids=request_ids, actor=actor)
