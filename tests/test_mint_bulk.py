"""Minting many handles in one transaction (services.handles_mint_bulk) and pushing them from lists
(tasks.push_requests): the same checks, per-handle order, leases and read-back as one mint at a time."""

from __future__ import annotations

import pytest

from handles import services, tasks
from handles.exceptions import HandleExists, HandleServiceError
from handles.handle_server.client import client_for
from handles.models import Handle, HandleRequest
from handles.services import MintItem

pytestmark = pytest.mark.django_db


def test_a_bulk_mint_records_pending_handles_and_pushes_them_all_verified(prefix, run_queue, unique_suffix,
                                                                          settings):
    settings.HANDLES_DRAIN_SECONDS = 30
    items = [MintItem(f"https://example.org/bulk/{i}", suffix=unique_suffix("bulk")) for i in range(5)]
    items.append(MintItem("https://example.org/bulk/random"))  # the prefix's random suffix policy
    request_ids = run_queue(services.handles_mint_bulk, prefix=prefix, items=items, via="bench")
    requests = list(HandleRequest.objects.filter(pk__in=request_ids).select_related("handle").order_by("pk"))
    assert [r.pk for r in requests] == request_ids  # in the items' order
    assert {(r.op, r.action, r.status, r.attempts, r.requested_via) for r in requests} == {
        ("create", "mint", "success", 1, "bench")}
    assert [r.handle.target_url for r in requests] == [item.target_url for item in items]
    assert all(r.handle.status == "active" and r.handle.in_sync and r.enqueued_at for r in requests)
    client = client_for(prefix.server_config())
    assert [client.get_url(r.full_handle)[0] for r in requests] == [item.target_url for item in items]
    assert "Verified" in requests[0].server_output and "overwrite=false" in requests[0].server_output


@pytest.mark.parametrize("bad, error", [
    ("javascript:alert(1)", HandleServiceError),
    ("taken", HandleExists),
    ("twice", HandleExists),
])
def test_one_refused_item_refuses_the_whole_batch(prefix, run_queue, unique_suffix, bad, error):
    taken = run_queue(services.handle_mint, prefix=prefix, suffix=unique_suffix("taken"),
                      target_url="https://example.org/taken")
    before = (Handle.objects.count(), HandleRequest.objects.count())
    items = [MintItem("https://example.org/ok", suffix=unique_suffix("ok"))]
    if bad == "taken":
        items.append(MintItem("https://example.org/again", suffix=taken.handle.suffix.upper()))
    elif bad == "twice":
        items += [MintItem("https://example.org/a", suffix="Twice-1"), MintItem("https://example.org/b", suffix="twice-1")]
    else:
        items.append(MintItem(bad, suffix=unique_suffix("bad")))
    with pytest.raises(error):
        run_queue(services.handles_mint_bulk, prefix=prefix, items=items)
    assert (Handle.objects.count(), HandleRequest.objects.count()) == before


def test_push_requests_hands_out_what_it_does_not_take(prefix, unique_suffix, django_capture_on_commit_callbacks,
                                                       monkeypatch, settings):
    """A request waiting on an earlier one of its handle is not pushed out of order: it is handed out alone
    (and here the drain after the list pushes it, once the earlier one has finished)."""
    settings.HANDLES_DRAIN_SECONDS = 30
    with django_capture_on_commit_callbacks(execute=False):
        (create_id,) = services.handles_mint_bulk(prefix=prefix, items=[MintItem("https://example.org/1",
                                                                                 suffix=unique_suffix())])
        redirect = services.handle_redirect(handle=Handle.objects.get(requests__pk=create_id),
                                            target_url="https://example.org/2")
    handed_out: list[int] = []
    monkeypatch.setattr(tasks, "enqueue_request", handed_out.append)
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
        ids = services.handles_mint_bulk(prefix=prefix, items=[
            MintItem(f"https://example.org/t/{i}", suffix=unique_suffix()) for i in range(3)])
    sim.set_fault("503")
    assert tasks.push_requests(ids) == "pushed 1 of 3"
    rows = list(HandleRequest.objects.filter(pk__in=ids).order_by("pk").values_list("status", "attempts"))
    assert rows == [("queued", 1), ("queued", 0), ("queued", 0)]  # none spent in vain, none in error
    assert not HandleRequest.objects.due().filter(pk__in=ids).exists()  # they wait for their backoff
