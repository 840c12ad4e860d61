"""Legacy import of 100,000 rows: dry run plus apply (adopt mode, no pushes), against PostgreSQL's COPY
of the same file into a bare table, measured in the same run.

The file looks like the Grinnell validation report (MMS ID, handle URL, title; a tenth of the suffixes
from the vendor's ten-digit sequence) and targets come from the prefix's URL template. Apply records
assets, handles and one verification request per handle in one transaction; the requests are handed to
the queue but no worker runs, so nothing is pushed. Target: under 30 s for the dry run plus the apply.

    .venv/bin/python -m bench.import_csv [--rows 100000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# One database per run (the parent's pid), so two runs at once (make bench, a developer) never collide.
DB_NAME = os.environ.get("HANDLES_BENCH_DB") or f"handles_bench_import_{os.getpid()}"
DB_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
TEMPLATE = "https://grinnell.primo.exlibrisgroup.com/discovery/fulldisplay/alma{external_id}/01GCL_INST:GCL"


def recreate_database(drop_only: bool = False) -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        if not drop_only:
            conn.execute(f"CREATE DATABASE {DB_NAME}")


def write_file(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("\ufeffMMS ID,Handle URL,dc:title,HTTP Status Code\n")
        for n in range(rows):
            suffix = str(1742400000 + n) if n % 10 == 0 else str(n + 1)
            out.write(f'99101{n:08d}04641,http://hdl.handle.net/11084/{suffix},"Letter {n}, Grinnell, Iowa",200\n')


def copy_baseline(path: Path) -> float:
    """COPY of the same file into a bare table: the floor for getting these bytes into PostgreSQL."""
    import psycopg

    with psycopg.connect(DB_URL.replace("postgres://", "postgresql://")) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_copy")
        conn.execute("CREATE TABLE bench_copy (mms_id text, handle text, title text, status text)")
        started = time.perf_counter()
        with conn.cursor() as cursor, cursor.copy("COPY bench_copy FROM STDIN (FORMAT csv, HEADER true)") as copy, \
                path.open("rb") as source:
            while block := source.read(1 << 20):
                copy.write(block)
        conn.commit()
        elapsed = time.perf_counter() - started
        conn.execute("DROP TABLE bench_copy")
        conn.commit()
    return elapsed


def settle_timings(batch_id: int) -> tuple[float, float, float]:
    """Seconds to settle the import while its requests wait, and after they all succeeded; and the same
    counting as one bare SQL statement."""
    from django.db import connection

    from handles.models import HandleRequest
    from handles.repair import services as repair
    from handles.repair.models import ImportRow, JobState

    started = time.perf_counter()
    waiting = repair.import_batch_settle(batch_id)
    settle_waiting = time.perf_counter() - started
    assert waiting.state == JobState.VERIFYING, waiting.state
    HandleRequest.objects.filter(status=HandleRequest.Status.QUEUED).update(status=HandleRequest.Status.SUCCESS)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT q.status, count(*) FROM {ImportRow._meta.db_table} r "
                       f"JOIN {HandleRequest._meta.db_table} q ON q.id = r.request_id WHERE r.batch_id = %s "
                       "GROUP BY q.status", [batch_id])
        cursor.fetchall()
    bare_count = time.perf_counter() - started
    started = time.perf_counter()
    done = repair.import_batch_settle(batch_id)
    settle_done = time.perf_counter() - started
    assert done.applied, (done.step, done.state, done.error)
    return settle_waiting, settle_done, bare_count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    env = {**os.environ, "DATABASE_URL": DB_URL, "HANDLES_DEV": "1", "DJANGO_SETTINGS_MODULE": "handles_project.settings",
           "LOG_LEVEL": "WARNING", "DJANGO_DEBUG": "0"}
    os.environ.update(env)
    recreate_database()
    try:
        measure(args.rows, env)
    finally:
        from django.db import connections

        connections.close_all()
        recreate_database(drop_only=True)


def measure(rows: int, env: dict) -> None:
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)

    import django

    django.setup()
    from bench.common import Figure, report
    from handles import services
    from handles.models import Handle, HandleRequest, Prefix
    from handles.repair import services as repair
    from handles.repair.models import ImportRow, JobState

    prefix = services.prefix_save(prefix=Prefix(
        prefix="11084", site_name="Grinnell College", server_url="https://127.0.0.1:9", auth_identity="300:11084/ADMIN",
        secret_env_var="HANDLE_SECRET_BENCH", tls_mode=Prefix.TLS.INSECURE, hs_admin_handle="11084/ADMIN",
        url_template=TEMPLATE, vendor_suffix_pattern=r"^\d{10}$"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "legacy.csv"
        write_file(path, rows)
        size = path.stat().st_size
        copy_seconds = copy_baseline(path)

        started = time.perf_counter()
        batch = repair.import_batch_create(file_name=path.name, content=path.read_bytes(), via="bench")
        batch = repair.import_batch_configure(batch=batch, mapping=batch.mapping, prefix=prefix, source_system="alma")
        batch = repair.import_batch_analyse(batch.pk)
        dry_run = time.perf_counter() - started
        assert batch.analysed, batch.error
        started = time.perf_counter()
        batch = repair.import_batch_apply(batch.pk, via="bench")
        apply = time.perf_counter() - started
        # Adopt mode: recorded, with a verification request per handle; applied (done) once the worker has them.
        assert batch.state == JobState.VERIFYING, (batch.state, batch.error)
        handles = Handle.objects.filter(prefix=prefix).count()
        requests = HandleRequest.objects.filter(op=HandleRequest.Op.VERIFY).count()
        assert handles == rows and requests == rows, (handles, requests)

        started = time.perf_counter()
        again = repair.import_batch_create(file_name=path.name, content=path.read_bytes(), via="bench")
        again = repair.import_batch_configure(batch=again, mapping=again.mapping, prefix=prefix, source_system="alma")
        again = repair.import_batch_analyse(again.pk)
        rerun = time.perf_counter() - started
        assert again.counts.get(ImportRow.Outcome.SAME) == rows, again.counts

        # Settling the import: counting its requests by status under its row lock. Once while all are
        # queued (it stays verifying), once after they all succeeded (as if the worker had verified them).
        settle_waiting, settle_done, bare_count = settle_timings(batch.pk)

    total = dry_run + apply
    print(f"settling the {rows:,}-request import: {settle_waiting * 1000:.0f} ms while all are queued, "
          f"{settle_done * 1000:.0f} ms once all succeeded (then applied); a bare GROUP BY of its requests "
          f"by status: {bare_count * 1000:.0f} ms")
    print(f"{rows:,} rows ({size / 1e6:.1f} MB): dry run {dry_run:.2f} s, apply {apply:.2f} s "
          f"(assets, handles, verify requests: {handles:,} each), total {total:.2f} s; "
          f"COPY into a bare table {copy_seconds:.2f} s; re-run dry run (all 'same') {rerun:.2f} s")
    report("import_csv", [
        Figure(f"import {rows:,} rows: dry run + apply (adopt, no pushes)", total, "s",
               "PostgreSQL COPY of the same file into a bare table", copy_seconds, higher_is_better=False,
               target="< 30 s"),
        Figure("  of which the dry run", dry_run, "s", "COPY", copy_seconds, higher_is_better=False),
        Figure("  of which the apply", apply, "s", "COPY", copy_seconds, higher_is_better=False),
        Figure(f"settle the {rows:,}-request import (all verified)", settle_done * 1000, "ms",
               "a bare GROUP BY of its requests by status", bare_count * 1000, higher_is_better=False,
               target="< 1000 ms"),
    ], notes={"rows": rows, "file_bytes": size, "rerun_dry_run_seconds": rerun})


if __name__ == "__main__":
    main()
