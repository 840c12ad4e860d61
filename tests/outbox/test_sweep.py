"""The minute sweep (handles.outbox.sweep): crashed workers' requests and lost hand-overs come back."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.brokers import get_broker

from handles.models import HandleRequest
from handles.outbox import finish, handover, sweep
from handles.outbox.claims import request_claim
from handles.services import handles as handle_services

pytestmark = pytest.mark.django_db


def test_sweep_recovers_a_crashed_worker(prefix, run_queue, unique_suffix, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():
        req = handle_services.handle_mint(prefix=prefix, suffix=unique_suffix(), target_url="https://example.org/c")
    claim = request_claim(req.pk)  # a worker takes it, then dies
    assert claim.attempts == 1
    assert sweep.requests_sweep() == {"reclaimed": 0, "enqueued": 0}  # its lease still runs
    HandleRequest.objects.filter(pk=req.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    counts = run_queue(sweep.requests_sweep)
    assert counts["reclaimed"] == 1
    req.refresh_from_db()
    assert req.status == "success" and req.attempts == 2 and "abandoned" in req.server_output
    # the dead worker wakes up: its late finish is ignored
    assert finish.request_finish(claim, finish.Outcome("permanent", error="late")) is None


def test_sweep_hands_over_lost_enqueues(prefix, unique_suffix, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():  # the on_commit hand-over never happens
        req = handle_services.handle_mint(prefix=prefix, suffix=unique_suffix(), target_url="https://example.org/l")
    assert sweep.requests_sweep()["enqueued"] == 1
    req.refresh_from_db()
    assert req.status == "success"


def test_sweep_hands_out_a_backlog_within_its_share_of_the_task_timeout(prefix, unique_suffix, settings, monkeypatch,
                                                                      django_capture_on_commit_callbacks):
    """A sweep that handed out every lost request one by one outlasted HANDLES_TASK_TIMEOUT (5,000 on SQLite
    with the timeout 10 s): the cluster killed it each minute before it resumed stalled jobs. It stops handing
    out after a quarter of the timeout (here 0 s: one request per sweep); the next sweep goes on."""
    settings.HANDLES_TASK_TIMEOUT = 0
    handed_out: list[int] = []
    monkeypatch.setattr(handover, "enqueue_request", lambda request_id: (
        handover.requests_mark_enqueued([request_id]), handed_out.append(request_id)))
    with django_capture_on_commit_callbacks():  # recorded, their hand-over lost
        lost = [handle_services.handle_mint(prefix=prefix, suffix=unique_suffix(), target_url=f"https://example.org/{n}")
                for n in range(3)]
    assert [sweep.requests_sweep()["enqueued"] for _ in range(4)] == [1, 1, 1, 0]
    assert handed_out == sorted(request.pk for request in lost)


def test_sweep_leaves_a_backlog_to_the_tasks_waiting_in_the_broker(prefix, unique_suffix, settings,
                                                                   django_capture_on_commit_callbacks):
    """A request handed out long ago whose task still waits behind others is not handed out twice; once
    the broker is empty, a request that still waits has lost its task and is handed out again."""
    with django_capture_on_commit_callbacks():
        waiting = handle_services.handle_mint(prefix=prefix, suffix=unique_suffix(), target_url="https://example.org/w")
        never = handle_services.handle_mint(prefix=prefix, suffix=unique_suffix(), target_url="https://example.org/n")
    long_ago = timezone.now() - timedelta(seconds=settings.HANDLES_REENQUEUE_AFTER_SECONDS + 1)
    HandleRequest.objects.filter(pk=waiting.pk).update(enqueued_at=long_ago)  # handed out, its task in the queue
    broker = get_broker()
    broker.enqueue("a task ahead of it in the queue")
    try:
        assert handover.broker_backlog() == 1
        assert sweep.requests_sweep()["enqueued"] == 1  # only the one never handed out
        never.refresh_from_db()
        waiting.refresh_from_db()
        assert (never.status, waiting.status) == ("success", "queued")
    finally:
        broker.purge_queue()
    assert handover.broker_backlog() == 0
    assert sweep.requests_sweep()["enqueued"] == 1
    waiting.refresh_from_db()
    assert waiting.status == "success"
