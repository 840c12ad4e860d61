"""Reconciliation: what the Handle server holds for a prefix, compared with what we intend.

Streams with bounded memory: one listing page at a time (the server's own paging), each listed handle's
URL read in parallel through the one client while the previous page is compared with our records (looked
up in bulk per page). Only handles that differ are stored as rows; in-sync handles are counted. Which of
our handles the listing named is one bit per handle id (a million handles: about 125 kB), so 'missing on
the server' is a stream over our ids at the end, not a set of a million names.
Reads the server, never writes it: repairs go through the request queue (services.repair_start).
"""

from __future__ import annotations

import base64
import logging
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef

from handles import jobs
from handles.handle_server.client import HandleNotFound, HandleServerClient, HandleServerError, client_for
from handles.labels import counted
from handles.models import Asset, Handle, HandleRequest, Prefix
from handles.repair import services
from handles.repair.models import (
    ImportBatch,
    ImportRow,
    JobState,
    ReconciliationRow,
    ReconciliationRun,
)
from handles.repair.rules import vendor_matcher
from handles.validators import ascii_upper

logger = logging.getLogger(__name__)
Kind = ReconciliationRow.Kind
Status = Handle.Status
READ_RETRIES = 2


@dataclass(frozen=True)
class ServerRecord:
    name: str
    url: str | None = None
    found: bool = True
    error: str = ""


def read_url(client: HandleServerClient, name: str) -> ServerRecord:
    """One handle's URL on the server. Transient failures are retried; what remains is reported."""
    for attempt in range(READ_RETRIES + 1):
        try:
            url, _ = client.get_url(name)
            return ServerRecord(name, url)
        except HandleNotFound:
            return ServerRecord(name, found=False)
        except HandleServerError as exc:
            if exc.transient and attempt < READ_RETRIES:
                continue
            return ServerRecord(name, error=str(exc)[:400])
    raise AssertionError("unreachable")


def admin_handles(prefix: Prefix) -> set[str]:
    """The prefix's own administrative handles, which the listing includes and we never manage."""
    names = {prefix.hs_admin_handle, prefix.auth_identity.partition(":")[2], f"0.NA/{prefix.prefix}"}
    return {ascii_upper(n) for n in names if n}


def _intended(handle: dict, prefix: Prefix) -> str:
    if handle["status"] == Status.TOMBSTONED:
        return Handle(prefix=prefix, suffix=handle["suffix"], status=Status.TOMBSTONED).tombstone_url
    return handle["target_url"]


class SeenIds:
    """Which of our handle ids the listing named: one bit per id."""

    def __init__(self) -> None:
        self.bits = bytearray()

    def add(self, pk: int) -> None:
        index = pk >> 3
        if index >= len(self.bits):
            self.bits.extend(bytes(index + 1 - len(self.bits) + 65536))
        self.bits[index] |= 1 << (pk & 7)

    def __contains__(self, pk: int) -> bool:
        index = pk >> 3
        return index < len(self.bits) and bool(self.bits[index] >> (pk & 7) & 1)


@dataclass
class _Page:
    """A listing page whose reads are in flight while the page before it is compared."""

    size: int
    wanted: dict[str, str]  # suffix key → the name as listed
    reads: list[Future[ServerRecord]]
    skipped: Counter[str]  # admin handles and other prefixes' names: counted when the page is compared


class _Reconciler:
    def __init__(self, run: ReconciliationRun, client: HandleServerClient, pool: ThreadPoolExecutor) -> None:
        self.run = run
        self.prefix = run.prefix
        self.client = client
        self.pool = pool
        self.is_vendor = vendor_matcher(self.prefix)
        self.admin = admin_handles(self.prefix)
        self.prefix_key = ascii_upper(self.prefix.prefix)
        self.counts: Counter[str] = Counter()
        self.seen = SeenIds()
        self.done = 0

    def read_all(self, names: Iterable[str]) -> list[Future[ServerRecord]]:
        return [self.pool.submit(read_url, self.client, name) for name in names]

    def ours(self, suffix_keys: Iterable[str]) -> dict[str, dict]:
        fields = ("pk", "suffix", "suffix_key", "status", "target_url")
        return {h["suffix_key"]: h for h in Handle.objects.filter(
            prefix=self.prefix, suffix_key__in=list(suffix_keys)).values(*fields)}

    def start_page(self, names: list[str]) -> _Page:
        """Sort out one page of the listing and start reading its handles."""
        wanted: dict[str, str] = {}
        skipped: Counter[str] = Counter()
        for name in names:
            prefix_part, _, suffix = name.partition("/")
            if ascii_upper(name) in self.admin:
                skipped["admin"] += 1
            elif ascii_upper(prefix_part) != self.prefix_key or not suffix:
                skipped["other"] += 1
            else:
                wanted[ascii_upper(suffix)] = name
        return _Page(len(names), wanted, self.read_all(wanted.values()), skipped)

    def finish_page(self, page: _Page) -> None:
        """Compare a page's server records with ours."""
        ours = self.ours(page.wanted)
        self.counts.update(page.skipped)
        rows: list[ReconciliationRow] = []
        for future in page.reads:
            record = future.result()
            suffix = record.name.partition("/")[2]
            handle = ours.get(ascii_upper(suffix))
            vendor = self.is_vendor(suffix)
            self.counts["listed"] += 1
            self.counts["vendor"] += vendor
            if handle is not None:
                self.seen.add(handle["pk"])
            row = self.classify(record, handle, vendor)
            if row is not None:
                rows.append(row)
        self._match_assets([row for row in rows if row.kind == Kind.ORPHAN])
        services.reconciliation_record(self.run.pk, rows=rows)
        self.done += page.size + len(ours)

    def classify(self, record: ServerRecord, handle: dict | None, vendor: bool) -> ReconciliationRow | None:
        if record.error:
            return self._row(Kind.UNREADABLE, record, handle, vendor, note=record.error)
        if handle is None:
            if not record.found:  # deleted on the server between listing and reading: nothing to compare
                self.counts["vanished"] += 1
                return None
            return self._row(Kind.ORPHAN, record, None, vendor,
                             note="" if record.url else "The server's record has no URL.")
        if not record.found:
            if handle["status"] == Status.DELETED:
                self.counts["in_sync"] += 1
                return None
            return self._row(Kind.MISSING, record, handle, vendor)
        if handle["status"] == Status.DELETED:
            return self._row(Kind.DELETED_ON_SERVER, record, handle, vendor)
        intended = _intended(handle, self.prefix)
        if record.url == intended:
            self.counts["in_sync"] += 1
            return None
        kind = Kind.TOMBSTONE_DRIFT if handle["status"] == Status.TOMBSTONED else Kind.URL_DIFFERS
        return self._row(kind, record, handle, vendor)

    def _row(self, kind: str, record: ServerRecord, handle: dict | None, vendor: bool,
             note: str = "") -> ReconciliationRow:
        self.counts[kind] += 1
        if handle is not None and handle["status"] == Status.PENDING and kind == Kind.MISSING:
            note = note or "Pending: its create request has not succeeded yet."
        return ReconciliationRow(
            run_id=self.run.pk, kind=kind, vendor=vendor, note=note[:500],
            full_handle=f"{self.prefix.prefix}/{handle['suffix']}" if handle else record.name,
            handle_id=handle["pk"] if handle else None, server_url=(record.url or "")[:2000],
            our_url="" if handle is None or handle["status"] == Status.DELETED else _intended(handle, self.prefix),
        )

    def _match_assets(self, orphans: list[ReconciliationRow]) -> None:
        """An orphan whose URL is one of our objects' (the vendor's 11084/1742400039 resolving to the object
        of our 11084/99) is linked to that asset, to be adopted as one of its handles."""
        urls = {row.server_url for row in orphans if row.server_url}
        if not urls:
            return
        by_url = dict(Handle.objects.filter(target_url__in=urls, asset__isnull=False)
                      .values_list("target_url", "asset_id"))
        rest = urls - set(by_url)
        if rest:
            by_url.update(Asset.objects.filter(url__in=rest).values_list("url", "pk"))
        for row in orphans:
            row.asset_id = by_url.get(row.server_url)

    def unseen_batch(self, after_pk: int, size: int) -> int | None:
        """Our live handles after `after_pk` (a batch) that the listing did not name: missing on the server.
        Each is read once more first, since a listing without a snapshot can skip names when the prefix
        changes between pages. Returns the last id looked at, or None when none remain."""
        batch = list(Handle.objects.filter(prefix=self.prefix, pk__gt=after_pk).order_by("pk").values_list(
            "pk", "status")[:size])
        unseen: list[int] = []
        for pk, status in batch:
            if pk in self.seen:
                continue
            if status == Status.DELETED:
                self.counts["in_sync"] += 1  # deleted here, absent there
                continue
            unseen.append(pk)
        if unseen:
            self._confirm_missing(unseen)
        return batch[-1][0] if batch else None

    def checkpoint(self, **where: int | str) -> dict:
        """What a later slice needs to go on: where, the counts so far and which of our ids were listed."""
        return {**where, "done": self.done, "counts": dict(self.counts),
                "seen": base64.b64encode(zlib.compress(bytes(self.seen.bits))).decode()}

    def restore(self, point: dict) -> None:
        self.done = point.get("done", 0)
        self.counts = Counter(point.get("counts", {}))
        if point.get("seen"):
            self.seen.bits = bytearray(zlib.decompress(base64.b64decode(point["seen"])))

    def _confirm_missing(self, pks: list[int]) -> None:
        fields = ("pk", "suffix", "suffix_key", "status", "target_url")
        handles = list(Handle.objects.filter(pk__in=pks).values(*fields))
        reads = self.read_all(f"{self.prefix.prefix}/{h['suffix']}" for h in handles)
        rows = []
        for handle, future in zip(handles, reads, strict=True):
            row = self.classify(future.result(), handle, self.is_vendor(handle["suffix"]))
            if row is not None:
                rows.append(row)
        services.reconciliation_record(self.run.pk, rows=rows)
        self.done += len(handles)


def run(run_id: int, on_progress: Callable[[int, int, str], None] | None = None) -> ReconciliationRun:
    """Reconcile one prefix here, slice after slice (the `reconcile` command; the worker runs the same slices
    as tasks for the admin and the schedule)."""
    def progress(job: ReconciliationRun) -> None:
        if on_progress:
            on_progress(job.progress_done, job.progress_total, job.message)

    return jobs.run_inline(RUNNER, run_id, on_slice=progress)


def run_slice(reconciliation: ReconciliationRun, work: jobs.Slice) -> str:
    """One slice of a reconciliation (handles.jobs.Runner.work): listing pages, then our handles the listing
    did not name. Each page's rows and the checkpoint (page, counts, listed ids) commit together."""
    run_id = reconciliation.pk
    reconciliation = ReconciliationRun.objects.select_related("prefix").get(pk=run_id)
    prefix = reconciliation.prefix
    client = client_for(prefix.server_config())
    page_size = settings.HANDLES_RECONCILE_PAGE_SIZE
    point = reconciliation.checkpoint
    if not point:
        try:
            total = client.count_handles(prefix.prefix)
        except HandleServerError as exc:
            return services.reconciliation_finish(run_id, counts={}, error=f"The server's listing of {prefix.prefix} "
                                                  f"could not be read: {exc}").state
        ours_total = Handle.objects.filter(prefix=prefix).count()
        point = {"phase": "list", "page": 0, "pages": (total + page_size - 1) // page_size, "total": total + ours_total}
        with transaction.atomic():
            services.reconciliation_begin(run_id, total=total + ours_total)
            work.save(point)
    with ThreadPoolExecutor(max_workers=settings.HANDLES_RECONCILE_WORKERS) as pool:
        rec = _Reconciler(reconciliation, client, pool)
        rec.restore(point)
        try:
            if point["phase"] == "list" and _list_pages(rec, point, work) == jobs.CONTINUE:
                return jobs.CONTINUE
            after = point.get("after", 0)
            while (after := rec.unseen_batch(after, page_size)) is not None:
                with transaction.atomic():
                    work.save(rec.checkpoint(phase="unseen", after=after, pages=point["pages"], total=point["total"]),
                              progress_done=min(rec.done, point["total"]), counts=dict(rec.counts),
                              message="Looking for handles missing on the server")
                if work.over():
                    return jobs.CONTINUE
        except HandleServerError as exc:
            return services.reconciliation_finish(run_id, counts=dict(rec.counts),
                                                  error=f"Stopped: the server's listing could not be read: {exc}").state
    services.job_progress(ReconciliationRun, run_id, done=point["total"])
    return services.reconciliation_finish(run_id, counts=dict(rec.counts)).state


def _list_pages(rec: _Reconciler, point: dict, work: jobs.Slice) -> str:
    """The listing, from the checkpoint's page on. The next page's reads go out before this page is
    compared (the server is never idle); a page still in flight when the slice ends is read again next time."""
    prefix, pages, page_size = rec.prefix.prefix, point["pages"], settings.HANDLES_RECONCILE_PAGE_SIZE
    page = point["page"]
    in_flight: tuple[int, _Page] | None = None
    while page < pages or in_flight is not None:
        started = None
        if page < pages:
            started = (page, rec.start_page(_list_page(rec.client, prefix, page, page_size)))
            page += 1
        if in_flight is not None:
            number, listed = in_flight
            with transaction.atomic():
                rec.finish_page(listed)
                work.save(rec.checkpoint(phase="list", page=number + 1, pages=pages, total=point["total"]),
                          progress_done=rec.done, counts=dict(rec.counts),
                          message=f"Listing page {number + 1} of {pages}")
            if work.over() and started is not None:
                for future in started[1].reads:
                    future.cancel()
                return jobs.CONTINUE
        in_flight = started
    with transaction.atomic():
        work.save(rec.checkpoint(phase="unseen", after=0, pages=pages, total=point["total"]),
                  message="Looking for handles missing on the server")
    point.update(phase="unseen", after=0)
    return "listed"


def _list_page(client: HandleServerClient, prefix: str, page: int, page_size: int) -> list[str]:
    for attempt in range(READ_RETRIES + 1):
        try:
            return client.list_page(prefix, page, page_size)
        except HandleServerError as exc:
            if not exc.transient or attempt == READ_RETRIES:
                raise
    raise AssertionError("unreachable")


# --- Push mode of an import ----------------------------------------------------------------------------
def push_import(batch_id: int) -> ImportBatch:
    """After a push-mode import is recorded: read each new handle from the server, then queue a create
    (missing), an update (another URL) or a verification (already right), here, slice after slice."""
    return jobs.run_inline(IMPORT_RUNNER, batch_id)




def push_slice(batch: ImportBatch, work: jobs.Slice) -> str:
    """One slice of an import's push. Lines are taken in order; each chunk's requests and the checkpoint
    (last line, how many were unreadable) commit together, so a resumed push reads on from there."""
    point = dict(batch.checkpoint)
    after_line, unreadable, done = point.get("push_line", 0), point.get("unreadable", 0), point.get("push_done", 0)
    rows = (ImportRow.objects.filter(batch_id=batch.pk, outcome=ImportRow.Outcome.NEW, handle__isnull=False,
                                     request__isnull=True)
            .exclude(Exists(HandleRequest.objects.filter(handle_id=OuterRef("handle_id")).unfinished())))
    if "push_total" not in point:
        point["push_total"] = rows.count()
        with transaction.atomic():
            work.save(point, progress_done=0, progress_total=point["push_total"],
                      message="Reading each handle from the server")
    pending = rows.values_list("line", "handle_id", "handle__prefix_id", "handle__suffix", "target_url").order_by("line")
    with ThreadPoolExecutor(max_workers=settings.HANDLES_RECONCILE_WORKERS) as pool:
        # A few reads per worker thread per chunk: a chunk is the unit a slice killed at the timeout keeps.
        while chunk := list(pending.filter(line__gt=after_line)[:4 * settings.HANDLES_RECONCILE_WORKERS]):
            prefixes = {p.pk: p for p in Prefix.objects.filter(pk__in={r[2] for r in chunk})}
            lookups = [(client_for(prefixes[r[2]].server_config()), f"{prefixes[r[2]].prefix}/{r[3]}") for r in chunk]
            records = list(pool.map(lambda lookup: read_url(*lookup), lookups))
            ops: dict[int, str] = {}
            for (_, handle_id, _, _, target_url), record in zip(chunk, records, strict=True):
                if record.error:
                    unreadable += 1
                elif not record.found:
                    ops[handle_id] = HandleRequest.Op.CREATE
                elif record.url != target_url:
                    ops[handle_id] = HandleRequest.Op.UPDATE
                else:
                    ops[handle_id] = HandleRequest.Op.VERIFY
            after_line, done = chunk[-1][0], done + len(chunk)
            with transaction.atomic():
                if ops:
                    services.import_batch_queue_push(batch.pk, ops)
                work.save({**point, "push_line": after_line, "unreadable": unreadable, "push_done": done},
                          progress_done=done)
            if work.over():
                return jobs.CONTINUE
    error = (f"{counted(unreadable, 'handle')} could not be read from the server; they stay pending without a request. "
             "Use \"Continue pushing\" when the server answers again.") if unreadable else ""
    return services.import_batch_finish_push(batch.pk, error=error).state


def import_slice(batch: ImportBatch, work: jobs.Slice) -> str:
    """One slice of an import (handles.jobs.Runner.work): the dry run, the apply (each one transaction,
    done again from the start if its slice was killed) or a slice of the push."""
    batch = ImportBatch.objects.defer("content").get(pk=batch.pk)
    if batch.step == ImportBatch.Step.ANALYSE:
        analysed = services.import_batch_analyse(batch.pk)
        if analysed.counts.get("conflict"):
            from handles.repair.tasks import read_import_conflicts

            read_import_conflicts(batch.pk)  # where the server resolves each conflicting handle now
        return analysed.state
    if batch.applied_at is None:
        batch = services.import_batch_apply(batch.pk, enqueue_push=False)
        return jobs.CONTINUE if batch.step == ImportBatch.Step.PUSH and batch.state == JobState.RUNNING else batch.state
    return push_slice(batch, work)


RUNNER = jobs.Runner(name="reconcile", label="reconciliation", model=ReconciliationRun, work=run_slice)
IMPORT_RUNNER = jobs.Runner(name="import", label="import", model=ImportBatch, work=import_slice, defer=("content",))
