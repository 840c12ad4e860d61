"""Minting many handles in one transaction (handles.services.handles.handles_mint_bulk): the same checks as
one mint at a time, and every handle pushed and verified. (Pushing the lists: tests/outbox/test_drain.py.)"""

from __future__ import annotations

import pytest

from handles.exceptions import HandleExists, HandleServiceError
from handles.handle_server.client import client_for
from handles.models import Handle, HandleRequest
from handles.services import handles as handle_services
from handles.services.handles import MintItem

pytestmark = pytest.mark.django_db


def test_a_bulk_mint_records_pending_handles_and_pushes_them_all_verified(prefix, run_queue, unique_suffix,
                                                                          settings):
    settings.HANDLES_DRAIN_SECONDS = 30
    items = [MintItem(f"https://example.org/bulk/{i}", suffix=unique_suffix("bulk")) for i in range(5)]
    items.append(MintItem("https://example.org/bulk/random"))  # the prefix's random suffix policy
    request_ids = run_queue(handle_services.handles_mint_bulk, prefix=prefix, items=items, via="bench")
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
    taken = run_queue(handle_services.handle_mint, prefix=prefix, suffix=unique_suffix("taken"),
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
        run_queue(handle_services.handles_mint_bulk, prefix=prefix, items=items)
    assert (Handle.objects.count(), HandleRequest.objects.count()) == before
