"""The bulk writes (handles.dbwrites) on both databases the app runs on: PostgreSQL (COPY and one UPDATE with
CASE) and SQLite, `make run`'s embedded default (bulk_create, the same UPDATE).

Each check below runs once per database: on PostgreSQL in the test database, on SQLite in a process of its own
with a fresh database file (as tests/test_embedded_sqlite.py does), each check inside a transaction rolled back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from handles.dbwrites import BULK_BATCH_SIZE, chunks, insert_rows, update_rows
from handles.models import Asset, Handle, Prefix
from tests.factories import PrefixFactory

ROOT = Path(__file__).resolve().parent.parent

# Text that COPY's text format escapes: tab and newline end a field and a row, a backslash starts an escape,
# `\N` alone is its NULL and `\.` alone its end of data. Each must come back as it went in.
AWKWARD_TEXTS = ["tab\there", "line\nbreak", "carriage\rreturn", "back\\slash", "\\N", "\\.", "\\", "",
                 "quote ' and \"double\"", "'; DROP TABLE handles_handle; --", "été ☃ 𝄞", "trailing\\"]

CHECKS: dict[str, Callable[[], None]] = {}


def check(fn: Callable[[], None]) -> Callable[[], None]:
    CHECKS[fn.__name__] = fn
    return fn


HANDLE_COLUMNS = ["prefix_id", "suffix", "suffix_key", "target_url", "asset_id", "tombstone_reason",
                  "tombstoned_at", "status"]


def handle_rows(prefix: Prefix, count: int, *, stem: str = "r") -> list[tuple]:
    return [(prefix.pk, f"{stem}{n}", f"{stem.upper()}{n}", f"https://example.org/{stem}/{n}", None, "", None,
             Handle.Status.ACTIVE) for n in range(count)]


def queries_of(action: Callable[[], object]) -> int:
    with CaptureQueriesContext(connection) as captured:
        action()
    return len(captured.captured_queries)


# --- insert_rows ---------------------------------------------------------------------------------------------
@check
def insert_nothing_returns_no_ids_and_asks_nothing() -> None:
    assert queries_of(lambda: insert_rows(Handle, HANDLE_COLUMNS, [])) == 0
    assert insert_rows(Handle, HANDLE_COLUMNS, []) == []


@check
def insert_one_row_fills_the_other_fields_with_their_defaults() -> None:
    prefix = PrefixFactory()
    before = datetime.now(UTC)
    (pk,) = insert_rows(Handle, HANDLE_COLUMNS, handle_rows(prefix, 1))
    handle = Handle.objects.get(pk=pk)
    assert (handle.suffix, handle.suffix_key, handle.target_url, handle.prefix_id) == (
        "r0", "R0", "https://example.org/r/0", prefix.pk)
    assert (handle.version, handle.synced_version, handle.is_primary, handle.successor_url) == (1, 0, False, "")
    assert handle.updated_at >= before and handle.created_at >= before  # auto_now and a callable default


@check
def insert_more_rows_than_a_batch_returns_their_ids_in_order() -> None:
    prefix = PrefixFactory()
    rows = handle_rows(prefix, BULK_BATCH_SIZE + 1, stem="m")
    ids = insert_rows(Handle, HANDLE_COLUMNS, rows)
    assert len(ids) == len(set(ids)) == BULK_BATCH_SIZE + 1
    suffixes = dict(Handle.objects.filter(pk__in=ids).values_list("pk", "suffix"))
    assert [suffixes[pk] for pk in ids] == [row[1] for row in rows]


@check
def insert_keeps_nulls_apart_from_empty_text() -> None:
    prefix = PrefixFactory()
    asset = Asset.objects.create(source_system="dams", external_id="n1", url="https://example.org/a")
    when = datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=UTC)
    ids = insert_rows(Handle, HANDLE_COLUMNS, [
        (prefix.pk, "null", "NULL", "https://example.org/n", None, "", None, Handle.Status.ACTIVE),
        (prefix.pk, "set", "SET", "https://example.org/s", asset.pk, "withdrawn", when, Handle.Status.TOMBSTONED)])
    rows = list(Handle.objects.filter(pk__in=ids).order_by("pk").values_list("asset_id", "tombstone_reason",
                                                                             "tombstoned_at"))
    assert rows == [(None, "", None), (asset.pk, "withdrawn", when)]


@check
def insert_carries_awkward_text_unchanged() -> None:
    prefix = PrefixFactory()
    rows = [(prefix.pk, f"t{n}", f"T{n}", "https://example.org/t", None, text, None, Handle.Status.ACTIVE)
            for n, text in enumerate(AWKWARD_TEXTS)]
    ids = insert_rows(Handle, HANDLE_COLUMNS, rows)
    stored = dict(Handle.objects.filter(pk__in=ids).values_list("pk", "tombstone_reason"))
    assert [stored[pk] for pk in ids] == AWKWARD_TEXTS


@check
def insert_of_a_taken_key_raises_integrity_error_and_keeps_nothing() -> None:
    prefix = PrefixFactory()
    insert_rows(Handle, HANDLE_COLUMNS, handle_rows(prefix, 1, stem="dup"))
    try:
        with transaction.atomic():
            insert_rows(Handle, HANDLE_COLUMNS, handle_rows(prefix, 3, stem="new") + handle_rows(prefix, 1, stem="dup"))
    except IntegrityError:
        pass
    else:
        raise AssertionError("a second row with a taken (prefix, suffix_key) was accepted")
    assert Handle.objects.filter(prefix=prefix).count() == 1


@check
def inserted_ids_follow_the_ids_already_taken() -> None:
    prefix = PrefixFactory()
    (first,) = insert_rows(Handle, HANDLE_COLUMNS, handle_rows(prefix, 1, stem="a"))
    created = Handle.objects.create(prefix=prefix, suffix="orm", suffix_key="ORM", target_url="https://example.org/o")
    (after,) = insert_rows(Handle, HANDLE_COLUMNS, handle_rows(prefix, 1, stem="b"))
    assert first < created.pk < after  # the ORM and the bulk insert draw from one sequence


# --- update_rows -----------------------------------------------------------------------------------------
def saved_handles(count: int, *, stem: str = "u") -> list[Handle]:
    prefix = PrefixFactory()
    ids = insert_rows(Handle, HANDLE_COLUMNS, handle_rows(prefix, count, stem=stem))
    return list(Handle.objects.filter(pk__in=ids).order_by("pk"))


@check
def update_nothing_asks_nothing() -> None:
    assert queries_of(lambda: update_rows([], ["status"])) == 0


@check
def update_one_row_writes_only_the_fields_named() -> None:
    handle, other = saved_handles(2)
    handle.status = Handle.Status.TOMBSTONED
    handle.target_url = "https://example.org/not-saved"  # changed in memory, not named
    assert queries_of(lambda: update_rows([handle], ["status"])) == 1
    stored = Handle.objects.get(pk=handle.pk)
    assert (stored.status, stored.target_url) == (Handle.Status.TOMBSTONED, "https://example.org/u/0")
    assert Handle.objects.get(pk=other.pk).status == Handle.Status.ACTIVE


@check
def update_more_rows_than_a_batch_writes_each_its_own_values() -> None:
    handles = saved_handles(BULK_BATCH_SIZE + 1, stem="b")
    when = datetime(2025, 1, 1, tzinfo=UTC)
    for n, handle in enumerate(handles):
        handle.synced_version = n  # differ per row: a CASE
        handle.synced_at = when + timedelta(seconds=n)
        handle.status = Handle.Status.PENDING  # the same for all: one value
    assert queries_of(lambda: update_rows(handles, ["synced_version", "synced_at", "status"])) == 2  # two chunks
    rows = list(Handle.objects.filter(pk__in=[h.pk for h in handles]).order_by("pk")
                .values_list("synced_version", "synced_at", "status"))
    assert rows == [(n, when + timedelta(seconds=n), Handle.Status.PENDING) for n in range(len(handles))]


@check
def update_writes_nulls_alone_and_among_values() -> None:
    handles = saved_handles(3, stem="n")
    asset = Asset.objects.create(source_system="dams", external_id="n2", url="https://example.org/a")
    when = datetime(2025, 6, 1, 12, 0, 0, 654321, tzinfo=UTC)
    for handle, tombstoned_at, asset_id in zip(handles, [None, when, None], [asset.pk, None, None], strict=True):
        handle.tombstoned_at = tombstoned_at  # NULL among values: the CASE
        handle.asset_id = asset_id
        handle.deleted_at = None  # NULL for all: one value
    update_rows(handles, ["tombstoned_at", "asset_id", "deleted_at"])
    rows = list(Handle.objects.filter(pk__in=[h.pk for h in handles]).order_by("pk")
                .values_list("tombstoned_at", "asset_id", "deleted_at"))
    assert rows == [(None, asset.pk, None), (when, None, None), (None, None, None)]
    for handle in handles:
        handle.tombstoned_at = when
    update_rows(handles, ["tombstoned_at"])  # and back from NULL
    assert set(Handle.objects.filter(pk__in=[h.pk for h in handles]).values_list("tombstoned_at", flat=True)) == {when}


@check
def update_carries_awkward_text_unchanged() -> None:
    handles = saved_handles(len(AWKWARD_TEXTS), stem="w")
    for handle, text in zip(handles, AWKWARD_TEXTS, strict=True):
        handle.tombstone_reason = text
    update_rows(handles, ["tombstone_reason"])
    stored = dict(Handle.objects.filter(pk__in=[h.pk for h in handles]).values_list("pk", "tombstone_reason"))
    assert [stored[h.pk] for h in handles] == AWKWARD_TEXTS


def test_chunks_cut_a_list_into_batches() -> None:
    assert [list(c) for c in chunks([1, 2, 3, 4, 5], 2)] == [[1, 2], [3, 4], [5]]
    assert list(chunks([], 2)) == []
    assert [len(c) for c in chunks(list(range(BULK_BATCH_SIZE + 1)))] == [BULK_BATCH_SIZE, 1]


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(CHECKS))
def test_on_postgresql(name: str) -> None:
    assert connection.vendor == "postgresql"
    CHECKS[name]()


SQLITE_SCRIPT = r'''
import json, traceback
import django
django.setup()
from django.core.management import call_command
from django.db import connection, transaction

call_command("migrate", verbosity=0)
from tests import test_dbwrites

results = {}
for name, check in sorted(test_dbwrites.CHECKS.items()):
    try:
        with transaction.atomic():
            check()
            transaction.set_rollback(True)
        results[name] = "passed"
    except Exception:
        results[name] = traceback.format_exc()
print("RESULT " + json.dumps({"vendor": connection.vendor, "results": results}))
'''


@pytest.fixture(scope="module")
def on_sqlite(tmp_path_factory) -> dict[str, str]:
    """Run every check on a fresh SQLite database in a process of its own; each check's outcome by name."""
    database = tmp_path_factory.mktemp("dbwrites") / "handles.sqlite3"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "HANDLES_DEV": "",
           "DATABASE_URL": f"sqlite:///{database}"}
    done = subprocess.run([sys.executable, "-c", SQLITE_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    line = next((line for line in done.stdout.splitlines() if line.startswith("RESULT ")), None)
    assert done.returncode == 0 and line, done.stdout[-3000:] + done.stderr[-3000:]
    outcome = json.loads(line.removeprefix("RESULT "))
    assert outcome["vendor"] == "sqlite"
    assert sorted(outcome["results"]) == sorted(CHECKS)  # every check ran there
    return outcome["results"]


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_on_sqlite(on_sqlite: dict[str, str], name: str) -> None:
    assert on_sqlite[name] == "passed", on_sqlite[name]
