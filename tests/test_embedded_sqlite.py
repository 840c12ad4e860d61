"""`make run`'s embedded defaults: SQLite and the ORM broker. The suite runs on PostgreSQL; this test runs the
queue's and the jobs' code on SQLite in a process of its own (a fresh database file), so SQL that only
PostgreSQL accepts cannot hide there: demo data is minted, an adopt import and a repair end verified, a
bulk job ends verified, and no settler fails."""

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
out["import after retry"] = batch.state

# A bulk job that verifies every demo handle.
bulk = desk.bulk_job_create(kind="verify", selection={"ids": list(Handle.objects.values_list("pk", flat=True))})
for _ in range(5):
    if desk.bulk_job_run_slice(bulk.pk) == "done":
        break
out["settled now"] = jobs.settle_all()
bulk.refresh_from_db()
out["bulk"] = bulk.status
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
           "SIM_CERT": str(handle_server.cert_path), "STEM": f"sqlite-{uuid.uuid4().hex[:8]}"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    result_line = next((line for line in done.stdout.splitlines() if line.startswith("RESULT ")), None)
    assert done.returncode == 0 and result_line, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(result_line.removeprefix("RESULT "))
    assert result["vendor"] == "sqlite"
    assert result["demo requests"] == ["success"] * 3
    assert result["import"] == "incomplete"
    assert result["repair"] == "done"
    assert result["import after retry"] == "applied"
    assert result["bulk"] == "done"
    assert (result["health remaining"], result["health latest"]) == (0, 0.0)
    assert result["health legacy broken"] == result["handles last broken"] == result["health handles"] >= 3
    assert result["health vendor"] == 0
    assert (result["health page"], result["handle list"], result["pruned"]) == (200, 200, 1)
    assert result["errors"] == []
