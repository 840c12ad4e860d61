"""Every kind of long job (health check, reconciliation, import push, repair, bulk job) survives its worker's
kill -9 and slices killed at the task timeout: the sweep resumes it where it stopped, and it ends with the
result of an uninterrupted run: nothing skipped, nothing done twice. Real qcluster processes, a Handle
server simulator of its own, a slow web site on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db.models import Count

from handles import jobs, services, tasks
from handles.desk import services as desk
from handles.desk.models import BulkJob, BulkJobItem
from handles.handle_server import records
from handles.handle_server.client import client_for
from handles.models import Handle, HandleRequest, Prefix
from handles.repair import health, reconcile
from handles.repair import services as repair
from handles.repair.models import (
    HandleCheck,
    ImportBatch,
    ImportMode,
    ImportRow,
    ReconciliationRow,
    RepairJob,
)
from handles.validators import ascii_upper
from tests.conftest import SECRET_ENV, SIM_SECRET
from tests.reliability.conftest import heavy
from tests.simulator_process import SimulatorProcess
from tests.worker_process import WorkerProcess, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), heavy]

PREFIX = "20.500.777"
# kill -9: slices of half a second, each a new task; a dead worker's lease (1.5 × 8 + 5 s) runs out in 17 s.
KILL_ENV = {"HANDLES_TASK_TIMEOUT": 8, "HANDLES_JOB_SLICE_SECONDS": 0.5, "HANDLES_HEALTH_HOST_INTERVAL": 0,
            "HANDLES_HEALTH_ALLOW_PRIVATE": 1, "HANDLES_HEALTH_TIMEOUT": 5, "HANDLES_RECONCILE_PAGE_SIZE": 10,
            "HANDLES_REPAIR_CHUNK": 5, "HANDLES_DESK_JOB_CHUNK": 5}
# The task timeout: 3 s, and a slice budget far beyond it, so the cluster kills slice after slice mid-work.
TIMEOUT_ENV = {**KILL_ENV, "HANDLES_TASK_TIMEOUT": 3, "HANDLES_JOB_SLICE_SECONDS": 600,
               "HANDLES_DESK_JOB_SLICE_SECONDS": 600}
FINISHED = {"done", "incomplete", "failed", "cancelled"}


# --- Fixtures: a simulator of this module's own (a listing no other test adds to), a slow web site --------
@pytest.fixture
def own_sim(tmp_path, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SIM_SECRET)
    with SimulatorProcess(tmp_path / "sim", prefixes=[PREFIX], secret=SIM_SECRET) as sim:
        yield sim


@pytest.fixture
def own_prefix(db, own_sim) -> Prefix:
    return services.prefix_save(prefix=Prefix(
        prefix=PREFIX, site_name="Resume tests", server_url=own_sim.base_url, auth_identity=f"300:{PREFIX}/ADMIN",
        secret_env_var=SECRET_ENV, tls_mode=Prefix.TLS.PINNED, pinned_certificate=own_sim.cert_path.read_text(),
        hs_admin_handle=f"{PREFIX}/ADMIN", hs_admin_index=300, hs_admin_permissions="111111111111"))


class _SlowPage(BaseHTTPRequestHandler):
    """Every page answers after `delay` s: /ok/... with 200, anything else 404."""

    delay = 0.2

    def do_GET(self):  # noqa: N802 (the http.server API)
        time.sleep(self.delay)
        status = 200 if self.path.startswith("/ok/") else 404
        body = b"<html><head><title>An object</title></head></html>"
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def slow_site():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowPage)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def put_on_server(prefix: Prefix, suffix: str, url: str) -> None:
    client_for(prefix.server_config()).create_handle(f"{prefix.prefix}/{suffix}", records.new_record(
        url, admin_handle=prefix.hs_admin_handle, admin_index=prefix.hs_admin_index,
        permissions=prefix.hs_admin_permissions))


def record_here(prefix: Prefix, items: list[tuple[str, str]], status: str = Handle.Status.ACTIVE) -> list[Handle]:
    """Handles in our records only (no request): what an earlier mint or import left."""
    return Handle.objects.bulk_create([Handle(prefix=prefix, suffix=s, suffix_key=ascii_upper(s), target_url=u,
                                              status=status) for s, u in items])


# --- Driving a job through a crash, or through timeouts ---------------------------------------------------
def state_of(kind: str, job_id: int):
    runner = jobs.runner(kind)
    return runner.state_of(runner.jobs.get(pk=job_id))


@pytest.fixture(autouse=True)
def quick_sweep(settings):
    """Requests whose hand-over died with a cluster are handed out again after 10 s, not 10 minutes."""
    settings.HANDLES_REENQUEUE_AFTER_SECONDS = 10


def sweep_until_ended(kind: str, job_id: int, *, timeout: float = 300.0) -> None:
    """The minute sweep (handles.tasks.sweep_requests), here every second: requests taken back from a dead
    worker, verifying jobs settled, stalled jobs resumed; until the job ended."""
    deadline = time.monotonic() + timeout
    while state_of(kind, job_id) not in FINISHED:
        assert time.monotonic() < deadline, f"{kind} #{job_id} is still {state_of(kind, job_id)} after {timeout:.0f} s"
        tasks.sweep_requests()
        time.sleep(1.0)


def through_a_crash(clusters, kind: str, start: Callable[[], int], progressed: Callable[[object], bool]) -> int:
    """Start the job on a cluster, kill -9 the cluster once the job has made some progress (and before it
    ended), start a new cluster, and sweep until the job ended."""
    worker: WorkerProcess = clusters("before-crash", **KILL_ENV)
    job_id = start()
    runner = jobs.runner(kind)
    wait_for(lambda: progressed(runner.jobs.get(pk=job_id)), timeout=180, interval=0.05,
             what=f"{kind} #{job_id} to make progress")
    worker.kill()
    assert state_of(kind, job_id) not in FINISHED, "the job ended before its worker was killed: the test proves nothing"
    clusters("after-crash", **KILL_ENV)
    sweep_until_ended(kind, job_id)
    return job_id


def through_timeouts(clusters, kind: str, start: Callable[[], int]) -> int:
    """Run the job on a cluster whose task timeout kills its slices mid-work; the sweep resumes each time."""
    worker: WorkerProcess = clusters("short-timeout", **TIMEOUT_ENV)
    job_id = start()
    sweep_until_ended(kind, job_id, timeout=420)
    assert "after timeout" in worker.log_path.read_text(errors="replace"), "no slice was killed at the timeout"
    return job_id


# --- Health check ----------------------------------------------------------------------------------------
def health_collection(prefix: Prefix, site: str, n: int = 48) -> None:
    """n handles: most resolve to their page, every sixth page is gone, every eighth handle is not on the server."""
    items = [(f"hc{i}", f"{site}/{'gone' if i % 6 == 0 else 'ok'}/{i}") for i in range(n)]
    record_here(prefix, items)
    for suffix, url in items:
        if int(suffix[2:]) % 8 != 7:
            put_on_server(prefix, suffix, url)


def outcomes_of(run_id: int) -> dict[int, str]:
    return dict(HandleCheck.objects.filter(run_id=run_id).values_list("handle_id", "outcome"))


@pytest.mark.parametrize("interruption", ["kill", pytest.param("timeout", marks=pytest.mark.slow)])
def test_a_health_check_resumes_and_checks_each_handle_once(clusters, own_prefix, slow_site, settings, monkeypatch,
                                                            interruption):
    settings.HANDLES_HEALTH_ALLOW_PRIVATE, settings.HANDLES_HEALTH_HOST_INTERVAL = True, 0
    # Under the timeout, checking everything takes longer than one task may run (about 6 s against 3 s).
    n = 48 if interruption == "kill" else 96
    monkeypatch.setattr(_SlowPage, "delay", 0.2 if interruption == "kill" else 0.5)
    health_collection(own_prefix, slow_site, n)
    reference = health.run(repair.health_start(filters={}, via="test", enqueue=False).pk)
    expected = outcomes_of(reference.pk)
    assert reference.state == "done" and len(expected) == n

    def start() -> int:
        return repair.health_start(filters={}, via="test").pk

    if interruption == "kill":
        run_id = through_a_crash(clusters, "health", start, lambda run: run.progress_done >= 8)
    else:
        run_id = through_timeouts(clusters, "health", start)
    run = health.RUNNER.jobs.get(pk=run_id)
    assert run.state == "done", run.error
    assert outcomes_of(run_id) == expected
    assert run.counts == reference.counts and run.progress_done == n


# --- Reconciliation ------------------------------------------------------------------------------------------
def drifted_prefix(prefix: Prefix, n: int = 60) -> None:
    """In sync, a URL that differs, missing on the server, and orphans on the server only."""
    ours = []
    for i in range(n):
        url = f"https://example.org/obj/{i}"
        ours.append((f"rc{i}", url))
        if i % 5 == 1:
            put_on_server(prefix, f"rc{i}", url + "/old")
        elif i % 5 != 2:
            put_on_server(prefix, f"rc{i}", url)
    record_here(prefix, ours)
    for i in range(n // 4):
        put_on_server(prefix, f"orphan{i}", f"https://example.org/orphan/{i}")


def rows_of(run_id: int) -> set[tuple]:
    return set(ReconciliationRow.objects.filter(run_id=run_id).values_list("kind", "full_handle", "server_url",
                                                                          "our_url"))


@pytest.mark.parametrize("interruption", ["kill", pytest.param("timeout", marks=pytest.mark.slow)])
def test_a_reconciliation_resumes_at_its_page_and_finds_the_same_drift(clusters, own_prefix, own_sim, settings,
                                                                         interruption):
    settings.HANDLES_RECONCILE_PAGE_SIZE = 10
    drifted_prefix(own_prefix)
    reference = reconcile.run(repair.reconciliation_start(prefix=own_prefix, via="test", enqueue=False).pk)
    assert reference.state == "done"
    expected = rows_of(reference.pk)
    assert {kind for kind, *_ in expected} == {"url_differs", "missing", "orphan"}
    own_sim.set_fault("slow", delay=0.15 if interruption == "kill" else 0.3)  # reads take a while: slices overrun

    def start() -> int:
        return repair.reconciliation_start(prefix=own_prefix, via="test").pk

    if interruption == "kill":
        run_id = through_a_crash(clusters, "reconcile", start,
                                 lambda run: run.checkpoint.get("page", 0) >= 2 or run.checkpoint.get("phase") == "unseen")
    else:
        run_id = through_timeouts(clusters, "reconcile", start)
    run = reconcile.RUNNER.jobs.get(pk=run_id)
    assert run.state == "done", run.error
    assert rows_of(run_id) == expected
    assert run.counts == reference.counts


# --- Import (push mode) ------------------------------------------------------------------------------------
def push_file(prefix: Prefix, n: int = 60) -> tuple[bytes, dict[str, str]]:
    """A file of n handles: a third on the server already right (verify), a third with another URL (update),
    a third missing (create). Returns the file and the operation each handle needs."""
    lines, ops = ["handle,url"], {}
    for i in range(n):
        suffix, url = f"ip{i}", f"https://example.org/import/{i}"
        lines.append(f"{prefix.prefix}/{suffix},{url}")
        if i % 3 == 0:
            put_on_server(prefix, suffix, url)
            ops[suffix] = "verify"
        elif i % 3 == 1:
            put_on_server(prefix, suffix, url + "/before")
            ops[suffix] = "update"
        else:
            ops[suffix] = "create"
    return ("\n".join(lines) + "\n").encode(), ops


def analysed_push_import(prefix: Prefix, content: bytes) -> ImportBatch:
    batch = repair.import_batch_create(file_name="push.csv", content=content, via="test")
    batch = repair.import_batch_configure(batch=batch, mapping={"handle": "handle", "url": "url"}, prefix=prefix,
                                          mode=ImportMode.PUSH)
    batch = repair.import_batch_analyse(batch.pk)
    assert batch.analysed and batch.counts["new"] == 60
    return batch


@pytest.mark.parametrize("interruption", ["kill", pytest.param("timeout", marks=pytest.mark.slow)])
def test_an_import_push_resumes_and_queues_one_request_per_line(clusters, own_prefix, own_sim, interruption):
    content, expected = push_file(own_prefix)
    batch = analysed_push_import(own_prefix, content)
    own_sim.set_fault("slow", delay=0.15 if interruption == "kill" else 0.4)

    def start() -> int:
        repair.import_batch_start_apply(batch=batch)
        return batch.pk

    if interruption == "kill":
        batch_id = through_a_crash(clusters, "import", start, lambda b: b.checkpoint.get("push_line", 0) >= 10)
    else:
        batch_id = through_timeouts(clusters, "import", start)
    own_sim.clear_faults()
    batch = ImportBatch.objects.defer("content").get(pk=batch_id)
    assert batch.applied, (batch.step, batch.state, batch.error)
    rows = ImportRow.objects.filter(batch_id=batch_id, outcome="new")
    assert not rows.filter(request__isnull=True).exists()
    assert {r.suffix: r.request.op for r in rows.select_related("request")} == expected
    # one request per handle: none was queued twice by a slice that ran again
    assert HandleRequest.objects.filter(handle__prefix=own_prefix).count() == 60


# --- Import: the dry run and the apply (each one step, done again from the start after a crash) --------------
def adopt_file(prefix: Prefix, n: int) -> bytes:
    return ("handle,url\n" + "".join(f"{prefix.prefix}/ia{i},https://example.org/adopt/{i}\n"
                                       for i in range(n))).encode()


def configured_import(prefix: Prefix, content: bytes) -> ImportBatch:
    batch = repair.import_batch_create(file_name="adopt.csv", content=content, via="test")
    return repair.import_batch_configure(batch=batch, mapping={"handle": "handle", "url": "url"}, prefix=prefix)


def verdicts_of(batch_id: int) -> set[tuple]:
    return set(ImportRow.objects.filter(batch_id=batch_id).values_list(
        "line", "handle_text", "outcome", "target_url", "primary", "reason", "handle_id"))


@pytest.mark.slow  # the dead worker's lease runs out after 17 s
def test_an_import_dry_run_killed_mid_way_runs_again_to_the_same_verdicts(clusters, own_prefix):
    content = adopt_file(own_prefix, 30_000)  # classified in chunks of 5,000: progress shows between them
    reference = repair.import_batch_analyse(configured_import(own_prefix, content).pk)
    assert reference.analysed and reference.counts["new"] == 30_000
    expected = verdicts_of(reference.pk)
    batch = configured_import(own_prefix, content)

    def start() -> int:
        repair.import_batch_start_analysis(batch=batch)
        return batch.pk

    batch_id = through_a_crash(clusters, "import", start,
                               lambda b: b.state == "running" and 0 < b.progress_done < 30_000)
    batch = ImportBatch.objects.defer("content").get(pk=batch_id)
    assert batch.analysed and not batch.error, (batch.step, batch.state, batch.error)
    assert verdicts_of(batch_id) == expected  # no line lost, none twice: the rows of the killed run are gone
    assert batch.counts == reference.counts and batch.progress_done == 30_000


def waiting_for_a_lock(connection) -> int:
    """Sessions of this database that wait for a lock (the worker's apply, blocked by the test)."""
    with connection.cursor() as cursor:  # autocommit: each query sees the activity as it is now
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock'")
        return cursor.fetchone()[0]


@pytest.mark.slow  # the dead worker's lease runs out after 17 s
def test_an_import_apply_killed_mid_way_is_applied_once(clusters, own_prefix):
    from django.db import connection, connections

    n = 60
    content = adopt_file(own_prefix, n)
    for i in range(n):  # adopt: they already resolve, so the server verifies each
        put_on_server(own_prefix, f"ia{i}", f"https://example.org/adopt/{i}")
    batch = repair.import_batch_analyse(configured_import(own_prefix, content).pk)
    assert batch.analysed and batch.counts["new"] == n
    worker: WorkerProcess = clusters("before-crash", **KILL_ENV)
    # Another connection holds the prefix's row: the apply (one transaction) stops there, half done, until killed.
    holder = connections.create_connection("default")
    try:
        holder.set_autocommit(False)
        with holder.cursor() as cursor:
            cursor.execute(f"SELECT id FROM {Prefix._meta.db_table} WHERE id = %s FOR UPDATE", [own_prefix.pk])
        repair.import_batch_start_apply(batch=batch)
        # (Polled on the test's own connection: the holder's transaction would see one snapshot of the activity.)
        wait_for(lambda: waiting_for_a_lock(connection), timeout=30, interval=0.1,
                 what="the worker's apply to wait for the prefix")
        worker.kill()
    finally:
        holder.rollback()
        holder.close()
    stopped = ImportBatch.objects.defer("content").get(pk=batch.pk)
    assert (stopped.step, stopped.state, stopped.applied_at) == ("apply", "running", None)
    assert not Handle.objects.filter(prefix=own_prefix).exists()  # the killed transaction left nothing
    clusters("after-crash", **KILL_ENV)
    sweep_until_ended("import", batch.pk)
    batch = ImportBatch.objects.defer("content").get(pk=batch.pk)
    assert batch.applied and batch.verification == {"success": n, "error": 0, "queued": 0, "running": 0,
                                                    "unpushed": 0}, (batch.step, batch.state, batch.error)
    rows = ImportRow.objects.filter(batch_id=batch.pk, outcome="new")
    assert not rows.filter(request__isnull=True).exists() and not rows.filter(handle__isnull=True).exists()
    assert Handle.objects.filter(prefix=own_prefix).count() == n
    requests = HandleRequest.objects.filter(handle__prefix=own_prefix)
    assert requests.count() == n and set(requests.values_list("op", flat=True)) == {"verify"}


# --- Repair ------------------------------------------------------------------------------------------------
def test_a_repair_resumes_and_queues_each_row_once(clusters, own_prefix, own_sim, settings):
    record_here(own_prefix, [(f"rp{i}", f"https://example.org/rp/{i}") for i in range(150)])
    run = reconcile.run(repair.reconciliation_start(prefix=own_prefix, via="test", enqueue=False).pk)
    assert run.counts["missing"] == 150
    own_sim.set_fault("slow", delay=0.05)  # the creates the repair queues compete with its slices for workers

    def start() -> int:
        return repair.repair_start(run=run, kinds=["missing"], via="test").pk

    job_id = through_a_crash(clusters, "repair", start, lambda job: job.progress_done >= 20)
    own_sim.clear_faults()
    job = RepairJob.objects.get(pk=job_id)
    assert job.state == "done", (job.state, job.error)
    assert job.counts == {"create": 150}
    requests = HandleRequest.objects.filter(handle__prefix=own_prefix)
    assert requests.count() == 150 and set(requests.values_list("op", flat=True)) == {"create"}
    assert not ReconciliationRow.objects.filter(run=run, repair_request__isnull=True).exists()


@pytest.mark.slow
def test_a_repair_killed_at_the_task_timeout_is_resumed(clusters, own_prefix, own_sim):
    record_here(own_prefix, [(f"rt{i}", f"https://example.org/rt/{i}") for i in range(1500)])
    run = reconcile.run(repair.reconciliation_start(prefix=own_prefix, via="test", enqueue=False).pk)
    assert run.counts["missing"] == 1500
    job_id = through_timeouts(clusters, "repair", lambda: repair.repair_start(run=run, kinds=["missing"],
                                                                               via="test").pk)
    job = RepairJob.objects.get(pk=job_id)
    assert job.state in ("done", "incomplete") and job.counts == {"create": 1500}, (job.state, job.counts, job.error)
    assert HandleRequest.objects.filter(handle__prefix=own_prefix).count() == 1500


# --- Bulk job ------------------------------------------------------------------------------------------------
def verify_job(handles: list[Handle]) -> int:
    return desk.bulk_job_create(kind="verify", selection={"ids": [h.pk for h in handles]}).pk


@pytest.mark.parametrize("interruption", ["kill", pytest.param("timeout", marks=pytest.mark.slow)])
def test_a_bulk_job_resumes_and_changes_each_handle_once(clusters, own_prefix, interruption):
    n = 200 if interruption == "kill" else 3000  # the timeout variant: work that outlasts a 3 s task on a quiet machine too
    handles = record_here(own_prefix, [(f"bj{i}", f"https://example.org/bj/{i}") for i in range(n)])
    if interruption == "kill":
        job_id = through_a_crash(clusters, "bulk", lambda: verify_job(handles), lambda job: job.progress_done >= 20)
    else:
        job_id = through_timeouts(clusters, "bulk", lambda: verify_job(handles))
    job = BulkJob.objects.get(pk=job_id)
    assert job.state in ("done", "incomplete"), (job.state, job.error)
    assert (job.progress_done, job.succeeded) == (n, n)
    assert BulkJobItem.objects.filter(job=job).count() == n
    per_handle = HandleRequest.objects.filter(requested_via=f"job:{job_id}").values("handle_id").annotate(n=Count("pk"))
    assert len(per_handle) == n and {row["n"] for row in per_handle} == {1}
