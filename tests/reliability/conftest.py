"""Helpers for the reliability suite: real worker clusters, the simulator's store read in bulk, and the
checks every fault test ends with (every request succeeded, in order, and the server holds our intent)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable
from itertools import groupby
from operator import itemgetter
from pathlib import Path

import pytest
from django.db.models import Count
from django_q.conf import Conf

from handles import services
from handles.models import Handle, HandleRequest, Prefix
from handles.simulator.datadir import DB_FILE
from handles.simulator.values import HandleValue, ascii_upper
from tests.worker_process import WorkerProcess

# Heavy tests (worker clusters) share one xdist worker, so two of them never fight for the 2 cores.
heavy = pytest.mark.xdist_group("reliability")


@pytest.fixture
def broker_queue(monkeypatch):
    """Enqueue to the real broker instead of running tasks inline."""
    monkeypatch.setattr(Conf, "SYNC", False)


@pytest.fixture
def clusters(broker_queue, tmp_path):
    """Start real `qcluster` processes; every one still running is stopped (SIGTERM) after the test."""
    started: list[WorkerProcess] = []

    def start(name: str = "cluster", **env: str) -> WorkerProcess:
        process = WorkerProcess(log_path=tmp_path / f"{name}-{len(started)}.log",
                                extra_env={k: str(v) for k, v in env.items()})
        started.append(process.start())
        return process

    yield start
    for process in started:  # all shut down at once, then wait for each
        if process.process and process.process.poll() is None:
            os.killpg(process.process.pid, signal.SIGTERM)
    for process in started:
        process.stop()


def server_urls(sim, prefix: Prefix) -> dict[str, str | None]:
    """Every handle the simulator holds under the prefix, read from its store in one query:
    {upper-cased handle: URL of index 1, or None}."""
    key = ascii_upper(prefix.prefix)
    uri = f"file:{Path(sim.data_dir) / DB_FILE}?mode=ro"
    with sqlite3.connect(uri, uri=True, timeout=30) as conn:
        rows = conn.execute("SELECT key, vals FROM handles WHERE key >= ? AND key < ?",
                            (key + "/", key + "0")).fetchall()
    result = {}
    for handle_key, vals in rows:
        values = [HandleValue.from_row(row) for row in json.loads(vals)]
        urls = [v for v in values if v.index == 1 and v.type == "URL"]
        result[handle_key] = urls[0].data.decode() if urls else None
    return result


def assert_server_matches_database(sim, prefix: Prefix, handle_ids: Iterable[int]) -> None:
    """Each handle exists on the server exactly when it should, resolving to its intended URL, and our
    record says it is in sync."""
    on_server = server_urls(sim, prefix)
    wrong = []
    handles = Handle.objects.filter(pk__in=list(handle_ids)).select_related("prefix")
    for handle in handles:
        key = ascii_upper(handle.full_handle)
        intended = handle.resolver_target if handle.exists_on_server else None
        if on_server.get(key) != intended or not handle.in_sync:
            wrong.append((handle.full_handle, handle.status, intended, on_server.get(key, "<absent>"),
                          handle.version, handle.synced_version))
    assert not wrong, f"{len(wrong)} handles differ from the server, e.g. {wrong[:5]}"
    assert handles.count() > 0


def assert_applied_in_order(handle_ids: Iterable[int]) -> None:
    """Per handle: every request succeeded; each started only after the one before it finished; the
    version pushed never went back, and never fell behind the version the request was made for."""
    rows = (HandleRequest.objects.filter(handle_id__in=list(handle_ids)).order_by("handle_id", "id")
            .values_list("handle_id", "id", "status", "started_at", "finished_at", "pushed_version",
                         "handle_version"))
    problems = []
    for _, group in groupby(rows, key=itemgetter(0)):
        previous_finish, highest_pushed = None, 0
        for _, request_id, status, started, finished, pushed, made_for in group:
            if status != HandleRequest.Status.SUCCESS:
                problems.append((request_id, f"ended {status}"))
                continue
            if previous_finish is not None and started < previous_finish:
                problems.append((request_id, "started before the previous request of its handle finished"))
            if pushed is not None:
                if pushed < highest_pushed or pushed < made_for:
                    problems.append((request_id, f"pushed version {pushed} after {highest_pushed} (made for {made_for})"))
                highest_pushed = max(highest_pushed, pushed)
            previous_finish = finished
    assert not problems, f"{len(problems)} requests out of order or unsuccessful, e.g. {problems[:5]}"


def status_counts(request_ids: list[int] | None = None) -> dict[str, int]:
    requests = HandleRequest.objects.all() if request_ids is None else HandleRequest.objects.filter(pk__in=request_ids)
    return dict(requests.values_list("status").annotate(n=Count("id")).values_list("status", "n"))


def drive(done: Callable[[], bool], *, timeout: float, what: str, sweep_every: float = 1.0,
          check: Callable[[], None] | None = None, sweep: Callable[[], object] | None = None) -> None:
    """Tick the every-minute sweep (here every `sweep_every` s) until `done()`; run `check` at each tick.
    `sweep`: what to tick (default services.requests_sweep; tasks.sweep_requests also probes paused prefixes)."""
    deadline = time.monotonic() + timeout
    next_sweep = 0.0
    while True:
        if check is not None:
            check()
        if done():
            return
        now = time.monotonic()
        if now > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; requests: {status_counts()}")
        if now >= next_sweep:
            (sweep or services.requests_sweep)()
            next_sweep = now + sweep_every
        time.sleep(0.2)


def all_finished(request_ids: list[int] | None = None) -> Callable[[], bool]:
    def check() -> bool:
        requests = HandleRequest.objects.all() if request_ids is None else HandleRequest.objects.filter(pk__in=request_ids)
        return not requests.unfinished().exists()

    return check


@pytest.fixture
def stem():
    """A suffix stem unique to this test run, so handles never collide on the shared simulator."""
    return f"rel{uuid.uuid4().hex[:6]}"
