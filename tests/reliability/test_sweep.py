"""The sweep, the safety net that runs every minute: what it takes back it hands out in the same run."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from handles import services
from handles.models import HandleRequest
from handles.outbox import handover


@pytest.mark.django_db
def test_a_crashed_workers_request_is_handed_out_again_by_the_same_sweep(prefix, monkeypatch, stem):
    handed_out: list[int] = []
    monkeypatch.setattr(handover, "enqueue_request", handed_out.append)
    mint = services.handle_mint(prefix=prefix, suffix=f"{stem}-sweep", target_url="https://example.org/s")
    # A worker claimed it (and it was enqueued a moment ago), then died: its lease runs out.
    claim = services.request_claim(mint.pk)
    past = timezone.now() - timedelta(seconds=1)
    HandleRequest.objects.filter(pk=mint.pk).update(enqueued_at=past, lease_until=past)

    assert services.requests_sweep() == {"reclaimed": 1, "enqueued": 1}
    assert handed_out == [mint.pk]
    request = HandleRequest.objects.get(pk=mint.pk)
    assert (request.status, request.attempts, request.lease_token) == ("queued", claim.attempts, None)
