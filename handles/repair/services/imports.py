"""Imports: presets, the upload, the dry run, the apply, the push, its verification, and conflicts."""

from __future__ import annotations

import hashlib
import logging
from functools import partial

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from handles import jobs
from handles import services as core
from handles.exceptions import HandleServiceError
from handles.labels import counted
from handles.models import Asset, Handle, HandleRequest, Prefix
from handles.repair import conflicts, importer, rules, selectors, tasks
from handles.repair.csvfile import CsvLayout, ImportFileError, decode, layout
from handles.repair.importer import ImportOptions, Verdict
from handles.repair.models import (
    MAPPING_FIELDS,
    ConflictResolution,
    ImportBatch,
    ImportMode,
    ImportPreset,
    ImportRow,
    JobState,
    ReconciliationRow,
)
from handles.repair.services.common import (
    CHUNK,
    VERIFYING_MESSAGE,
    _internal_error,
    _record_verification,
    _retry,
    chunked,
    job_progress,
)
from handles.services.common import User, user_of
from handles.validators import ascii_upper

logger = logging.getLogger(__name__)
Kind = ReconciliationRow.Kind
Op = HandleRequest.Op
Step = ImportBatch.Step


# --- Presets --------------------------------------------------------------------------------------
@transaction.atomic
def preset_save(*, preset: ImportPreset, actor: User = None) -> ImportPreset:
    if preset.url_template and (problem := rules.template_error(preset.url_template)):
        raise HandleServiceError(problem, code="invalid_template")
    preset.source_system = preset.source_system.strip().lower()
    if preset.created_by_id is None:
        preset.created_by = user_of(actor)
    preset.full_clean()
    preset.save()
    return preset


def _preset_from(batch: ImportBatch, name: str, actor: User) -> ImportPreset:
    preset = ImportPreset.objects.filter(name=name).first() or ImportPreset(name=name)
    for field in MAPPING_FIELDS:
        setattr(preset, f"{field}_column", batch.mapping.get(field, ""))
    preset.prefix, preset.source_system = batch.prefix, batch.source_system
    preset.url_template, preset.mode, preset.encoding = batch.url_template, batch.mode, batch.encoding
    preset.delimiter = batch.delimiter
    return preset_save(preset=preset, actor=actor)


# --- Imports --------------------------------------------------------------------------------------
def import_batch_create(*, file_name: str, content: bytes, encoding: str = "utf-8", delimiter: str = "auto",
                        preset: ImportPreset | None = None, actor: User = None, via: str = "admin") -> ImportBatch:
    """Keep an uploaded file once its header is readable. Raises ImportFileError for a file that is not."""
    if len(content) > settings.HANDLES_IMPORT_MAX_BYTES:
        raise ImportFileError(f"The file is {len(content):,} bytes; at most {settings.HANDLES_IMPORT_MAX_BYTES:,} "
                              "are accepted. Split it into smaller files.")
    if preset is not None:
        encoding = preset.encoding
        delimiter = delimiter if delimiter != "auto" else preset.delimiter
    csv_layout = layout(decode(content, encoding), delimiter, encoding)
    mapping = preset.mapping() if preset else importer.guess_mapping(csv_layout.header)
    return ImportBatch.objects.create(
        file_name=(file_name or "upload.csv")[:255], file_size=len(content),
        file_sha256=hashlib.sha256(content).hexdigest(), content=content, encoding=encoding,
        delimiter=csv_layout.delimiter, header=csv_layout.header,
        mapping={k: v for k, v in mapping.items() if v in csv_layout.header},
        prefix=preset.prefix if preset else None, source_system=preset.source_system if preset else "",
        url_template=preset.url_template if preset else "", mode=preset.mode if preset else ImportMode.ADOPT,
        preset=preset, created_by=user_of(actor), requested_via=via,
    )


@transaction.atomic
def import_batch_configure(*, batch: ImportBatch, mapping: dict[str, str], prefix: Prefix | None,
                           source_system: str = "", url_template: str = "", mode: str = ImportMode.ADOPT,
                           save_preset_as: str = "", actor: User = None) -> ImportBatch:
    """Set how the file is read. Refuses a mapping that cannot read it, with every reason at once."""
    batch = ImportBatch.objects.select_for_update().get(pk=batch.pk)
    if not batch.reconfigurable:
        raise HandleServiceError(f"Import #{batch.pk} is {batch.get_state_display().lower()}; it cannot be "
                                 "changed now.", code="invalid_state")
    options = ImportOptions(mapping=mapping, prefix=prefix, source_system=source_system.strip(),
                            url_template=url_template.strip())
    errors = importer.options_errors(options, batch.header)
    if mode not in ImportMode.values:
        errors.append(f"Unknown mode {mode!r}.")
    if errors:
        raise HandleServiceError(" ".join(errors), code="invalid_mapping")
    batch.mapping = {k: v for k, v in mapping.items() if v}
    batch.prefix, batch.source_system = prefix, options.source_system.lower()
    batch.url_template, batch.mode = options.url_template, mode
    batch.step, batch.state = Step.UPLOAD, JobState.DONE
    batch.save(update_fields=["mapping", "prefix", "source_system", "url_template", "mode", "step", "state"])
    if save_preset_as.strip():
        batch.preset = _preset_from(batch, save_preset_as.strip(), actor)
        batch.save(update_fields=["preset"])
    return batch


def _options(batch: ImportBatch) -> ImportOptions:
    return ImportOptions(mapping=batch.mapping, prefix=batch.prefix, source_system=batch.source_system,
                         url_template=batch.url_template)


@transaction.atomic
def import_batch_start_analysis(*, batch: ImportBatch, actor: User = None) -> ImportBatch:
    """Queue the dry run; the admin follows it on a progress bar."""
    batch = ImportBatch.objects.select_for_update().get(pk=batch.pk)
    if not batch.reconfigurable:
        raise HandleServiceError(f"Import #{batch.pk} is {batch.get_state_display().lower()}.", code="invalid_state")
    batch.step, batch.state, batch.error, batch.message = Step.ANALYSE, JobState.QUEUED, "", "Waiting for a worker"
    batch.progress_done = batch.progress_total = 0
    batch.started_at = batch.finished_at = None
    for field, value in jobs.FRESH.items():
        setattr(batch, field, value)
    batch.save(update_fields=["step", "state", "error", "message", "progress_done", "progress_total", "started_at",
                              "finished_at", *jobs.FRESH])
    transaction.on_commit(partial(tasks.enqueue_job, "import", batch.pk))
    return batch


IMPORT_ROW_COLUMNS = ["batch_id", "line", "handle_text", "prefix_id", "suffix", "suffix_key", "target_url",
                      "source_system", "external_id", "title", "outcome", "reason", "vendor", "primary", "handle_id"]


def _import_row(batch_id: int, v: Verdict) -> tuple:
    return (batch_id, v.line, v.handle_text[:600], v.prefix_id, v.suffix[:255], v.suffix_key[:255], v.target_url[:2000],
            v.source_system[:64], v.external_id[:255], v.title[:1000], v.outcome, v.reason[:1000], v.vendor,
            v.primary, v.handle_id)


def import_batch_analyse(batch_id: int) -> ImportBatch:
    """The dry run: classify every line and keep the per-line report. Writes nothing but the report.

    A failure (an unreadable file, a bug) leaves no partial report: the rows are removed and the import
    shows the reason.
    """
    # Claimed by a conditional UPDATE: a second delivery of the task, or a dry run of an applied import, stops.
    claimed = ImportBatch.objects.filter(pk=batch_id, applied_at__isnull=True).filter(
        Q(step__in=[Step.UPLOAD, Step.ANALYSE], state__in=[JobState.DONE, JobState.FAILED])
        | Q(step=Step.ANALYSE, state__in=jobs.WAITING)  # its slice's lease (handles.jobs) keeps a second task out
    ).update(step=Step.ANALYSE, state=JobState.RUNNING, started_at=timezone.now(), message="Reading the file",
             error="", counts={})
    batch = ImportBatch.objects.select_related("prefix").get(pk=batch_id)
    if not claimed:
        return batch
    try:
        ImportRow.objects.filter(batch_id=batch.pk).delete()
        if errors := importer.options_errors(_options(batch), batch.header):
            raise ImportFileError(" ".join(errors))
        analysis = importer.Analysis(
            decode(bytes(batch.content), batch.encoding),
            CsvLayout(header=batch.header, delimiter=batch.delimiter, encoding=batch.encoding), _options(batch),
            max_cell=settings.HANDLES_IMPORT_MAX_CELL, max_rows=settings.HANDLES_IMPORT_MAX_ROWS)
        for chunk in analysis.chunks(progress=partial(_import_progress, batch.pk)):
            with transaction.atomic():
                core.insert_rows(ImportRow, IMPORT_ROW_COLUMNS, [_import_row(batch.pk, v) for v in chunk])
        _apply_fixups(batch.pk, analysis)
    except ImportFileError as exc:
        return _import_failed(batch.pk, exc.message)
    except Exception as exc:
        logger.exception("dry run of import %s failed", batch.pk)
        return _import_failed(batch.pk, _internal_error(exc))
    rows = ImportRow.objects.filter(batch_id=batch.pk)
    counts = rows.outcome_counts()
    counts["rows"] = sum(counts.values())
    counts["vendor"] = rows.filter(vendor=True).count()
    ImportBatch.objects.filter(pk=batch.pk).update(
        state=JobState.DONE, analysed_at=timezone.now(), finished_at=timezone.now(), counts=counts,
        message=f"Dry run: {counted(counts['rows'], 'line')} classified", progress_done=counts["rows"],
        progress_total=counts["rows"])
    return ImportBatch.objects.get(pk=batch.pk)


@transaction.atomic
def _apply_fixups(batch_id: int, analysis: importer.Analysis) -> None:
    """Mark what the pass learned late: every line of a handle the file names with different targets is a
    conflict (the first one too), and a line that lost its asset's primary to a later line is not primary."""
    rows = ImportRow.objects.filter(batch_id=batch_id)
    for (prefix_id, suffix_key), lines in analysis.fixups.conflicts.items():
        rows.filter(prefix_id=prefix_id, suffix_key=suffix_key).update(
            outcome=ImportRow.Outcome.CONFLICT, reason=analysis.conflict_reason(lines), primary=False, handle=None)
    for chunk in chunked(analysis.fixups.not_primary):
        rows.filter(line__in=chunk).update(primary=False)


def _import_progress(batch_id: int, done: int, total: int, message: str) -> None:
    job_progress(ImportBatch, batch_id, done=done, total=total, message=message)


def _import_failed(batch_id: int, error: str) -> ImportBatch:
    ImportRow.objects.filter(batch_id=batch_id).delete()
    ImportBatch.objects.filter(pk=batch_id).update(state=JobState.FAILED, error=error, message="",
                                                   finished_at=timezone.now())
    return ImportBatch.objects.get(pk=batch_id)


@transaction.atomic
def import_batch_start_apply(*, batch: ImportBatch, actor: User = None) -> ImportBatch:
    batch = ImportBatch.objects.select_for_update().get(pk=batch.pk)
    if not batch.analysed:
        raise HandleServiceError(f"Import #{batch.pk} is {batch.get_state_display().lower()}; apply follows a "
                                 "finished dry run.", code="invalid_state")
    batch.step, batch.state, batch.error, batch.message = Step.APPLY, JobState.QUEUED, "", "Waiting for a worker"
    batch.progress_done = batch.progress_total = 0  # one transaction: no steps to count until it commits
    batch.created_by = batch.created_by or user_of(actor)
    batch.finished_at = None
    for field, value in jobs.FRESH.items():
        setattr(batch, field, value)
    batch.save(update_fields=["step", "state", "error", "message", "progress_done", "progress_total", "created_by",
                              "finished_at", *jobs.FRESH])
    transaction.on_commit(partial(tasks.enqueue_job, "import", batch.pk))
    return batch


def import_batch_apply(batch_id: int, *, actor: User = None, via: str = "", enqueue_push: bool = True) -> ImportBatch:
    """Record every `new` line in one transaction: all of them or, on any error, none.

    Adopt mode: the handles are recorded active and a verification of each is queued. Push mode: they are
    recorded pending; then a background job reads each from the server and queues a create, an update or
    a verification. Lines that were `same`, `conflict`, `invalid` or `duplicate` change nothing, so
    applying a file twice (or a second file with the same lines) changes nothing the second time.
    """
    try:
        with transaction.atomic():
            batch = ImportBatch.objects.select_for_update(of=("self",)).select_related("created_by").get(pk=batch_id)
            if batch.applied_at is not None or not (batch.analysed or batch.step == Step.APPLY
                                                    and batch.state in jobs.WAITING):
                return batch  # applied already (the task queue delivers at least once), or no dry run yet
            request_ids = _record_new_rows(batch, actor or batch.created_by, via or batch.requested_via or "import")
            push = batch.mode == ImportMode.PUSH and batch.counts.get(ImportRow.Outcome.NEW, 0) > 0
            batch.applied_at = timezone.now()
            batch.step = Step.PUSH if push else Step.APPLY
            if push:
                batch.state, batch.finished_at = JobState.RUNNING, None
                batch.message = "Reading each handle from the server"
            elif request_ids:  # applied, but done only once the server confirmed each handle
                batch.state, batch.finished_at = JobState.VERIFYING, None
                batch.message = VERIFYING_MESSAGE
                batch.verification = jobs.Tally(queued=len(request_ids)).as_dict()
                batch.progress_done, batch.progress_total = 0, len(request_ids)
            else:
                batch.state, batch.finished_at, batch.message = JobState.DONE, batch.applied_at, "Applied"
            batch.save(update_fields=["step", "state", "applied_at", "finished_at", "message", "verification",
                                      "progress_done", "progress_total"])
            if push and enqueue_push:  # the runner's own slice goes on with the push itself
                transaction.on_commit(partial(tasks.enqueue_job, "import", batch.pk))
            elif request_ids:
                transaction.on_commit(partial(tasks.enqueue_request_ids, request_ids))
    except HandleServiceError as exc:
        _apply_failed(batch_id, exc.message)
    except Exception as exc:
        logger.exception("apply of import %s failed", batch_id)
        _apply_failed(batch_id, _internal_error(exc))
    return ImportBatch.objects.get(pk=batch_id)


def _apply_failed(batch_id: int, error: str) -> None:
    """Back to the reviewed dry run, with the reason; the transaction left nothing behind."""
    ImportBatch.objects.filter(pk=batch_id, applied_at__isnull=True).update(
        step=Step.ANALYSE, state=JobState.DONE, error=error, message="Nothing was applied")


def _record_new_rows(batch: ImportBatch, actor: User, via: str) -> list[int]:
    new_rows = ImportRow.objects.filter(batch=batch, outcome=ImportRow.Outcome.NEW)
    prefix_ids = list(new_rows.values_list("prefix_id", flat=True).distinct())
    list(Prefix.objects.select_for_update().filter(pk__in=prefix_ids).order_by("pk"))  # one import per prefix
    adopt = batch.mode == ImportMode.ADOPT
    links: list[tuple[int, int, int | None]] = []
    fields = ("pk", "prefix_id", "suffix", "target_url", "source_system", "external_id", "title", "primary")
    for chunk in chunked(new_rows.order_by("line").values_list(*fields).iterator(chunk_size=CHUNK)):
        specs = [core.AssetSpec(source, external_id, title, url)
                 for _, _, _, url, source, external_id, title, _ in chunk if external_id]
        asset_ids, created = core.assets_get_or_create_bulk(specs) if specs else ({}, set())
        older = [pk for pk in asset_ids.values() if pk not in created]
        with_primary = set(Handle.objects.filter(asset_id__in=older, is_primary=True)
                           .values_list("asset_id", flat=True)) if older else set()
        items = []
        for _, prefix_id, suffix, target_url, source, external_id, _, primary in chunk:
            asset_id = asset_ids.get((source, external_id)) if external_id else None
            items.append(core.ImportItem(prefix_id, suffix, target_url, asset_id, primary and asset_id not in with_primary))
        created_handles = core.handles_import_bulk(items=items, adopt=adopt, actor=actor, via=via,
                                                   reason=f"import #{batch.pk} ({batch.file_name})")
        links.extend((row[0], *created_handles[(row[1], ascii_upper(row[2]))]) for row in chunk)
    _link_rows(links)  # one statement: a join over the whole batch beats one per chunk
    return [request_id for _, _, request_id in links if request_id]


def _link_rows(links: list[tuple[int, int, int | None]]) -> None:
    """Point each imported line at its handle and request: (row id, handle id, request id)."""
    db = transaction.get_connection()
    if db.vendor == "postgresql":
        with db.cursor() as cursor:
            cursor.execute(
                f"UPDATE {ImportRow._meta.db_table} AS r SET handle_id = v.handle_id, request_id = v.request_id "
                "FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS v(id, handle_id, request_id) "
                "WHERE r.id = v.id", [[r for r, _, _ in links], [h for _, h, _ in links], [q for _, _, q in links]])
        return
    rows = [ImportRow(pk=r, handle_id=h, request_id=q) for r, h, q in links]
    ImportRow.objects.bulk_update(rows, ["handle", "request"], batch_size=CHUNK)


def import_batch_queue_push(batch_id: int, ops: dict[int, str], *, actor: User = None) -> int:
    """Push mode, after reading the server: queue create (missing), update (other URL) or verify (same)
    for the imported handles, and link each line to its request."""
    with transaction.atomic():
        batch = ImportBatch.objects.select_related("created_by").get(pk=batch_id)
        queued = core.handles_queue_bulk(ops=list(ops.items()), actor=actor or batch.created_by,
                                         via=batch.requested_via or "import", reason=f"import #{batch.pk} (push)")
        rows = ImportRow.objects.filter(batch_id=batch_id, handle_id__in=list(queued)).values_list("pk", "handle_id")
        _link_rows([(pk, handle_id, queued[handle_id]) for pk, handle_id in rows])
        transaction.on_commit(partial(tasks.enqueue_request_ids, list(queued.values())))
    return len(queued)


UNREAD_NOTE = ("could not be read from the server and have no request yet: use \"Continue pushing\" when the "
               "server answers again.")
# Any state of the push: a worker that died mid-push leaves it running; a failed push can go on too.
CONTINUE_PUSH_STATES = tuple(JobState.values)


@transaction.atomic
def import_batch_continue_push(*, batch: ImportBatch, actor: User = None) -> ImportBatch:
    """Push mode, again: for the lines whose handle could not be read from the server last time."""
    batch = ImportBatch.objects.select_for_update().defer("content").get(pk=batch.pk)
    # Running too: a worker that died mid-push leaves it there; lines that have their request are skipped.
    if batch.mode != ImportMode.PUSH or batch.state not in CONTINUE_PUSH_STATES or batch.applied_at is None:
        raise HandleServiceError("Only an applied import in push mode can continue pushing.", code="invalid_state")
    batch.step, batch.state, batch.error, batch.message = Step.PUSH, JobState.QUEUED, "", "Waiting for a worker"
    batch.finished_at = None
    for field, value in jobs.FRESH.items():  # the push reads again every line still without a request
        setattr(batch, field, value)
    batch.save(update_fields=["step", "state", "error", "message", "finished_at", *jobs.FRESH])
    transaction.on_commit(partial(tasks.enqueue_job, "import", batch.pk))
    return batch


def import_batch_finish_push(batch_id: int, *, error: str = "") -> ImportBatch:
    """Every line is read and its request queued (or left unpushed with `error`): the import now waits for
    the server to confirm each handle. Settled at once, since the requests may all have finished by now."""
    ImportBatch.objects.filter(pk=batch_id).update(state=JobState.VERIFYING, error=error, finished_at=None,
                                                   message=VERIFYING_MESSAGE)
    batch = import_batch_settle(batch_id)
    if error and batch.finished and error not in batch.error:  # settled at once: keep why the push stopped
        batch.error = f"{batch.error} {error}".strip()
        ImportBatch.objects.filter(pk=batch_id).update(error=batch.error)
    return batch


def import_batch_settle(batch_id: int) -> ImportBatch:
    """A verifying import becomes applied once every handle is verified on the server, incomplete once
    every request has finished and some failed (or some lines could not be pushed)."""
    return jobs.settle_job(IMPORTS, batch_id)


def import_batch_retry_failed(*, batch: ImportBatch, actor: User = None) -> int:
    """Retry the import's failed requests (fresh attempts); it verifies again. Returns how many."""
    return jobs.retry_failed(IMPORTS, batch.pk, retry=partial(_retry, actor=actor))


# --- Conflicts: a handle the file cites for several records --------------------------------------
def import_conflicts_record_server(batch_id: int, found: dict[tuple[int, str], tuple[str, str]]) -> None:
    """Keep what the server resolved each conflicting handle to (read by handles.repair.conflicts)."""
    with transaction.atomic():
        rows = ImportRow.objects.filter(batch_id=batch_id, outcome=ImportRow.Outcome.CONFLICT)
        for (prefix_id, suffix_key), (url, note) in found.items():
            rows.filter(prefix_id=prefix_id, suffix_key=suffix_key).update(server_url=url[:2000], server_note=note[:300])


@transaction.atomic
def import_conflict_start_read(*, batch: ImportBatch) -> None:
    """Read the conflicting handles from the server again, in the background."""
    transaction.on_commit(partial(tasks.enqueue_conflict_read, batch.pk))


@transaction.atomic
def import_conflict_resolve(*, batch: ImportBatch, keep_row_id: int, others: str = "flag", actor: User = None,
                            via: str = "import") -> list[int]:
    """A handle the file cites for several records: `keep_row_id`'s record keeps it. The handle is recorded
    for that record and brought to its target on the server (verified where the server already resolves
    there, created where it lacks the handle, updated otherwise); each other line is flagged as needing a
    handle or, with others="new_handle", given a newly minted one. Every change goes through the queue.
    Returns the ids of the requests queued."""
    if others not in ("flag", "new_handle"):
        raise HandleServiceError(f"Unknown choice {others!r} for the other records.", code="invalid_choice")
    batch = ImportBatch.objects.select_for_update().defer("content").get(pk=batch.pk)
    if not batch.conflicts_resolvable:
        raise HandleServiceError(f"Import #{batch.pk} is {batch.get_state_display().lower()}; conflicts are resolved "
                                 "after its dry run.", code="invalid_state")
    keep = ImportRow.objects.filter(batch=batch, pk=keep_row_id).file_conflicts().first()
    if keep is None:
        raise HandleServiceError("That line is not one of this import's conflicting lines.", code="not_a_conflict")
    rows = list(ImportRow.objects.select_for_update().filter(
        batch=batch, prefix_id=keep.prefix_id, suffix_key=keep.suffix_key, outcome=ImportRow.Outcome.CONFLICT)
        .order_by("line"))
    if any(row.resolution for row in rows):
        raise HandleServiceError(f"The conflict over {keep.handle_text} was already resolved.", code="resolved")
    prefix = Prefix.objects.select_for_update().get(pk=keep.prefix_id)
    if Handle.objects.filter(prefix=prefix, suffix_key=keep.suffix_key).exists():
        raise HandleServiceError(f"{keep.handle_text} has been recorded here since the dry run; run the dry run "
                                 "again (or reconcile) to see where it stands.", code="stale_dry_run")
    assets: dict[tuple[str, str], int] = {}
    wanted = [r for r in rows if r.external_id and (r.pk == keep.pk or others == "new_handle")]
    if wanted:
        assets, _ = core.assets_get_or_create_bulk([core.AssetSpec(r.source_system, r.external_id, r.title,
                                                                   r.target_url) for r in wanted])
    asset_id = assets.get((keep.source_system, keep.external_id))
    primary = asset_id is None or not Handle.objects.filter(asset_id=asset_id, is_primary=True).exists()
    resolves_there = keep.server_url == keep.target_url
    reason = f"import #{batch.pk}: line {keep.line} keeps {keep.handle_text}"
    created = core.handles_import_bulk(items=[core.ImportItem(prefix.pk, keep.suffix, keep.target_url, asset_id,
                                                              primary and asset_id is not None)],
                                       adopt=resolves_there, actor=actor, via=via, reason=reason)
    handle_id, request_id = created[(prefix.pk, keep.suffix_key)]
    if not resolves_there:
        op = Op.CREATE if keep.server_note == conflicts.NOT_ON_SERVER else Op.UPDATE
        request_id = core.handles_queue_bulk(ops=[(handle_id, op)], actor=actor, via=via, reason=reason)[handle_id]
    assert request_id is not None, "adopted (a verify request is recorded) or queued just above"
    request_ids = [request_id]
    now_note = {True: "verified where the server already resolves", False: "pushed to the server"}[resolves_there]
    ImportRow.objects.filter(pk=keep.pk).update(resolution=ConflictResolution.KEPT, handle_id=handle_id,
                                                request_id=request_id,
                                                resolution_note=f"Keeps {keep.handle_text} ({now_note}).")
    for row in rows:
        if row.pk == keep.pk:
            continue
        if others == "new_handle":
            asset = Asset.objects.get(pk=assets[(row.source_system, row.external_id)]) if row.external_id else None
            minted = core.handle_mint(prefix=prefix, target_url=row.target_url, asset=asset, actor=actor, via=via)
            ImportRow.objects.filter(pk=row.pk).update(
                resolution=ConflictResolution.NEW_HANDLE, handle_id=minted.handle_id, request_id=minted.pk,
                resolution_note=f"Given the new handle {minted.full_handle}; line {keep.line} keeps {keep.handle_text}.")
        else:
            ImportRow.objects.filter(pk=row.pk).update(
                resolution=ConflictResolution.FLAGGED,
                resolution_note=f"Needs a handle: line {keep.line} keeps {keep.handle_text}.")
    transaction.on_commit(partial(tasks.enqueue_request_ids, request_ids))
    return request_ids


IMPORTS = jobs.JobKind(jobs=ImportBatch.objects.defer("content"), tally=selectors.import_tally,
                       requests=selectors.import_requests, noun="handle",
                       unpushed_note=UNREAD_NOTE, record=_record_verification)
