"""Handing requests to the task queue (handles.outbox.handover): with the ORM broker (its queue table in our
database) the task row is written in the transaction that records the request, so both commit or neither
does; otherwise (Redis, inline tasks) the hand-over runs after the commit."""

from __future__ import annotations

import pytest
from django.db import transaction
from django_q.brokers import get_broker
from django_q.conf import Conf

from handles import tasks
from handles.models import HandleRequest
from handles.outbox import handover
from handles.services import handles as handle_services
from handles.services.handles import MintItem

pytestmark = pytest.mark.django_db


@pytest.fixture
def orm_queue(monkeypatch):
    """The production set-up without Redis: the ORM broker, tasks run by workers (none runs here)."""
    monkeypatch.setattr(Conf, "SYNC", False)
    monkeypatch.setattr(Conf, "ORM", "default")
    broker = get_broker()
    broker.purge_queue()
    yield broker
    broker.purge_queue()


def test_a_mint_and_its_task_commit_together(prefix, unique_suffix, orm_queue, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        request = handle_services.handle_mint(prefix=prefix, suffix=unique_suffix(), target_url="https://example.org/1")
    assert callbacks == []  # nothing waits for the commit: the task row is in the transaction
    assert orm_queue.queue_size() == 1
    request.refresh_from_db()
    assert request.enqueued_at is not None and request.status == "queued"


def test_a_mint_rolled_back_leaves_no_task(prefix, unique_suffix, orm_queue):
    with pytest.raises(RuntimeError), transaction.atomic():
        handle_services.handle_mint(prefix=prefix, suffix=unique_suffix(), target_url="https://example.org/1")
        raise RuntimeError("the caller's transaction fails after the mint")
    assert orm_queue.queue_size() == 0
    assert not HandleRequest.objects.exists()


def test_inline_tasks_still_run_after_the_commit(prefix, unique_suffix, django_capture_on_commit_callbacks):
    assert Conf.SYNC  # the test settings
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        request = handle_services.handle_mint(prefix=prefix, suffix=unique_suffix(), target_url="https://example.org/1")
    assert len(callbacks) == 1
    request.refresh_from_db()
    assert request.enqueued_at is None and request.status == "queued"  # handed over only when it commits


def test_a_bulk_mint_sends_one_task_per_list(prefix, unique_suffix, orm_queue, django_capture_on_commit_callbacks,
                                             monkeypatch):
    monkeypatch.setattr(handover, "PUSH_LIST_SIZE", 2)
    with django_capture_on_commit_callbacks(execute=True):
        ids = handle_services.handles_mint_bulk(prefix=prefix, items=[
            MintItem(f"https://example.org/{i}", suffix=unique_suffix()) for i in range(5)])
    assert orm_queue.queue_size() == 3  # lists of 2, 2 and 1
    assert HandleRequest.objects.filter(pk__in=ids, enqueued_at__isnull=False).count() == 5


def test_a_hand_over_task_passes_what_it_cannot_hand_out_in_time_to_a_new_task(settings, monkeypatch):
    """2,000 requests handed out one by one on SQLite outlasted HANDLES_TASK_TIMEOUT (10 s, a 5,000-row repair
    from make run): the cluster killed the task and the rest waited for the minute sweep. A hand-over stops
    after a quarter of the timeout (here 0 s: one request) and hands the rest to a new task (inline here)."""
    settings.HANDLES_TASK_TIMEOUT = 0
    handed_out: list[int] = []
    monkeypatch.setattr(handover, "enqueue_request", handed_out.append)
    assert tasks.hand_over_requests([7, 8, 9]) == "handed over 1, 2 to a new task"
    assert handed_out == [7, 8, 9]
