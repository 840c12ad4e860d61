"""Draining (handles.outbox.drain, run by the push_request and push_requests tasks): batches of claims,
pushes with no transaction open, one finish per batch, and a stop at the first sign of trouble."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from handles import tasks
from handles.handle_server.client import client_for
from handles.models import Handle, HandleRequest
from handles.outbox import handover
from handles.services import handles as handle_services
from handles.services.handles import MintItem
from tests.outbox.helpers import record_unpushed, server_url

pytestmark = pytest.mark.django_db


@pytest.mark.django_db(transaction=True)
def test_two_draining_workers_push_every_request_once_in_order(prefix, unique_suffix, no_enqueue, settings):
    settings.HANDLES_DRAIN_SECONDS = 30
    settings.HANDLES_DRAIN_BATCH = 3
    handles = []
    for n in range(6):
        handle = handle_services.handle_mint(prefix=prefix, suffix=unique_suffix(f"d{n}"), target_url="https://example.org/0").handle
        for i in range(1, 4):
            handle_services.handle_redirect(handle=handle, target_url=f"https://example.org/{n}/{i}")
        handles.append(handle)
    first_ids = [HandleRequest.objects.filter(handle=h).order_by("pk").first().pk for h in handles[:2]]
    results: list[str] = []

    def worker(request_id: int) -> None:
        try:
            results.append(tasks.push_request(request_id))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(request_id,)) for request_id in first_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    requests = HandleRequest.objects.filter(handle__in=handles)
    assert set(requests.values_list("status", "attempts")) == {("success", 1)}  # each pushed exactly once
    assert sum(int(r.rsplit(" ", 1)[1]) if "drained" in r else 0 for r in results) + 2 == requests.count()
    for n, handle in enumerate(handles):
        handle.refresh_from_db()
        assert handle.in_sync and server_url(prefix, handle) == f"https://example.org/{n}/3"
        spans = list(requests.filter(handle=handle).order_by("pk").values_list("started_at", "finished_at"))
        for (_, finished), (started, _) in zip(spans, spans[1:], strict=False):
            assert finished <= started  # in order, one push of a handle at a time


def test_drain_stops_when_the_server_is_in_trouble(prefix, sim, unique_suffix, django_capture_on_commit_callbacks,
                                                   settings):
    settings.HANDLES_DRAIN_SECONDS = 30
    settings.HANDLES_BACKOFF_BASE_SECONDS = 30
    (own,) = record_unpushed(prefix, unique_suffix, django_capture_on_commit_callbacks)
    others = [record_unpushed(prefix, unique_suffix, django_capture_on_commit_callbacks)[0] for _ in range(3)]
    sim.set_fault("503")
    assert tasks.push_request(own.pk) == "transient"  # no drain after a failed push of its own
    assert set(HandleRequest.objects.filter(pk__in=[r.pk for r in others]).values_list("attempts", flat=True)) == {0}
    sim.clear_faults()
    HandleRequest.objects.filter(pk=own.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    sim.set_fault("503")
    assert tasks.push_request(others[0].pk) == "transient"
    sim.clear_faults()
    # A drain handed a finished request pushes others; after the first transient failure it gives the rest back.
    HandleRequest.objects.filter(pk__in=[own.pk, others[0].pk]).update(status="success")
    sim.set_fault("503")
    assert tasks.push_request(own.pk) == "finished; drained 1"
    rest = list(HandleRequest.objects.filter(pk__in=[r.pk for r in others[1:]]).order_by("pk"))
    assert [(r.status, r.attempts, r.lease_token) for r in rest] == [("queued", 1, None), ("queued", 0, None)]
    assert "unavailable" in rest[0].error and rest[1].next_attempt_at > timezone.now() + timedelta(seconds=25)


def test_push_requests_hands_out_what_it_does_not_take(prefix, unique_suffix, django_capture_on_commit_callbacks,
                                                       monkeypatch, settings):
    """A request waiting on an earlier one of its handle is not pushed out of order: it is handed out alone
    (and here the drain after the list pushes it, once the earlier one has finished)."""
    settings.HANDLES_DRAIN_SECONDS = 30
    with django_capture_on_commit_callbacks(execute=False):
        (create_id,) = handle_services.handles_mint_bulk(prefix=prefix, items=[MintItem("https://example.org/1",
                                                                                 suffix=unique_suffix())])
        redirect = handle_services.handle_redirect(handle=Handle.objects.get(requests__pk=create_id),
                                            target_url="https://example.org/2")
    handed_out: list[int] = []
    monkeypatch.setattr(handover, "enqueue_request", handed_out.append)
    assert tasks.push_requests([redirect.pk, create_id]) == "pushed 1 of 2; handed out 1; drained 1"
    assert handed_out == [redirect.pk]
    spans = list(HandleRequest.objects.filter(pk__in=[create_id, redirect.pk]).order_by("pk")
                 .values_list("status", "started_at", "finished_at"))
    assert [s[0] for s in spans] == ["success", "success"] and spans[0][2] <= spans[1][1]  # in order
    monkeypatch.undo()
    assert tasks.push_request(redirect.pk) == "finished"  # the task handed out finds nothing left to do
    handle = Handle.objects.get(pk=redirect.handle_id)
    assert handle.in_sync and client_for(prefix.server_config()).get_url(handle.full_handle)[0] == "https://example.org/2"


def test_push_requests_stops_at_trouble_and_leaves_the_rest_to_backoff(prefix, sim, unique_suffix,
                                                                       django_capture_on_commit_callbacks, settings):
    settings.HANDLES_DRAIN_SECONDS = 30
    settings.HANDLES_BACKOFF_BASE_SECONDS = 30
    with django_capture_on_commit_callbacks(execute=False):
        ids = handle_services.handles_mint_bulk(prefix=prefix, items=[
            MintItem(f"https://example.org/t/{i}", suffix=unique_suffix()) for i in range(3)])
    sim.set_fault("503")
    assert tasks.push_requests(ids) == "pushed 1 of 3"
    rows = list(HandleRequest.objects.filter(pk__in=ids).order_by("pk").values_list("status", "attempts"))
    assert rows == [("queued", 1), ("queued", 0), ("queued", 0)]  # none spent in vain, none in error
    assert not HandleRequest.objects.due().filter(pk__in=ids).exists()  # they wait for their backoff
