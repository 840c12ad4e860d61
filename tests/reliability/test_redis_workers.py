"""Two worker clusters on the Redis broker change the same handles at once: per-handle order holds (the
claim's row lock in PostgreSQL, not the broker, keeps it) and the server ends equal to the database."""

from __future__ import annotations

import uuid

import pytest
import redis
from django_q.conf import Conf

from handles import services, tasks
from tests.reliability.conftest import (
    all_finished,
    assert_applied_in_order,
    assert_server_matches_database,
    drive,
    heavy,
)
from tests.reliability.test_crash import HISTORIES, change

pytestmark = [pytest.mark.django_db(transaction=True), heavy]

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_queue(monkeypatch):
    """This test's own queue on the real Redis; its keys are deleted afterwards."""
    name = f"handles-test-{uuid.uuid4().hex[:8]}"
    for attribute, value in {"SYNC": False, "ORM": None, "REDIS": REDIS_URL, "PREFIX": name,
                             "CLUSTER_NAME": name}.items():
        monkeypatch.setattr(Conf, attribute, value)
    connection = redis.from_url(REDIS_URL)
    yield name
    keys = list(connection.scan_iter(f"*{name}*"))
    if keys:
        connection.delete(*keys)
    connection.close()


def test_two_clusters_on_redis_change_the_same_handles(prefix, sim, clusters, redis_queue, stem):
    env = {"HANDLES_REDIS_URL": REDIS_URL, "HANDLES_Q_NAME": redis_queue, "HANDLES_LEASE_SECONDS": 10,
           "LOG_LEVEL": "INFO"}  # INFO: each cluster logs every task it processed
    workers = [clusters("redis-a", **env), clusters("redis-b", **env)]
    mints = [services.handle_mint(prefix=prefix, suffix=f"{stem}-{i}", target_url=f"https://example.org/r/{i}")
             for i in range(36)]
    for step_no in range(3):
        for i, mint in enumerate(mints):
            plan = HISTORIES[i % len(HISTORIES)]
            if step_no < len(plan):
                request = change(mint.handle, plan[step_no], step_no)
                tasks.enqueue_request(request.pk)  # delivered twice: both clusters race for the same request
    drive(all_finished(), timeout=60, what="both clusters to finish")

    handle_ids = [m.handle_id for m in mints]
    assert_applied_in_order(handle_ids)
    assert_server_matches_database(sim, prefix, handle_ids)
    for worker in workers:  # both clusters took part
        assert "Processed 'handles.tasks.push_request'" in worker.log_path.read_text()
