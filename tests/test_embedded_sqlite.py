"""`make run`'s embedded defaults: SQLite and the ORM broker. The suite runs on PostgreSQL; this test runs the
queue's and the jobs' code on SQLite in a process of its own (a fresh database file), so SQL that only
PostgreSQL accepts cannot hide there: demo data is minted, an adopt import and a repair end verified, a
bulk job ends verified, and no settler fails.

Then every kind of job at a size that takes the paths of real use, with the batch and slice sizes
lowered so a few hundred handles go through several of each: a push import of 300 lines by the
`import_handles --mode push --apply --wait` command (server reads in threads, several batches, each
handing tasks to the queue, whose inline worker closes the connection between batches as django-q2's
does), an adopt import, a reconciliation over several listing pages, a repair in several chunks, a
bulk job in several slices, a health check in several batches, an API call with an Idempotency-Key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from tests.conftest import SIM_SECRET

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r'''
import json, logging, os, sys
import django
django.setup()
from django.core.management import call_command
from django.db import connection

errors = []
class Keep(logging.Handler):
    def emit(self, record):
        if record.levelno >= logging.ERROR:
            errors.append(f"{record.name}: {record.getMessage()} {record.exc_text or ''}")
logging.getLogger().addHandler(Keep())

call_command("migrate", verbosity=0)
from handles import demo, jobs
from handles.desk import services as desk
from handles.models import Handle, HandleRequest, Prefix
from handles.repair import reconcile, services as repair
from handles.repair.models import ImportMode, ReconciliationRow
from pathlib import Path

out = {"vendor": connection.vendor}
demo.seed(server_url=os.environ["SIM_URL"], certificate_path=Path(os.environ["SIM_CERT"]), username="admin",
          password="admin")
out["demo requests"] = sorted(HandleRequest.objects.values_list("status", flat=True))
prefix = Prefix.objects.get(prefix="20.500.12345")

# An adopt import of a handle that is not on the server: it cannot be verified, so the import is incomplete.
stem = os.environ["STEM"]
content = f"handle,url\n20.500.12345/{stem}-legacy,https://example.org/{stem}\n".encode()
batch = repair.import_batch_create(file_name="legacy.csv", content=content, via="test")
batch = repair.import_batch_configure(batch=batch, mapping=batch.mapping, prefix=prefix, mode=ImportMode.ADOPT)
batch = repair.import_batch_analyse(batch.pk)
batch = repair.import_batch_apply(batch.pk)
batch.refresh_from_db()
out["import"] = batch.state

# Reconcile and repair what is missing: the repair creates the handle, then is done (verified).
run = repair.reconciliation_start(prefix=prefix, enqueue=False)
run = reconcile.run(run.pk)
job = repair.repair_start(run=run, row_ids=list(run.rows.filter(kind=ReconciliationRow.Kind.MISSING,
                                                                 full_handle__endswith=f"{stem}-legacy")
                                                .values_list("pk", flat=True)), enqueue=False)
job = repair.repair_execute(job.pk)
job.refresh_from_db()
out["repair"] = job.state

# The import's failed verification, retried now that the handle is there.
repair.import_batch_retry_failed(batch=batch)
batch.refresh_from_db()
out["import after retry"] = batch.get_state_display()

# A bulk job that verifies every demo handle.
bulk = desk.bulk_job_create(kind="verify", selection={"ids": list(Handle.objects.values_list("pk", flat=True))})
for _ in range(5):
    if desk.bulk_job_run_slice(bulk.pk) == "done":
        break
out["settled now"] = jobs.settle_all()
bulk.refresh_from_db()
out["bulk"] = bulk.state

# --- Every kind of job at size ---------------------------------------------------------------------------
import threading
from django.conf import settings
from handles import services as core
from handles.desk.models import BulkJob
from handles.repair import health, reconcile as reconcile_module
from handles.repair.models import HealthRun, ImportBatch, RepairJob

reconcile_module.PUSH_BATCH = 60
repair.CHUNK = 20
health.CHUNK = 20
settings.HANDLES_RECONCILE_PAGE_SIZE = 100
settings.HANDLES_DESK_JOB_CHUNK = 20
settings.HANDLES_DESK_JOB_SLICE_SECONDS = 0
settings.HANDLES_HEALTH_HOST_INTERVAL = 0

reader_threads, push_batches, slices = set(), [], []
settings.HANDLES_JOB_SLICE_SECONDS = 0  # every job kind: one chunk a slice, so the bulk job takes several slices
from handles import jobs as jobs_module
real_read_url, real_queue_push, real_slice = reconcile_module.read_url, repair.import_batch_queue_push, jobs_module.run_slice
def read_url(*args):
    reader_threads.add(threading.current_thread().name)
    return real_read_url(*args)
def queue_push(batch_id, ops, **kwargs):
    push_batches.append(len(ops))
    return real_queue_push(batch_id, ops, **kwargs)
def run_slice(runner, job_id, **kwargs):
    outcome = real_slice(runner, job_id, **kwargs)
    if runner.name == "bulk":
        slices.append(outcome)
    return outcome
reconcile_module.read_url, repair.import_batch_queue_push, jobs_module.run_slice = read_url, queue_push, run_slice

import time
started = time.monotonic()
def lap(name):
    out.setdefault("seconds", {})[name] = round(time.monotonic() - started, 1)
size = 300
pushed = Path(os.environ["WORK"]) / "push.csv"
pushed.write_text("handle,url\n" + "".join(f"20.500.12345/{stem}-p{i},http://127.0.0.1:9/{stem}/p{i}\n"
                                            for i in range(size)))
call_command("import_handles", str(pushed), "--mode", "push", "--apply", "--wait", "--timeout", "120")
push = ImportBatch.objects.defer("content").order_by("-pk").first()
out["push import"] = [push.get_state_display(), push.verification.get("success"), len(push_batches), len(reader_threads) > 1]
lap('push import')

adopted = Path(os.environ["WORK"]) / "adopt.csv"
adopted.write_text("handle,url\n" + "".join(f"20.500.12345/{stem}-a{i},http://127.0.0.1:9/{stem}/a{i}\n"
                                             for i in range(60)))
try:
    call_command("import_handles", str(adopted), "--mode", "adopt", "--apply", "--wait", "--timeout", "120")
except Exception as exc:  # not on the server: the command ends with the job's failure
    out["adopt import"] = ["Applied; some handles failed on the server" in str(exc), getattr(exc, "returncode", None)]
adopt = ImportBatch.objects.defer("content").order_by("-pk").first()

run = repair.reconciliation_start(prefix=prefix, enqueue=False)
run = reconcile.run(run.pk)
out["reconciliation"] = [run.state, run.counts.get("missing", 0) >= 60,
                         run.counts.get("listed", 0) > settings.HANDLES_RECONCILE_PAGE_SIZE]
lap('reconciliation')
job = repair.repair_start(run=run, row_ids=list(run.rows.filter(kind=ReconciliationRow.Kind.MISSING,
                                                                 full_handle__contains=f"{stem}-a")
                                                .values_list("pk", flat=True)), enqueue=True)
job = RepairJob.objects.get(pk=job.pk)
out["repair at size"] = [job.state, job.verification.get("success")]
lap('repair at size')
repair.import_batch_retry_failed(batch=adopt)
adopt.refresh_from_db()
out["adopt after repair"] = [adopt.get_state_display(), adopt.verification.get("success")]
lap('adopt after repair')

bulk = desk.bulk_job_create(kind="verify", selection={"filters": {"q": f"{stem}-a"}})
bulk.refresh_from_db()
out["bulk at size"] = [bulk.state, bulk.progress_total, len(slices) > 3]
lap('bulk at size')

check = repair.health_start(filters={"limit": 60})
check = HealthRun.objects.get(pk=check.pk)
out["health check"] = [check.state, check.progress_done]
lap('health check')

record, replayed = core.request_once(idempotency_key="sqlite-key", perform=lambda: core.handle_verify(
    handle=Handle.objects.get(suffix=f"{stem}-p1"), via="test"))
out["idempotent"] = [replayed, core.request_once(idempotency_key="sqlite-key", perform=None)[0].pk == record.pk]
# Health: each run's results, the health page's filters (vendor pattern as a regex), the handle list's
# filter by latest outcome, pruning: the SQL of them all on SQLite.
from django.test import Client
from django.contrib.auth import get_user_model
from django.utils import timezone
from handles.repair import health, selectors as repair_selectors
from handles.repair.models import HandleCheck, HealthRun
Prefix.objects.filter(pk=prefix.pk).update(vendor_suffix_pattern=r"^\d{10}$")
demo_handles = list(Handle.objects.order_by("pk"))
for outcome in ("correct", "broken"):
    hrun = HealthRun.objects.create(state="done", progress_total=len(demo_handles), finished_at=timezone.now(),
                                    counts={outcome: len(demo_handles)})
    HandleCheck.objects.bulk_create([HandleCheck(run=hrun, handle=h, checked_at=timezone.now(), outcome=outcome)
                                     for h in demo_handles])
out["health handles"] = len(demo_handles)
out["health remaining"] = health.remaining(hrun).count()
out["health latest"] = repair_selectors.latest_health().share_correct
out["health legacy broken"] = repair_selectors.health_results(hrun, outcome="broken", origin="legacy").count()
out["health vendor"] = repair_selectors.health_results(hrun, origin="vendor").count()
out["handles last broken"] = repair_selectors.handles_by_last_outcome(Handle.objects.all(), "broken").count()
from django.conf import settings
settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
client = Client()
client.force_login(get_user_model().objects.get(username="admin"))
out["health page"] = client.get("/admin/handles_repair/healthrun/", {"origin": "legacy", "outcome": "broken"}).status_code
out["handle list"] = client.get("/admin/handles/handle/", {"health": "broken"}).status_code
settings.HANDLES_HEALTH_KEEP_RUNS = 1
out["pruned"] = health.prune_old_runs()
out["errors"] = errors
print("RESULT " + json.dumps(out))
'''


def test_the_queue_and_the_jobs_run_on_sqlite(handle_server, tmp_path):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "HANDLES_DEV": "",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'handles.sqlite3'}", "HANDLES_Q_SYNC": "1",
           "HANDLE_SECRET_DEMO": SIM_SECRET, "SIM_URL": handle_server.base_url,
           "SIM_CERT": str(handle_server.cert_path), "STEM": f"sqlite-{uuid.uuid4().hex[:8]}", "WORK": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    result_line = next((line for line in done.stdout.splitlines() if line.startswith("RESULT ")), None)
    assert done.returncode == 0 and result_line, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(result_line.removeprefix("RESULT "))
    print(result.get("seconds"))
    assert result["vendor"] == "sqlite"
    assert result["demo requests"] == ["success"] * 3
    assert result["import"] == "incomplete"
    assert result["repair"] == "done"
    assert result["import after retry"] == "Applied and verified on the server"
    assert result["bulk"] == "done"
    state, verified, batches, threaded = result["push import"]
    assert (state, verified, threaded) == ("Applied and verified on the server", 300, True) and batches > 1  # several batches, threads
    assert result["adopt import"] == [True, 1]
    assert result["reconciliation"] == ["done", True, True]
    assert result["repair at size"] == ["done", 60]
    assert result["adopt after repair"] == ["Applied and verified on the server", 60]
    assert result["bulk at size"] == ["done", 60, True]
    assert result["health check"] == ["done", 60]
    assert result["idempotent"] == [False, True]
    assert (result["health remaining"], result["health latest"]) == (0, 0.0)
    assert result["health legacy broken"] == result["handles last broken"] == result["health handles"] >= 3
    assert result["health vendor"] == 0
    # Three finished runs have results (the 60-handle check and the two above); keeping one prunes two.
    assert (result["health page"], result["handle list"], result["pruned"]) == (200, 200, 2)
    assert result["errors"] == []
