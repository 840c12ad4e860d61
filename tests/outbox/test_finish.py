"""Finishing (handles.outbox.finish): one transaction records a batch of outcomes and hands over what is next."""

from __future__ import annotations

import pytest

from handles.models import HandleRequest
from handles.outbox import finish, handover
from handles.outbox.claims import requests_claim_batch
from tests.outbox.helpers import record_unpushed

pytestmark = pytest.mark.django_db


def test_batch_finish_records_each_outcome_and_hands_over_the_next(prefix, unique_suffix,
                                                                   django_capture_on_commit_callbacks, monkeypatch):
    handed: list[int] = []
    monkeypatch.setattr(handover, "enqueue_request", handed.append)
    two = record_unpushed(prefix, unique_suffix, django_capture_on_commit_callbacks, changes=2)
    (flaky,) = record_unpushed(prefix, unique_suffix, django_capture_on_commit_callbacks)
    (untried,) = record_unpushed(prefix, unique_suffix, django_capture_on_commit_callbacks)
    (taken_back,) = record_unpushed(prefix, unique_suffix, django_capture_on_commit_callbacks)
    handover.requests_mark_enqueued([untried.pk])  # its task was handed over and has run
    claims = {c.request_id: c for c in requests_claim_batch(10)}
    HandleRequest.objects.filter(pk=taken_back.pk).update(status="queued", lease_token=None)  # the sweep's doing
    with django_capture_on_commit_callbacks(execute=True):
        recorded = finish.requests_finish_batch([
            (claims[two[0].pk], finish.Outcome("success", output="Verified")),
            (claims[flaky.pk], finish.Outcome("transient", error="503")),
            (claims[untried.pk], None),
            (claims[taken_back.pk], finish.Outcome("success")),
        ])
    assert sorted(r.pk for r in recorded) == sorted([two[0].pk, flaky.pk, untried.pk])
    assert handed == [two[1].pk]  # the next request of the finished handle, once
    done, flaky, untried, taken_back = (HandleRequest.objects.get(pk=r.pk) for r in (two[0], flaky, untried, taken_back))
    assert (done.status, done.pushed_version, done.lease_token) == ("success", 2, None) and "Verified" in done.server_output
    assert (done.handle.status, done.handle.synced_version) == ("active", 2)
    assert (flaky.status, flaky.attempts, flaky.error, flaky.lease_token) == ("queued", 1, "503", None)
    assert flaky.handle.status == "pending"
    assert (untried.status, untried.attempts, untried.lease_token) == ("queued", 0, None)  # attempt not spent
    assert untried.next_attempt_at is not None and untried.next_attempt_at > untried.enqueued_at  # the sweep resends it
    assert (taken_back.status, taken_back.attempts) == ("queued", 1)  # a lost lease records nothing
