"""Row locks: a transaction that holds a prefix's row (an import locks its prefix for its whole run, the
admin saves it, the worker records its last contact) must not stop the queue or the desk for every
handle of that prefix."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from django.db import connection

from handles import services, tasks
from handles.models import HandleRequest, Prefix
from handles.outbox import handover
from tests.reliability.conftest import heavy

pytestmark = [pytest.mark.django_db(transaction=True), heavy]


@contextmanager
def prefix_row_locked(prefix: Prefix) -> Iterator[None]:
    """Another session holds the prefix's row lock, as import_batch_apply does for a whole import."""
    db = connection.settings_dict
    other = psycopg.connect(host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"] or "postgres",
                            dbname=db["NAME"])
    with connection.cursor() as cursor:  # fail in 3 s instead of hanging when queued behind that lock
        cursor.execute("SET lock_timeout = '3s'")
    try:
        other.execute("SELECT id FROM handles_prefix WHERE id = %s FOR UPDATE", [prefix.pk])
        yield
    finally:
        other.rollback()
        other.close()
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")


def test_changes_and_pushes_go_on_while_the_prefix_row_is_locked(prefix, stem, monkeypatch, run_queue):
    handle = run_queue(services.handle_mint, prefix=prefix, suffix=f"{stem}-lock",
                       target_url="https://example.org/lock/1").handle
    queued: list[int] = []
    monkeypatch.setattr(handover, "enqueue_request", queued.append)
    Prefix.objects.filter(pk=prefix.pk).update(last_contact_at=None)  # the worker will want to record contact
    with prefix_row_locked(prefix):
        redirect = services.handle_redirect(handle=handle, target_url="https://example.org/lock/2")
        assert queued == [redirect.pk]
        # claim, push, finish and the dashboard's contact record, all while the prefix row is held
        assert tasks.push_request(redirect.pk) == "success"
    redirect.refresh_from_db()
    handle.refresh_from_db()
    assert redirect.status == HandleRequest.Status.SUCCESS and handle.in_sync
    assert handle.target_url == "https://example.org/lock/2"
