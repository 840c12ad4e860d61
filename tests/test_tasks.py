"""The request queue against the simulator over real HTTPS: success means verified on the server."""

from __future__ import annotations

import random
import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone
from django_q.brokers import get_broker

from handles import services, tasks
from handles.exceptions import HandleExists
from handles.handle_server.client import HandleNotFound, client_for
from handles.models import Handle, HandleRequest

pytestmark = pytest.mark.django_db


def server_url(prefix, handle: Handle) -> str | None:
    return client_for(prefix.server_config()).get_url(handle.full_handle)[0]


def test_mint_reaches_the_server_and_is_verified(prefix, run_queue, unique_suffix):
    req = run_queue(services.handle_mint, prefix=prefix, suffix=unique_suffix(), target_url="https://example.org/1")
    handle = Handle.objects.get(pk=req.handle_id)
    assert (req.status, req.attempts, req.pushed_version, req.error) == ("success", 1, 1, "")
    assert "PUT" in req.server_output and "overwrite=false" in req.server_output and "Verified" in req.server_output
    assert (handle.status, handle.synced_version, handle.in_sync) == ("active", 1, True)
    assert server_url(prefix, handle) == "https://example.org/1"


def test_redirect_tombstone_restore_delete_on_the_server(prefix, run_queue, unique_suffix):
    handle = run_queue(services.handle_mint, prefix=prefix, suffix=unique_suffix(), target_url="https://example.org/a").handle
    assert run_queue(services.handle_redirect, handle=handle, target_url="https://example.org/b").status == "success"
    assert server_url(prefix, handle) == "https://example.org/b"
    assert run_queue(services.handle_tombstone, handle=handle, reason="withdrawn").status == "success"
    handle.refresh_from_db()
    assert server_url(prefix, handle) == handle.tombstone_url
    assert run_queue(services.handle_restore, handle=handle).status == "success"
    assert server_url(prefix, handle) == "https://example.org/b"
    assert run_queue(services.handle_delete, handle=handle).status == "success"
    with pytest.raises(HandleNotFound):
        server_url(prefix, handle)
    handle.refresh_from_db()
    assert handle.status == "deleted" and handle.in_sync


def test_every_task_run_twice_changes_nothing(prefix, run_queue, unique_suffix):
    req = run_queue(services.handle_mint, prefix=prefix, suffix=unique_suffix(), target_url="https://example.org/t")
    handle = req.handle
    for request_id in [req.pk, run_queue(services.handle_redirect, handle=handle, target_url="https://example.org/u").pk,
                       run_queue(services.handle_verify, handle=handle).pk]:
        before = HandleRequest.objects.get(pk=request_id)
        assert tasks.push_request(request_id) == "finished"
        after = HandleRequest.objects.get(pk=request_id)
        assert (after.status, after.attempts, after.server_output) == (before.status, before.attempts, before.server_output)
    assert server_url(prefix, handle) == "https://example.org/u"
    deleted = run_queue(services.handle_delete, handle=handle)
    assert tasks.push_request(deleted.pk) == "finished"
    assert tasks.sweep_requests() == "reclaimed 0, enqueued 0"  # nothing left to hand over


def test_lost_create_response_is_recovered_on_retry(prefix, run_queue, unique_suffix, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():  # recorded, not yet pushed
        req = services.handle_mint(prefix=prefix, suffix=unique_suffix(), target_url="https://example.org/landed")
    client_for(prefix.server_config()).create_handle(req.full_handle, [
        {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
            "handle": "20.500.12345/ADMIN", "index": 300, "permissions": "111111111111"}}},
        {"index": 1, "type": "URL", "data": {"format": "string", "value": "https://example.org/landed"}}])
    HandleRequest.objects.filter(pk=req.pk).update(attempts=1)  # the first attempt's answer was lost
    assert tasks.push_request(req.pk) == "success"
    req.refresh_from_db()
    assert req.status == "success" and "409" in req.server_output


def test_first_create_of_someone_elses_handle_is_an_error(prefix, run_queue, unique_suffix):
    name = f"20.500.12345/{unique_suffix('theirs')}"
    client_for(prefix.server_config()).create_handle(name, [
        {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
            "handle": "20.500.12345/ADMIN", "index": 300, "permissions": "111111111111"}}},
        {"index": 1, "type": "URL", "data": "https://elsewhere.example/x"}])
    req = run_queue(services.handle_mint, prefix=prefix, suffix=name.split("/", 1)[1], target_url="https://example.org/mine")
    assert req.status == "error"
    assert "already exists on the Handle server" in req.error and "https://elsewhere.example/x" in req.error
    assert server_url(prefix, req.handle) == "https://elsewhere.example/x"  # never overwritten


def test_many_changes_to_one_handle_final_state_wins(prefix, run_queue, unique_suffix, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():
        handle = services.handle_mint(prefix=prefix, suffix=unique_suffix(), target_url="https://example.org/v0").handle
        for i in range(1, 16):
            services.handle_redirect(handle=handle, target_url=f"https://example.org/v{i}")
    ids = list(HandleRequest.objects.filter(handle=handle).values_list("pk", flat=True))
    with django_capture_on_commit_callbacks(execute=True):  # a finished request hands over the next one
        for request_id in random.sample(ids, len(ids)) * 2:  # deliveries in any order, with duplicates
            tasks.push_request(request_id)
    statuses = set(HandleRequest.objects.filter(handle=handle).values_list("status", flat=True))
    assert statuses == {"success"}
    handle.refresh_from_db()
    assert handle.in_sync and server_url(prefix, handle) == "https://example.org/v15"
    finished = list(HandleRequest.objects.filter(handle=handle).order_by("pk").values_list("finished_at", flat=True))
    assert finished == sorted(finished)  # reached the server in the order asked


def make_due(request: HandleRequest) -> None:
    """Let the backoff time pass: the request was handed over a while ago and its retry time has come."""
    now = timezone.now()
    HandleRequest.objects.filter(pk=request.pk).update(enqueued_at=now - timedelta(minutes=2),
                                                       next_attempt_at=now - timedelta(seconds=1))


def test_transient_errors_retry_with_backoff_then_succeed(prefix, sim, run_queue, unique_suffix, settings):
    settings.HANDLES_BACKOFF_BASE_SECONDS = 30
    handle = run_queue(services.handle_mint, prefix=prefix, suffix=unique_suffix(), target_url="https://example.org/r").handle
    sim.set_fault("503")
    req = run_queue(services.handle_redirect, handle=handle, target_url="https://example.org/r2")
    assert (req.status, req.attempts) == ("queued", 1)
    assert "unavailable" in req.error and req.next_attempt_at > timezone.now() + timedelta(seconds=25)
    assert services.requests_sweep() == {"reclaimed": 0, "enqueued": 0}  # not due yet
    sim.set_fault("down")
    make_due(req)
    run_queue(services.requests_sweep)
    req.refresh_from_db()
    assert (req.status, req.attempts) == ("queued", 2) and "Could not reach" in req.error
    sim.clear_faults()
    make_due(req)
    run_queue(services.requests_sweep)
    req.refresh_from_db()
    assert (req.status, req.attempts, req.error) == ("success", 3, "")
    assert server_url(prefix, handle) == "https://example.org/r2"


def test_attempts_are_spent_before_error(prefix, sim, run_queue, unique_suffix, settings):
    settings.HANDLES_MAX_ATTEMPTS = 2
    handle = run_queue(services.handle_mint, prefix=prefix, suffix=unique_suffix(), target_url="https://example.org/g").handle
    sim.set_fault("503")
    req = run_queue(services.handle_redirect, handle=handle, target_url="https://example.org/g2")
    assert req.status == "queued"
    make_due(req)
    run_queue(services.requests_sweep)
    req.refresh_from_db()
    assert req.status == "error" and req.error.startswith("Gave up after 2 attempts")
    sim.clear_faults()
    run_queue(services.request_retry, request=req)
    req.refresh_from_db()
    assert req.status == "success" and req.attempts == 3


def test_update_of_a_handle_missing_on_the_server_is_an_error(prefix, run_queue, unique_suffix):
    handle = run_queue(services.handle_mint, prefix=prefix, suffix=unique_suffix(), target_url="https://example.org/m").handle
    client_for(prefix.server_config()).delete_handle(handle.full_handle)
    req = run_queue(services.handle_redirect, handle=handle, target_url="https://example.org/m2")
    assert req.status == "error" and "not on the Handle server" in req.error
    assert run_queue(services.handle_verify, handle=handle).error.endswith("is missing on the Handle server.")


def test_sweep_recovers_a_crashed_worker(prefix, run_queue, unique_suffix, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():
        req = services.handle_mint(prefix=prefix, suffix=unique_suffix(), target_url="https://example.org/c")
    claim = services.request_claim(req.pk)  # a worker takes it, then dies
    assert claim.attempts == 1
    assert services.requests_sweep() == {"reclaimed": 0, "enqueued": 0}  # its lease still runs
    HandleRequest.objects.filter(pk=req.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    counts = run_queue(services.requests_sweep)
    assert counts["reclaimed"] == 1
    req.refresh_from_db()
    assert req.status == "success" and req.attempts == 2 and "abandoned" in req.server_output
    # the dead worker wakes up: its late finish is ignored
    assert services.request_finish(claim, services.Outcome("permanent", error="late")) is None


def test_sweep_hands_over_lost_enqueues(prefix, unique_suffix, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():  # the on_commit hand-over never happens
        req = services.handle_mint(prefix=prefix, suffix=unique_suffix(), target_url="https://example.org/l")
    assert services.requests_sweep()["enqueued"] == 1
    req.refresh_from_db()
    assert req.status == "success"


def test_sweep_hands_out_a_backlog_within_its_share_of_the_task_timeout(prefix, unique_suffix, settings, monkeypatch,
                                                                      django_capture_on_commit_callbacks):
    """A sweep that handed out every lost request one by one outlasted HANDLES_TASK_TIMEOUT (5,000 on SQLite
    with the timeout 10 s): the cluster killed it each minute before it resumed stalled jobs. It stops handing
    out after a quarter of the timeout (here 0 s: one request per sweep); the next sweep goes on."""
    settings.HANDLES_TASK_TIMEOUT = 0
    handed_out: list[int] = []
    monkeypatch.setattr(tasks, "enqueue_request", lambda request_id: (
        services.requests_mark_enqueued([request_id]), handed_out.append(request_id)))
    with django_capture_on_commit_callbacks():  # recorded, their hand-over lost
        lost = [services.handle_mint(prefix=prefix, suffix=unique_suffix(), target_url=f"https://example.org/{n}")
                for n in range(3)]
    assert [services.requests_sweep()["enqueued"] for _ in range(4)] == [1, 1, 1, 0]
    assert handed_out == sorted(request.pk for request in lost)


def test_sweep_leaves_a_backlog_to_the_tasks_waiting_in_the_broker(prefix, unique_suffix, settings,
                                                                   django_capture_on_commit_callbacks):
    """A request handed out long ago whose task still waits behind others is not handed out twice; once
    the broker is empty, a request that still waits has lost its task and is handed out again."""
    with django_capture_on_commit_callbacks():
        waiting = services.handle_mint(prefix=prefix, suffix=unique_suffix(), target_url="https://example.org/w")
        never = services.handle_mint(prefix=prefix, suffix=unique_suffix(), target_url="https://example.org/n")
    long_ago = timezone.now() - timedelta(seconds=settings.HANDLES_REENQUEUE_AFTER_SECONDS + 1)
    HandleRequest.objects.filter(pk=waiting.pk).update(enqueued_at=long_ago)  # handed out, its task in the queue
    broker = get_broker()
    broker.enqueue("a task ahead of it in the queue")
    try:
        assert tasks.broker_backlog() == 1
        assert services.requests_sweep()["enqueued"] == 1  # only the one never handed out
        never.refresh_from_db()
        waiting.refresh_from_db()
        assert (never.status, waiting.status) == ("success", "queued")
    finally:
        broker.purge_queue()
    assert tasks.broker_backlog() == 0
    assert services.requests_sweep()["enqueued"] == 1
    waiting.refresh_from_db()
    assert waiting.status == "success"


@pytest.fixture
def no_enqueue(monkeypatch):
    """Outside a test transaction on_commit runs at once (inline tasks): let the test's workers push instead."""
    monkeypatch.setattr(tasks, "enqueue_request", lambda request_id: None)


@pytest.mark.django_db(transaction=True)
def test_concurrent_mints_of_one_suffix_make_exactly_one_handle(prefix, unique_suffix, no_enqueue):
    suffix = unique_suffix("race")
    barrier = threading.Barrier(6)
    results: list[str] = []

    def mint() -> None:
        barrier.wait()
        try:
            services.handle_mint(prefix=prefix, suffix=suffix, target_url="https://example.org/race")
            results.append("minted")
        except HandleExists:
            results.append("exists")
        finally:
            connection.close()

    threads = [threading.Thread(target=mint) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["exists"] * 5 + ["minted"]
    assert Handle.objects.filter(suffix_key=suffix.upper()).count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_workers_at_once_keep_per_handle_order(prefix, unique_suffix, no_enqueue):
    handles = []
    for n in range(3):
        handle = services.handle_mint(prefix=prefix, suffix=unique_suffix(f"w{n}"), target_url="https://example.org/0").handle
        for i in range(1, 6):
            services.handle_redirect(handle=handle, target_url=f"https://example.org/{n}/{i}")
        handles.append(handle)
    ids = list(HandleRequest.objects.filter(handle__in=handles).values_list("pk", flat=True))

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(4):
                for request_id in rng.sample(ids, len(ids)):
                    tasks.push_request(request_id)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(HandleRequest.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"success"}
    for n, handle in enumerate(handles):
        handle.refresh_from_db()
        assert handle.in_sync and server_url(prefix, handle) == f"https://example.org/{n}/5"
        spans = list(HandleRequest.objects.filter(handle=handle).order_by("pk").values_list("started_at", "finished_at"))
        for (_, finished), (started, _) in zip(spans, spans[1:], strict=False):
            assert finished <= started  # never two pushes of one handle at once, and in order


# --- Batches: one claim and one finish transaction for many handles, and the drain that uses them ------
def record_unpushed(prefix, unique_suffix, django_capture_on_commit_callbacks, changes: int = 1) -> list[HandleRequest]:
    """Mint a handle and redirect it `changes - 1` times; nothing is handed to the queue."""
    with django_capture_on_commit_callbacks():
        req = services.handle_mint(prefix=prefix, suffix=unique_suffix("b"), target_url="https://example.org/b0")
        reqs = [req] + [services.handle_redirect(handle=req.handle, target_url=f"https://example.org/b{i}")
                        for i in range(1, changes)]
    return reqs


def test_batch_claim_takes_each_handles_oldest_due_request(prefix, unique_suffix, django_capture_on_commit_callbacks,
                                                           settings):
    three = record_unpushed(prefix, unique_suffix, django_capture_on_commit_callbacks, changes=3)
    (one,) = record_unpushed(prefix, unique_suffix, django_capture_on_commit_callbacks)
    (later,) = record_unpushed(prefix, unique_suffix, django_capture_on_commit_callbacks)
    HandleRequest.objects.filter(pk=later.pk).update(next_attempt_at=timezone.now() + timedelta(minutes=5))
    before = timezone.now()
    claims = services.requests_claim_batch(10)
    assert [c.request_id for c in claims] == [three[0].pk, one.pk]  # one per handle, oldest first, due only
    assert [(c.attempts, c.version, c.url) for c in claims] == [(1, 3, "https://example.org/b2"),
                                                              (1, 1, "https://example.org/b0")]  # current state
    for request in HandleRequest.objects.filter(pk__in=[three[0].pk, one.pk]):
        assert (request.status, request.attempts, request.lease_token) == ("running", 1, claims[0].lease_token)
        assert request.lease_until >= before + timedelta(seconds=settings.HANDLES_LEASE_SECONDS)
    # The running heads keep their handles' later requests waiting; the not-due one stays queued.
    assert services.requests_claim_batch(10) == []
    assert services.request_claim(three[1].pk) == "waiting"


def test_batch_finish_records_each_outcome_and_hands_over_the_next(prefix, unique_suffix,
                                                                   django_capture_on_commit_callbacks, monkeypatch):
    handed: list[int] = []
    monkeypatch.setattr(tasks, "enqueue_request", handed.append)
    two = record_unpushed(prefix, unique_suffix, django_capture_on_commit_callbacks, changes=2)
    (flaky,) = record_unpushed(prefix, unique_suffix, django_capture_on_commit_callbacks)
    (untried,) = record_unpushed(prefix, unique_suffix, django_capture_on_commit_callbacks)
    (taken_back,) = record_unpushed(prefix, unique_suffix, django_capture_on_commit_callbacks)
    services.requests_mark_enqueued([untried.pk])  # its task was handed over and has run
    claims = {c.request_id: c for c in services.requests_claim_batch(10)}
    HandleRequest.objects.filter(pk=taken_back.pk).update(status="queued", lease_token=None)  # the sweep's doing
    with django_capture_on_commit_callbacks(execute=True):
        recorded = services.requests_finish_batch([
            (claims[two[0].pk], services.Outcome("success", output="Verified")),
            (claims[flaky.pk], services.Outcome("transient", error="503")),
            (claims[untried.pk], None),
            (claims[taken_back.pk], services.Outcome("success")),
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


@pytest.mark.django_db(transaction=True)
def test_batch_claim_skips_handles_another_transaction_holds(prefix, unique_suffix, no_enqueue):
    busy = services.handle_mint(prefix=prefix, suffix=unique_suffix("busy"), target_url="https://example.org/x")
    free = services.handle_mint(prefix=prefix, suffix=unique_suffix("free"), target_url="https://example.org/y")
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
        assert [c.request_id for c in services.requests_claim_batch(10)] == [free.pk]  # did not wait for the lock
    finally:
        release.set()
        holder.join()
    assert [c.request_id for c in services.requests_claim_batch(10)] == [busy.pk]
    assert services.requests_claim_batch(10) == []


@pytest.mark.django_db(transaction=True)
def test_two_draining_workers_push_every_request_once_in_order(prefix, unique_suffix, no_enqueue, settings):
    settings.HANDLES_DRAIN_SECONDS = 30
    settings.HANDLES_DRAIN_BATCH = 3
    handles = []
    for n in range(6):
        handle = services.handle_mint(prefix=prefix, suffix=unique_suffix(f"d{n}"), target_url="https://example.org/0").handle
        for i in range(1, 4):
            services.handle_redirect(handle=handle, target_url=f"https://example.org/{n}/{i}")
        handles.append(handle)
    first_ids = [HandleRequest.objects.filter(handle=h).order_by("pk").first().pk for h in handles[:2]]
    results: list[str] = []

    def worker(request_id: int) -> None:
        try:
            results.append(tasks.push_request(request_id))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(request_id,)) for request_id in first_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    requests = HandleRequest.objects.filter(handle__in=handles)
    assert set(requests.values_list("status", "attempts")) == {("success", 1)}  # each pushed exactly once
    assert sum(int(r.rsplit(" ", 1)[1]) if "drained" in r else 0 for r in results) + 2 == requests.count()
    for n, handle in enumerate(handles):
        handle.refresh_from_db()
        assert handle.in_sync and server_url(prefix, handle) == f"https://example.org/{n}/3"
        spans = list(requests.filter(handle=handle).order_by("pk").values_list("started_at", "finished_at"))
        for (_, finished), (started, _) in zip(spans, spans[1:], strict=False):
            assert finished <= started  # in order, one push of a handle at a time


def test_drain_stops_when_the_server_is_in_trouble(prefix, sim, unique_suffix, django_capture_on_commit_callbacks,
                                                   settings):
    settings.HANDLES_DRAIN_SECONDS = 30
    settings.HANDLES_BACKOFF_BASE_SECONDS = 30
    (own,) = record_unpushed(prefix, unique_suffix, django_capture_on_commit_callbacks)
    others = [record_unpushed(prefix, unique_suffix, django_capture_on_commit_callbacks)[0] for _ in range(3)]
    sim.set_fault("503")
    assert tasks.push_request(own.pk) == "transient"  # no drain after a failed push of its own
    assert set(HandleRequest.objects.filter(pk__in=[r.pk for r in others]).values_list("attempts", flat=True)) == {0}
    sim.clear_faults()
    HandleRequest.objects.filter(pk=own.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    sim.set_fault("503")
    assert tasks.push_request(others[0].pk) == "transient"
    sim.clear_faults()
    # A drain handed a finished request pushes others; after the first transient failure it gives the rest back.
    HandleRequest.objects.filter(pk__in=[own.pk, others[0].pk]).update(status="success")
    sim.set_fault("503")
    assert tasks.push_request(own.pk) == "finished; drained 1"
    rest = list(HandleRequest.objects.filter(pk__in=[r.pk for r in others[1:]]).order_by("pk"))
    assert [(r.status, r.attempts, r.lease_token) for r in rest] == [("queued", 1, None), ("queued", 0, None)]
    assert "unavailable" in rest[0].error and rest[1].next_attempt_at > timezone.now() + timedelta(seconds=25)


def test_a_hand_over_task_passes_what_it_cannot_hand_out_in_time_to_a_new_task(settings, monkeypatch):
    """2,000 requests handed out one by one on SQLite outlasted HANDLES_TASK_TIMEOUT (10 s, a 5,000-row repair
    from make run): the cluster killed the task and the rest waited for the minute sweep. A hand-over stops
    after a quarter of the timeout (here 0 s: one request) and hands the rest to a new task (inline here)."""
    settings.HANDLES_TASK_TIMEOUT = 0
    handed_out: list[int] = []
    monkeypatch.setattr(tasks, "enqueue_request", handed_out.append)
    assert tasks.hand_over_requests([7, 8, 9]) == "handed over 1, 2 to a new task"
    assert handed_out == [7, 8, 9]
