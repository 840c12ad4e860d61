"""Claims (handles.outbox.claims): one request or a batch, taken under a lease, in per-handle order."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from handles.models import Handle, HandleRequest
from handles.outbox.claims import request_claim, requests_claim_batch
from handles.services import handles as handle_services
from tests.factories import HandleFactory, PrefixFactory
from tests.outbox.helpers import record_unpushed

pytestmark = pytest.mark.django_db


def test_claim_follows_request_order_per_handle():
    handle = HandleFactory(prefix=PrefixFactory())
    first = handle_services.handle_redirect(handle=handle, target_url="https://example.org/1")
    second = handle_services.handle_redirect(handle=handle, target_url="https://example.org/2")
    assert request_claim(second.pk) == "waiting"
    claim = request_claim(first.pk)
    assert claim.url == "https://example.org/2"  # the push carries the current state
    assert request_claim(first.pk) == "running"
    assert request_claim(second.pk) == "waiting"


def test_batch_claim_takes_each_handles_oldest_due_request(prefix, unique_suffix, django_capture_on_commit_callbacks,
                                                           settings):
    three = record_unpushed(prefix, unique_suffix, django_capture_on_commit_callbacks, changes=3)
    (one,) = record_unpushed(prefix, unique_suffix, django_capture_on_commit_callbacks)
    (later,) = record_unpushed(prefix, unique_suffix, django_capture_on_commit_callbacks)
    HandleRequest.objects.filter(pk=later.pk).update(next_attempt_at=timezone.now() + timedelta(minutes=5))
    before = timezone.now()
    claims = requests_claim_batch(10)
    assert [c.request_id for c in claims] == [three[0].pk, one.pk]  # one per handle, oldest first, due only
    assert [(c.attempts, c.version, c.url) for c in claims] == [(1, 3, "https://example.org/b2"),
                                                              (1, 1, "https://example.org/b0")]  # current state
    for request in HandleRequest.objects.filter(pk__in=[three[0].pk, one.pk]):
        assert (request.status, request.attempts, request.lease_token) == ("running", 1, claims[0].lease_token)
        assert request.lease_until >= before + timedelta(seconds=settings.HANDLES_LEASE_SECONDS)
    # The running heads keep their handles' later requests waiting; the not-due one stays queued.
    assert requests_claim_batch(10) == []
    assert request_claim(three[1].pk) == "waiting"


@pytest.mark.django_db(transaction=True)
def test_batch_claim_skips_handles_another_transaction_holds(prefix, unique_suffix, no_enqueue):
    busy = handle_services.handle_mint(prefix=prefix, suffix=unique_suffix("busy"), target_url="https://example.org/x")
    free = handle_services.handle_mint(prefix=prefix, suffix=unique_suffix("free"), target_url="https://example.org/y")
    locked, release = threading.Event(), threading.Event()

    def hold_the_handle() -> None:  # e.g. another worker finishing it, or a change being recorded
        try:
            with transaction.atomic():
                Handle.objects.select_for_update().get(pk=busy.handle_id)
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_the_handle)
    holder.start()
    try:
        assert locked.wait(10)
        assert [c.request_id for c in requests_claim_batch(10)] == [free.pk]  # did not wait for the lock
    finally:
        release.set()
        holder.join()
    assert [c.request_id for c in requests_claim_batch(10)] == [busy.pk]
    assert requests_claim_batch(10) == []
