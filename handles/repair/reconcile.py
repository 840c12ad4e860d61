"""Reconciliation: what the Handle server holds for a prefix, compared with what we intend.

Streams with bounded memory: one listing page at a time (the server's own paging), each listed handle's
URL read in parallel through the one client while the previous page is compared with our records (looked
up in bulk per page). Only handles that differ are stored as rows; in-sync handles are counted. Which of
our handles the listing named is one bit per handle id (a million handles: about 125 kB), so 'missing on
the server' is a stream over our ids at the end, not a set of a million names.
Reads the server, never writes it: repairs go through the request queue (services.repair_start).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Exists, OuterRef

from handles.handle_server.client import HandleNotFound, HandleServerClient, HandleServerError, client_for
from handles.labels import counted
from handles.models import Asset, Handle, HandleRequest, Prefix
from handles.repair import services
from handles.repair.models import (
    ImportBatch,
    ImportRow,
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
        for name in names:
            prefix_part, _, suffix = name.partition("/")
            if ascii_upper(name) in self.admin:
                self.counts["admin"] += 1
            elif ascii_upper(prefix_part) != self.prefix_key or not suffix:
                self.counts["other"] += 1
            else:
                wanted[ascii_upper(suffix)] = name
        return _Page(len(names), wanted, self.read_all(wanted.values()))

    def finish_page(self, page: _Page) -> None:
        """Compare a page's server records with ours."""
        ours = self.ours(page.wanted)
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

    def unseen(self) -> None:
        """Our live handles the listing did not name: missing on the server. Each is read once more first,
        since a listing without a snapshot can skip names when the prefix changes between pages."""
        unseen: list[int] = []
        for pk, status in Handle.objects.filter(prefix=self.prefix).order_by("pk").values_list(
                "pk", "status").iterator(chunk_size=10_000):
            if pk in self.seen:
                continue
            if status == Status.DELETED:
                self.counts["in_sync"] += 1  # deleted here, absent there
                continue
            unseen.append(pk)
            if len(unseen) == settings.HANDLES_RECONCILE_PAGE_SIZE:
                self._confirm_missing(unseen)
                unseen = []
        if unseen:
            self._confirm_missing(unseen)

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
    """Reconcile one prefix. Called by the task queue (admin, schedule) or the `reconcile` command."""
    if not services.job_claim(ReconciliationRun, run_id):
        return ReconciliationRun.objects.get(pk=run_id)  # a second delivery of the task: already taken
    reconciliation = ReconciliationRun.objects.select_related("prefix").get(pk=run_id)
    prefix = reconciliation.prefix
    client = client_for(prefix.server_config())
    page_size = settings.HANDLES_RECONCILE_PAGE_SIZE
    try:
        total = client.count_handles(prefix.prefix)
    except HandleServerError as exc:
        return services.reconciliation_finish(run_id, counts={}, error=f"The server's listing of {prefix.prefix} "
                                              f"could not be read: {exc}")
    ours_total = Handle.objects.filter(prefix=prefix).count()
    reconciliation = services.reconciliation_begin(run_id, total=total + ours_total)
    with ThreadPoolExecutor(max_workers=settings.HANDLES_RECONCILE_WORKERS) as pool:
        work = _Reconciler(reconciliation, client, pool)
        try:
            pages = (total + page_size - 1) // page_size
            in_flight: _Page | None = None
            for page in range(pages):
                # The next page's reads go out before this page is compared: the server is never idle.
                next_page = work.start_page(_list_page(client, prefix.prefix, page, page_size))
                if in_flight is not None:
                    work.finish_page(in_flight)
                in_flight = next_page
                message = f"Listing page {page + 1} of {pages}"
                services.job_progress(ReconciliationRun, run_id, done=work.done, counts=dict(work.counts),
                                      message=message)
                if on_progress:
                    on_progress(work.done, total + ours_total, message)
            if in_flight is not None:
                work.finish_page(in_flight)
            services.job_progress(ReconciliationRun, run_id, message="Looking for handles missing on the server")
            work.unseen()
        except HandleServerError as exc:
            return services.reconciliation_finish(run_id, counts=dict(work.counts),
                                                  error=f"Stopped: the server's listing could not be read: {exc}")
        except Exception as exc:
            logger.exception("reconciliation %s failed", run_id)
            return services.reconciliation_finish(run_id, counts=dict(work.counts), error=f"Internal error: {exc}")
    services.job_progress(ReconciliationRun, run_id, done=total + ours_total)
    return services.reconciliation_finish(run_id, counts=dict(work.counts))


def _list_page(client: HandleServerClient, prefix: str, page: int, page_size: int) -> list[str]:
    for attempt in range(READ_RETRIES + 1):
        try:
            return client.list_page(prefix, page, page_size)
        except HandleServerError as exc:
            if not exc.transient or attempt == READ_RETRIES:
                raise
    raise AssertionError("unreachable")


# --- Push mode of an import ----------------------------------------------------------------------------
PUSH_BATCH = 1000  # lines read from the server, then queued, per step
def push_import(batch_id: int) -> ImportBatch:
    """After a push-mode import is recorded: read each new handle from the server, then queue a create
    (missing), an update (another URL) or a verification (already right). Safe to run again: lines that
    already have a request are skipped. An internal error ends the push with the reason (the lines not
    reached stay without a request, for "Continue pushing"), never leaves the import applying."""
    try:
        return _push_import(batch_id)
    except Exception as exc:
        logger.exception("push of import %s failed", batch_id)
        return services.import_batch_finish_push(batch_id, error=f"Stopped by an internal error ({exc.__class__.__name__}: "
                                                 f"{exc}); the lines not reached have no request yet: use \"Continue "
                                                 "pushing\". The log has details.")


def _push_import(batch_id: int) -> ImportBatch:
    # The database is read and written in this thread only, a batch at a time by primary key (no cursor
    # stays open across the writes: queuing hands tasks to the broker, and the ORM broker may close this
    # thread's connection, which on SQLite ends any cursor still reading). The pool's threads only ask the
    # Handle server.
    rows = (ImportRow.objects.filter(batch_id=batch_id, outcome=ImportRow.Outcome.NEW, handle__isnull=False,
                                     request__isnull=True)
            .exclude(Exists(HandleRequest.objects.filter(handle_id=OuterRef("handle_id")).unfinished())))
    total = rows.count()
    services.job_progress(ImportBatch, batch_id, done=0, total=total, message="Reading each handle from the server")
    unreadable, done, last = 0, 0, 0
    prefixes = {p.pk: p for p in Prefix.objects.all()}
    with ThreadPoolExecutor(max_workers=settings.HANDLES_RECONCILE_WORKERS) as pool:
        while chunk := list(rows.filter(pk__gt=last).order_by("pk").values_list(
                "pk", "handle_id", "handle__prefix_id", "handle__suffix", "target_url")[:PUSH_BATCH]):
            last = chunk[-1][0]
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
            if ops:
                services.import_batch_queue_push(batch_id, ops)
            done += len(chunk)
            services.job_progress(ImportBatch, batch_id, done=done)
    error = (f"{counted(unreadable, 'handle')} could not be read from the server; they stay pending without a request. "
             "Use \"Continue pushing\" when the server answers again.") if unreadable else ""
    return services.import_batch_finish_push(batch_id, error=error)
