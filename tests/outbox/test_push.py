"""The request queue against the simulator over real HTTPS (handles.outbox.push through handles.tasks):
success means verified on the server."""

from __future__ import annotations

import random
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from handles import tasks
from handles.exceptions import HandleExists
from handles.handle_server.client import HandleNotFound, client_for
from handles.models import Handle, HandleRequest
from handles.outbox import sweep
from handles.services import handles as handle_services
from handles.services import requests as request_services
from tests.outbox.helpers import make_due, server_url

pytestmark = pytest.mark.django_db


def test_mint_reaches_the_server_and_is_verified(prefix, run_queue, unique_suffix):
    req = run_queue(handle_services.handle_mint, prefix=prefix, suffix=unique_suffix(), target_url="https://example.org/1")
    handle = Handle.objects.get(pk=req.handle_id)
    assert (req.status, req.attempts, req.pushed_version, req.error) == ("success", 1, 1, "")
    assert "PUT" in req.server_output and "overwrite=false" in req.server_output and "Verified" in req.server_output
    assert (handle.status, handle.synced_version, handle.in_sync) == ("active", 1, True)
    assert server_url(prefix, handle) == "https://example.org/1"


def test_redirect_tombstone_restore_delete_on_the_server(prefix, run_queue, unique_suffix):
    handle = run_queue(handle_services.handle_mint, prefix=prefix, suffix=unique_suffix(), target_url="https://example.org/a").handle
    assert run_queue(handle_services.handle_redirect, handle=handle, target_url="https://example.org/b").status == "success"
    assert server_url(prefix, handle) == "https://example.org/b"
    assert run_queue(handle_services.handle_tombstone, handle=handle, reason="withdrawn").status == "success"
    handle.refresh_from_db()
    assert server_url(prefix, handle) == handle.tombstone_url
    assert run_queue(handle_services.handle_restore, handle=handle).status == "success"
    assert server_url(prefix, handle) == "https://example.org/b"
    assert run_queue(handle_services.handle_delete, handle=handle).status == "success"
    with pytest.raises(HandleNotFound):
        server_url(prefix, handle)
    handle.refresh_from_db()
    assert handle.status == "deleted" and handle.in_sync


def test_every_task_run_twice_changes_nothing(prefix, run_queue, unique_suffix):
    req = run_queue(handle_services.handle_mint, prefix=prefix, suffix=unique_suffix(), target_url="https://example.org/t")
    handle = req.handle
    for request_id in [req.pk, run_queue(handle_services.handle_redirect, handle=handle, target_url="https://example.org/u").pk,
                       run_queue(handle_services.handle_verify, handle=handle).pk]:
        before = HandleRequest.objects.get(pk=request_id)
        assert tasks.push_request(request_id) == "finished"
        after = HandleRequest.objects.get(pk=request_id)
        assert (after.status, after.attempts, after.server_output) == (before.status, before.attempts, before.server_output)
    assert server_url(prefix, handle) == "https://example.org/u"
    deleted = run_queue(handle_services.handle_delete, handle=handle)
    assert tasks.push_request(deleted.pk) == "finished"
    assert tasks.sweep_requests() == "reclaimed 0, enqueued 0"  # nothing left to hand over


def test_lost_create_response_is_recovered_on_retry(prefix, run_queue, unique_suffix, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():  # recorded, not yet pushed
        req = handle_services.handle_mint(prefix=prefix, suffix=unique_suffix(), target_url="https://example.org/landed")
    client_for(prefix.server_config()).create_handle(req.full_handle, [
        {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
            "handle": "20.500.12345/ADMIN", "index": 300, "permissions": "111111111111"}}},
        {"index": 1, "type": "URL", "data": {"format": "string", "value": "https://example.org/landed"}}])
    HandleRequest.objects.filter(pk=req.pk).update(attempts=1)  # the first attempt's answer was lost
    assert tasks.push_request(req.pk) == "success"
    req.refresh_from_db()
    assert req.status == "success" and "409" in req.server_output


def test_first_create_of_someone_elses_handle_is_an_error(prefix, run_queue, unique_suffix):
    name = f"20.500.12345/{unique_suffix('theirs')}"
    client_for(prefix.server_config()).create_handle(name, [
        {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
            "handle": "20.500.12345/ADMIN", "index": 300, "permissions": "111111111111"}}},
        {"index": 1, "type": "URL", "data": "https://elsewhere.example/x"}])
    req = run_queue(handle_services.handle_mint, prefix=prefix, suffix=name.split("/", 1)[1], target_url="https://example.org/mine")
    assert req.status == "error"
    assert "already exists on the Handle server" in req.error and "https://elsewhere.example/x" in req.error
    assert server_url(prefix, req.handle) == "https://elsewhere.example/x"  # never overwritten


def test_many_changes_to_one_handle_final_state_wins(prefix, run_queue, unique_suffix, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():
        handle = handle_services.handle_mint(prefix=prefix, suffix=unique_suffix(), target_url="https://example.org/v0").handle
        for i in range(1, 16):
            handle_services.handle_redirect(handle=handle, target_url=f"https://example.org/v{i}")
    ids = list(HandleRequest.objects.filter(handle=handle).values_list("pk", flat=True))
    with django_capture_on_commit_callbacks(execute=True):  # a finished request hands over the next one
        for request_id in random.sample(ids, len(ids)) * 2:  # deliveries in any order, with duplicates
            tasks.push_request(request_id)
    statuses = set(HandleRequest.objects.filter(handle=handle).values_list("status", flat=True))
    assert statuses == {"success"}
    handle.refresh_from_db()
    assert handle.in_sync and server_url(prefix, handle) == "https://example.org/v15"
    finished = list(HandleRequest.objects.filter(handle=handle).order_by("pk").values_list("finished_at", flat=True))
    assert finished == sorted(finished)  # reached the server in the order asked


def test_transient_errors_retry_with_backoff_then_succeed(prefix, sim, run_queue, unique_suffix, settings):
    settings.HANDLES_BACKOFF_BASE_SECONDS = 30
    handle = run_queue(handle_services.handle_mint, prefix=prefix, suffix=unique_suffix(), target_url="https://example.org/r").handle
    sim.set_fault("503")
    req = run_queue(handle_services.handle_redirect, handle=handle, target_url="https://example.org/r2")
    assert (req.status, req.attempts) == ("queued", 1)
    assert "unavailable" in req.error and req.next_attempt_at > timezone.now() + timedelta(seconds=25)
    assert sweep.requests_sweep() == {"reclaimed": 0, "enqueued": 0}  # not due yet
    sim.set_fault("down")
    make_due(req)
    run_queue(sweep.requests_sweep)
    req.refresh_from_db()
    assert (req.status, req.attempts) == ("queued", 2) and "Could not reach" in req.error
    sim.clear_faults()
    make_due(req)
    run_queue(sweep.requests_sweep)
    req.refresh_from_db()
    assert (req.status, req.attempts, req.error) == ("success", 3, "")
    assert server_url(prefix, handle) == "https://example.org/r2"


def test_attempts_are_spent_before_error(prefix, sim, run_queue, unique_suffix, settings):
    settings.HANDLES_MAX_ATTEMPTS = 2
    handle = run_queue(handle_services.handle_mint, prefix=prefix, suffix=unique_suffix(), target_url="https://example.org/g").handle
    sim.set_fault("503")
    req = run_queue(handle_services.handle_redirect, handle=handle, target_url="https://example.org/g2")
    assert req.status == "queued"
    make_due(req)
    run_queue(sweep.requests_sweep)
    req.refresh_from_db()
    assert req.status == "error" and req.error.startswith("Gave up after 2 attempts")
    sim.clear_faults()
    run_queue(request_services.request_retry, request=req)
    req.refresh_from_db()
    assert req.status == "success" and req.attempts == 3


def test_update_of_a_handle_missing_on_the_server_is_an_error(prefix, run_queue, unique_suffix):
    handle = run_queue(handle_services.handle_mint, prefix=prefix, suffix=unique_suffix(), target_url="https://example.org/m").handle
    client_for(prefix.server_config()).delete_handle(handle.full_handle)
    req = run_queue(handle_services.handle_redirect, handle=handle, target_url="https://example.org/m2")
    assert req.status == "error" and "not on the Handle server" in req.error
    assert run_queue(handle_services.handle_verify, handle=handle).error.endswith("is missing on the Handle server.")


@pytest.mark.django_db(transaction=True)
def test_concurrent_mints_of_one_suffix_make_exactly_one_handle(prefix, unique_suffix, no_enqueue):
    suffix = unique_suffix("race")
    barrier = threading.Barrier(6)
    results: list[str] = []

    def mint() -> None:
        barrier.wait()
        try:
            handle_services.handle_mint(prefix=prefix, suffix=suffix, target_url="https://example.org/race")
            results.append("minted")
        except HandleExists:
            results.append("exists")
        finally:
            connection.close()

    threads = [threading.Thread(target=mint) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["exists"] * 5 + ["minted"]
    assert Handle.objects.filter(suffix_key=suffix.upper()).count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_workers_at_once_keep_per_handle_order(prefix, unique_suffix, no_enqueue):
    handles = []
    for n in range(3):
        handle = handle_services.handle_mint(prefix=prefix, suffix=unique_suffix(f"w{n}"), target_url="https://example.org/0").handle
        for i in range(1, 6):
            handle_services.handle_redirect(handle=handle, target_url=f"https://example.org/{n}/{i}")
        handles.append(handle)
    ids = list(HandleRequest.objects.filter(handle__in=handles).values_list("pk", flat=True))

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(4):
                for request_id in rng.sample(ids, len(ids)):
                    tasks.push_request(request_id)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(HandleRequest.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"success"}
    for n, handle in enumerate(handles):
        handle.refresh_from_db()
        assert handle.in_sync and server_url(prefix, handle) == f"https://example.org/{n}/5"
        spans = list(HandleRequest.objects.filter(handle=handle).order_by("pk").values_list("started_at", "finished_at"))
        for (_, finished), (started, _) in zip(spans, spans[1:], strict=False):
            assert finished <= started  # never two pushes of one handle at once, and in order
