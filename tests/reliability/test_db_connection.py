"""The database connection lost while a push is in flight: the worker cannot record the outcome, the
request stays exactly as claimed (nothing half-written), and the sweep hands it out again to succeed."""

from __future__ import annotations

import pytest
from django.db import connection
from django_q.models import Failure

from handles import services
from handles.models import Handle, HandleRequest
from tests.reliability.conftest import (
    all_finished,
    assert_applied_in_order,
    assert_server_matches_database,
    drive,
    heavy,
)
from tests.worker_process import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), heavy]


def terminate_other_backends() -> int:
    """What a database restart or a dropped network does to every connection but ours."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        return cursor.fetchone()[0]


def test_connection_lost_during_a_push(prefix, sim, clusters, stem):
    clusters("db-loss", HANDLES_SERVER_TIMEOUT=3, HANDLES_LEASE_SECONDS=4)
    mint = services.handle_mint(prefix=prefix, suffix=f"{stem}-db", target_url="https://example.org/db/1")
    drive(all_finished(), timeout=30, what="the mint")

    sim.set_fault("slow", delay=1)
    redirect = services.handle_redirect(handle=mint.handle, target_url="https://example.org/db/2")
    wait_for(lambda: HandleRequest.objects.filter(pk=redirect.pk, status="running").exists(), what="the push")
    assert terminate_other_backends() >= 1
    # The worker's push returns, and recording its outcome fails on the dead connection.
    failure = wait_for(lambda: Failure.objects.filter(func="handles.tasks.push_request").first(), timeout=20,
                       what="the task to fail")
    assert "connection" in failure.result.lower()
    sim.clear_faults()

    # Nothing half-written: the request is still as the claim left it, the handle not marked synced.
    request = HandleRequest.objects.get(pk=redirect.pk)
    handle = Handle.objects.get(pk=mint.handle_id)
    assert (request.status, request.attempts, request.finished_at, request.pushed_version) == ("running", 1, None, None)
    assert request.server_output == "" and handle.synced_version == handle.version - 1

    drive(all_finished(), timeout=30, what="the retry after the lease ran out")
    request.refresh_from_db()
    assert request.status == "success" and request.attempts == 2
    assert "abandoned" in request.server_output
    assert_applied_in_order([mint.handle_id])
    assert_server_matches_database(sim, prefix, [mint.handle_id])
