"""Request services (handles.services.requests): staff retry failed requests and cancel queued ones."""

from __future__ import annotations

import pytest

from handles.exceptions import HandleStateError
from handles.models import HandleRequest
from handles.outbox import handover
from handles.services import handles as handle_services
from handles.services import requests as request_services
from tests.factories import HandleFactory, PrefixFactory

pytestmark = pytest.mark.django_db


def test_retry_only_failed_requests_and_grants_new_attempts(staff_user):
    req = handle_services.handle_verify(handle=HandleFactory(prefix=PrefixFactory()))
    with pytest.raises(HandleStateError):
        request_services.request_retry(request=req)
    HandleRequest.objects.filter(pk=req.pk).update(status="error", attempts=10, max_attempts=10, error="boom")
    retried = request_services.request_retry(request=req, actor=staff_user)
    assert (retried.status, retried.attempts, retried.max_attempts) == ("queued", 10, 20)
    assert "retried by staff" in retried.server_output


def test_cancel_ends_queued_requests_leaves_running_ones_and_hands_over_the_next(staff_user, monkeypatch,
                                                                                 django_capture_on_commit_callbacks):
    handed: list[int] = []
    monkeypatch.setattr(handover, "enqueue_request", handed.append)
    handle = HandleFactory(prefix=PrefixFactory())
    first = handle_services.handle_verify(handle=handle)
    second = handle_services.handle_verify(handle=handle)
    running = handle_services.handle_verify(handle=HandleFactory(prefix=first.handle.prefix))
    HandleRequest.objects.filter(pk=running.pk).update(status="running")
    HandleRequest.objects.filter(pk=first.pk).update(error="The server refused our credentials.")
    with django_capture_on_commit_callbacks(execute=True):
        cancelled = request_services.requests_cancel(request_ids=[first.pk, running.pk], actor=staff_user)
    assert cancelled == 1
    first.refresh_from_db()
    running.refresh_from_db()
    assert (first.status, running.status) == ("error", "running")
    assert first.error == ("Cancelled by staff before it reached the server. "
                           "Last error: The server refused our credentials.")
    assert "cancelled by staff" in first.server_output and first.finished_at is not None
    assert handed == [second.pk]  # the handle's next request is now its head, handed over once


def test_retry_in_bulk_touches_only_failed_requests(staff_user, settings):
    prefix = PrefixFactory()
    failed, queued = (handle_services.handle_verify(handle=HandleFactory(prefix=prefix)) for _ in range(2))
    HandleRequest.objects.filter(pk=failed.pk).update(status="error", attempts=3, max_attempts=3)
    assert request_services.requests_retry_bulk(request_ids=[failed.pk, queued.pk, failed.pk], actor=staff_user) == 1
    failed.refresh_from_db()
    queued.refresh_from_db()
    assert (failed.status, failed.max_attempts, failed.finished_at) == ("queued", 3 + settings.HANDLES_MAX_ATTEMPTS,
                                                                         None)
    assert "retried by staff" in failed.server_output and queued.server_output == ""
