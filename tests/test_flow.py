"""End to end with real processes: a django-q2 worker cluster, the simulator, PostgreSQL."""

from __future__ import annotations

import pytest
from django_q.conf import Conf
from django_q.models import Schedule

from handles import services
from handles.handle_server.client import HandleNotFound, client_for
from handles.models import HandleRequest
from tests.worker_process import WorkerProcess, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def broker_queue(monkeypatch):
    """Enqueue to the real ORM broker instead of running tasks inline."""
    monkeypatch.setattr(Conf, "SYNC", False)


@pytest.fixture
def worker(broker_queue, tmp_path):
    with WorkerProcess(log_path=tmp_path / "qcluster.log") as process:
        yield process


def finished(request_id: int) -> HandleRequest | None:
    request = HandleRequest.objects.get(pk=request_id)
    return request if request.finished else None


def test_sweep_schedule_is_installed():
    schedule = Schedule.objects.get(func="handles.tasks.sweep_requests")
    assert (schedule.schedule_type, schedule.minutes, schedule.repeats) == (Schedule.MINUTES, 1, -1)


def test_lifecycle_through_a_worker_process(prefix, worker, unique_suffix):
    client = client_for(prefix.server_config())
    mint = services.handle_mint(prefix=prefix, suffix=unique_suffix("e2e"), target_url="https://example.org/1")
    assert wait_for(lambda: finished(mint.pk), what="mint").status == "success"
    handle = mint.handle
    assert client.get_url(handle.full_handle)[0] == "https://example.org/1"

    redirect = services.handle_redirect(handle=handle, target_url="https://example.org/2")
    tombstone = services.handle_tombstone(handle=handle, reason="withdrawn")
    assert wait_for(lambda: finished(tombstone.pk), what="tombstone").status == "success"
    assert HandleRequest.objects.get(pk=redirect.pk).status == "success"
    handle.refresh_from_db()
    assert client.get_url(handle.full_handle)[0] == handle.tombstone_url

    delete = services.handle_delete(handle=handle)
    assert wait_for(lambda: finished(delete.pk), what="delete").status == "success"
    with pytest.raises(HandleNotFound):
        client.get_url(handle.full_handle)


def test_outage_then_recovery(prefix, sim, worker, unique_suffix):
    """Stop the server, redirect: the request retries (attempts recorded) and succeeds once it is back."""
    client = client_for(prefix.server_config())
    mint = services.handle_mint(prefix=prefix, suffix=unique_suffix("outage"), target_url="https://example.org/a")
    assert wait_for(lambda: finished(mint.pk), what="mint").status == "success"
    sim.stop()
    try:
        redirect = services.handle_redirect(handle=mint.handle, target_url="https://example.org/b")
        wait_for(lambda: HandleRequest.objects.filter(pk=redirect.pk, attempts__gte=1, status="queued").exists(),
                 what="a failed first attempt")
        request = HandleRequest.objects.get(pk=redirect.pk)
        assert "Could not reach" in request.error and request.next_attempt_at is not None
    finally:
        sim.start()

    def sweep_tick() -> HandleRequest | None:
        # The every-minute sweep hands due retries back to the queue; tick it here instead of waiting.
        services.requests_sweep()
        return finished(redirect.pk)

    wait_for(sweep_tick, interval=0.5, what="the retry")
    request = HandleRequest.objects.get(pk=redirect.pk)
    assert request.status == "success" and request.attempts >= 2
    assert client.get_url(mint.full_handle)[0] == "https://example.org/b"
