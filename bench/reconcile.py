"""Reconciliation of 1,000,000 handles against the simulator: time and peak memory, beside baselines
measured in the same run on the same server.

Baselines: (1) merely paging through the server's listing with the client (no reads, no database);
(2) the server's read rate: the same client and thread pool reading the URLs of a sample of handles, with
nothing else done. Reconciliation does (1) plus one read per handle plus our side (a database lookup per
page, rows for drift, the missing pass), so its time is bounded below by (1) + N / (2): the ratio to
that bound shows whether the server or we set the pace. Each side runs in its own process so its peak
memory (VmHWM) is its own. Target: peak memory under 300 MB.

    .venv/bin/python -m bench.reconcile [--handles 1000000] [--sample 50000]
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.simulator_process import SimulatorProcess

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# One database per run (the parent's pid), so two runs at once (make bench, a developer) never collide.
DB_NAME = os.environ.get("HANDLES_BENCH_DB") or f"handles_bench_reconcile_{os.getpid()}"
DB_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
PREFIX = "20.500.12345"
SECRET = "bench-secret"
SECRET_ENV = "HANDLE_SECRET_BENCH"


def recreate_database(drop_only: bool = False) -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        if not drop_only:
            conn.execute(f"CREATE DATABASE {DB_NAME}")


def url(i: int) -> str:
    return f"https://collections.example.edu/objects/{i}"


def layout(n: int) -> tuple[Iterator[tuple[str, str]], list[tuple[str, str]]]:
    """The drift: 1% orphans (server only), 1% other URL on the server, 1% missing on the server."""
    server = ((f"{PREFIX}/H{i}", url(i) if i % 100 != 2 else url(i) + "?old") for i in range(n))
    ours = [(f"H{i}", url(i)) for i in range(n) if i % 100 != 1]
    ours += [(f"M{i}", url(i)) for i in range(0, n, 100)]
    return server, ours


def child(mode: str, sample: int) -> None:
    """Runs in its own process: 'list' (baseline 1), 'read' (baseline 2) or 'reconcile'."""
    import django

    django.setup()
    from concurrent.futures import ThreadPoolExecutor

    from django.conf import settings

    from handles.handle_server.client import client_for
    from handles.models import Prefix
    from handles.repair import reconcile, services

    prefix = Prefix.objects.get(prefix=PREFIX)
    client = client_for(prefix.server_config())
    page_size = settings.HANDLES_RECONCILE_PAGE_SIZE
    started = time.perf_counter()
    result: dict = {}
    if mode == "list":
        result["listed"] = sum(1 for _ in client.iter_handles(PREFIX, page_size))
    elif mode == "read":
        names = [f"{PREFIX}/H{i}" for i in range(sample)]
        with ThreadPoolExecutor(max_workers=settings.HANDLES_RECONCILE_WORKERS) as pool:
            result["read"] = sum(1 for _ in pool.map(lambda n: reconcile.read_url(client, n), names))
    else:
        run = services.reconciliation_start(prefix=prefix, via="bench", enqueue=False)
        run = reconcile.run(run.pk)
        result.update(state=run.state, error=run.error, counts=run.counts, rows=run.rows.count())
    result["seconds"] = time.perf_counter() - started
    result["peak_mb"] = peak_rss_mb()
    print(json.dumps(result))


def peak_rss_mb() -> float:
    """This process's own peak resident memory. Not ru_maxrss: Linux carries it over fork and exec, so a
    child would report its parent's peak (here the setup's million rows)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(mode: str, env: dict, sample: int = 0) -> dict:
    output = subprocess.run([sys.executable, "-m", "bench.reconcile", "--child", mode, "--sample", str(sample)],
                            cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def setup(n: int, data_dir: Path, sim: SimulatorProcess) -> None:
    import django

    django.setup()
    from django.db import transaction

    from handles import services
    from handles.models import Handle, Prefix
    from handles.simulator.store import bulk_load

    server, ours = layout(n)
    started = time.perf_counter()
    loaded = bulk_load(data_dir, server)
    print(f"setup: {loaded:,} handles loaded on the simulator in {time.perf_counter() - started:.0f} s", flush=True)
    prefix = services.prefix_save(prefix=Prefix(
        prefix=PREFIX, site_name="Bench", is_default=True, server_url=sim.base_url, auth_identity=f"300:{PREFIX}/ADMIN",
        secret_env_var=SECRET_ENV, tls_mode=Prefix.TLS.PINNED, pinned_certificate=sim.cert_path.read_text(),
        hs_admin_handle=f"{PREFIX}/ADMIN", hs_admin_index=300, hs_admin_permissions="111111111111"))
    started = time.perf_counter()
    columns = ["prefix_id", "suffix", "suffix_key", "target_url", "status", "synced_version"]
    for start in range(0, len(ours), 50_000):
        with transaction.atomic():
            services.insert_rows(Handle, columns, [(prefix.pk, s, s.upper(), u, Handle.Status.ACTIVE, 1)
                                                   for s, u in ours[start:start + 50_000]])
    print(f"setup: {len(ours):,} handles recorded in our database in {time.perf_counter() - started:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--handles", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=50_000, help="Handles read for the read-rate baseline.")
    parser.add_argument("--child", choices=["list", "read", "reconcile"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    env = {**os.environ, "DATABASE_URL": DB_URL, "HANDLES_BENCH_DB": DB_NAME, "HANDLES_DEV": "1",
           "DJANGO_SETTINGS_MODULE": "handles_project.settings", SECRET_ENV: SECRET, "LOG_LEVEL": "WARNING",
           "DJANGO_DEBUG": "0"}
    os.environ.update(env)
    if args.child:
        child(args.child, args.sample)
        return
    recreate_database()
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
        from tests.simulator_process import SimulatorProcess

        with tempfile.TemporaryDirectory() as tmp, SimulatorProcess(Path(tmp) / "sim", prefixes=[PREFIX],
                                                                    secret=SECRET, startup_timeout=30) as sim:
            setup(args.handles, Path(tmp) / "sim", sim)
            listing = run_child("list", env)
            reading = run_child("read", env, sample=min(args.sample, args.handles))
            result = run_child("reconcile", env)
    finally:
        from django.db import connections

        connections.close_all()
        recreate_database(drop_only=True)
    assert result["state"] == "done", result
    counts = result["counts"]
    read_rate = reading["read"] / reading["seconds"]
    bound = listing["seconds"] + counts["listed"] / read_rate
    print(f"listing only: {listing['listed']:,} names in {listing['seconds']:.1f} s (peak {listing['peak_mb']:.0f} MB); "
          f"server read rate {read_rate:,.0f} handles/s ({reading['read']:,} read in {reading['seconds']:.1f} s)")
    print(f"reconciliation: {result['seconds']:.1f} s, peak {result['peak_mb']:.0f} MB, {result['rows']:,} rows stored; "
          f"counts {counts}")
    from bench.common import Figure, report

    report("reconcile", [
        Figure(f"reconcile {counts['listed']:,} handles: time", result["seconds"], "s",
               "listing + one bare client read per handle at the measured rate (lower bound)", bound,
               higher_is_better=False, target="<= 1.2 x"),
        Figure("reconcile: time", result["seconds"], "s", "merely paging through the listing", listing["seconds"],
               higher_is_better=False),
        Figure("reconcile: peak memory", result["peak_mb"], "MB", "paging through the listing: peak memory",
               listing["peak_mb"], higher_is_better=False, target="< 300 MB"),
    ], notes={"handles": args.handles, "counts": counts, "read_rate_per_s": read_rate, "rows": result["rows"]})


if __name__ == "__main__":
    main()
