"""kill -9 of the worker cluster in the middle of a batch: after a restart and the sweep every request
ends `success`, in order per handle, and the Handle server holds exactly what the database intends."""

from __future__ import annotations

import random

import pytest

from handles import services
from handles.models import Handle, HandleRequest
from tests.reliability.conftest import (
    all_finished,
    assert_applied_in_order,
    assert_server_matches_database,
    drive,
    heavy,
)
from tests.worker_process import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), heavy]

# Each push takes at most 3 calls of at most 1 s; a lease of 4 s outlives it, so only a dead worker's
# request is ever taken back.
WORKER_ENV = {"HANDLES_SERVER_TIMEOUT": 1, "HANDLES_LEASE_SECONDS": 4, "HANDLES_BACKOFF_BASE_SECONDS": 0.2,
              "HANDLES_BACKOFF_MAX_SECONDS": 1}

# What a handle goes through after its mint: several changes each, ending in every status.
HISTORIES = [
    ("redirect", "redirect", "tombstone"),
    ("redirect", "tombstone", "restore"),
    ("tombstone", "restore", "redirect"),
    ("redirect", "redirect", "delete"),
    ("tombstone", "delete"),
    ("redirect", "redirect", "redirect"),
]


def change(handle: Handle, step: str, n: int) -> HandleRequest:
    if step == "redirect":
        return services.handle_redirect(handle=handle, target_url=f"https://example.org/{handle.suffix}/{n}")
    if step == "tombstone":
        return services.handle_tombstone(handle=handle, reason=f"withdrawn ({n})")
    if step == "restore":
        return services.handle_restore(handle=handle)
    return services.handle_delete(handle=handle, reason="gone")


def run_batch_with_a_crash(*, prefix, sim, clusters, settings, stem: str, requests: int, timeout: float,
                           reenqueue_after: float) -> None:
    # Tasks the dead cluster held in memory are handed out again this long after their last hand-out.
    # Longer than the queue's backlog, or the sweep floods the broker with duplicates of waiting tasks.
    settings.HANDLES_REENQUEUE_AFTER_SECONDS = reenqueue_after
    rng = random.Random(requests)
    worker = clusters("before-crash", **WORKER_ENV)
    plans: list[tuple[str, ...]] = []
    while sum(1 + len(p) for p in plans) < requests:
        room = requests - sum(1 + len(p) for p in plans) - 1
        plans.append(rng.choice(HISTORIES)[:room])
    crash: dict[str, object] = {}

    def kill_once_a_third_is_done() -> None:
        if crash or HandleRequest.objects.filter(status="success").count() < requests // 3:
            return
        # Slow pushes keep requests in flight. A request seen running may still finish before a kill lands on
        # a busy machine, so the cluster is stopped (SIGSTOP) before looking: what is running then is exactly
        # what the kill cuts off. Nothing running at that instant: let it go on and look again.
        sim.set_fault("slow", delay=3.0)

        def stopped_with_requests_in_flight() -> list[int]:
            if not HandleRequest.objects.filter(status="running").exists():
                return []
            worker.pause()
            running = list(HandleRequest.objects.filter(status="running").values_list("pk", flat=True))
            if not running:
                worker.resume()
            return running

        in_flight = wait_for(stopped_with_requests_in_flight, timeout=120,
                             what="the cluster stopped with a request in flight")
        worker.kill()
        crash["in_flight"] = in_flight
        crash["unfinished"] = HandleRequest.objects.unfinished().count()
        sim.clear_faults()

    minted = []
    for i in range(len(plans)):
        mint = services.handle_mint(prefix=prefix, suffix=f"{stem}-{i}", target_url=f"https://example.org/{stem}/{i}")
        minted.append(mint.handle)
        if i % 25 == 0:
            kill_once_a_third_is_done()
    # Changes go in round by round, so each handle has several requests waiting while workers run.
    for step_no in range(max(len(p) for p in plans)):
        for n, (handle, plan) in enumerate(zip(minted, plans, strict=True)):
            if step_no < len(plan):
                change(handle, plan[step_no], step_no)
            if n % 25 == 0:
                kill_once_a_third_is_done()
    wait_for(lambda: kill_once_a_third_is_done() or crash, timeout=timeout, what="a third done, then the crash")
    assert crash["in_flight"] and crash["unfinished"] > 0

    clusters("after-crash", **WORKER_ENV)
    drive(all_finished(), timeout=timeout, what="every request to finish after the restart")

    assert HandleRequest.objects.filter(status="success").count() == HandleRequest.objects.count() == requests
    for request in HandleRequest.objects.filter(pk__in=crash["in_flight"]):
        # The attempt the crash cut off is on record, and a later attempt finished the job.
        assert request.attempts >= 2 and "abandoned" in request.server_output, request.server_output
    handle_ids = [h.pk for h in minted]
    assert_applied_in_order(handle_ids)
    assert_server_matches_database(sim, prefix, handle_ids)
    statuses = set(Handle.objects.filter(pk__in=handle_ids).values_list("status", flat=True))
    assert statuses == {"active", "tombstoned", "deleted"}


def test_kill_9_in_the_middle_of_a_batch(prefix, sim, clusters, settings, stem):
    run_batch_with_a_crash(prefix=prefix, sim=sim, clusters=clusters, settings=settings, stem=stem,
                           requests=600, timeout=90, reenqueue_after=10)


@pytest.mark.slow
def test_kill_9_in_the_middle_of_a_batch_of_10000(prefix, sim, clusters, settings, stem):
    run_batch_with_a_crash(prefix=prefix, sim=sim, clusters=clusters, settings=settings, stem=stem,
                           requests=10_000, timeout=900, reenqueue_after=60)
