"""Streamed CSV exports: the browse list's current filter, and a bulk job's report.

Rows are read in keyset batches on the primary key (WHERE pk > last ORDER BY pk LIMIT n, each batch
read with .iterator()): a million-row export holds one batch in memory, keeps no transaction or
server-side cursor open between batches, and sends its first bytes at once.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime

from django.conf import settings
from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone

from handles.desk.models import BulkJob
from handles.desk.selectors import health_of, with_health

# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection, OWASP).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: object) -> str:
    """A cell as text that a spreadsheet shows and never evaluates."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


class _Echo:
    """csv.writer writes to this and gets the line back, so each row can be yielded as it is made."""

    def write(self, value: str) -> str:
        return value


def csv_lines(rows: Iterable[Iterable[object]]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield "\ufeff"  # a BOM: Excel then opens UTF-8 (titles with accents) correctly
    for row in rows:
        yield writer.writerow([neutralise(cell) for cell in row])


def csv_response(filename: str, rows: Iterable[Iterable[object]]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(csv_lines(rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response


def keyset(queryset: QuerySet, chunk: int | None = None) -> Iterator:
    """Every row of the queryset in primary-key order, one short query per batch."""
    chunk = chunk or settings.HANDLES_DESK_EXPORT_CHUNK
    last = 0
    while True:
        batch = queryset.filter(pk__gt=last).order_by("pk")[:chunk]
        count = 0
        for row in batch.iterator(chunk_size=chunk):
            count += 1
            last = row.pk
            yield row
        if count < chunk:
            return


HANDLE_COLUMNS = ["handle", "resolver_url", "target_url", "status", "sync", "sync_detail", "prefix", "site",
                  "asset_source", "asset_id", "asset_title", "asset_state", "primary", "tombstone_reason",
                  "successor_url", "tombstoned_at", "created_at", "updated_at", "synced_at"]


def _when(value: datetime | None) -> str:
    return timezone.localtime(value).isoformat(timespec="seconds") if value else ""


def handle_rows(queryset: QuerySet) -> Iterator[Sequence[object]]:
    yield HANDLE_COLUMNS
    rows = with_health(queryset.select_related("prefix", "asset"))
    for handle in keyset(rows):
        health = health_of(handle)
        asset = handle.asset
        yield [
            handle.full_handle, handle.resolver_url, handle.target_url, handle.status, health.state, health.detail,
            handle.prefix.prefix, handle.prefix.site_name, asset.source_system if asset else "",
            asset.external_id if asset else "", asset.title if asset else "", asset.state if asset else "",
            "yes" if handle.is_primary else "", handle.tombstone_reason, handle.successor_url,
            _when(handle.tombstoned_at), _when(handle.created_at), _when(handle.updated_at), _when(handle.synced_at),
        ]


def handles_csv(queryset: QuerySet) -> StreamingHttpResponse:
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
    # The first row is read before the response starts, by the same query with LIMIT 1 (no cursor left open):
    # a query that fails is then an error page, not a 200 that holds only a header (an error once streaming
    # has begun can only cut the file short).
    list(with_health(queryset.select_related("prefix", "asset")).order_by("pk")[:1])
    return csv_response(f"handles-{stamp}.csv", handle_rows(queryset))


JOB_COLUMNS = ["handle", "outcome", "message", "before", "after", "request_id", "request_status", "request_error"]


def job_report_rows(job: BulkJob) -> Iterator[Sequence[object]]:
    """One line per handle the job touched, with what became of its request since."""
    yield JOB_COLUMNS
    for item in keyset(job.items.select_related("request")):
        request = item.request
        yield [item.full_handle, item.outcome, item.message, item.before, item.after,
               request.pk if request else "", request.status if request else "", request.error if request else ""]

