"""Push throughput of the request queue against a bare loop of client calls to the same simulator.

Both sides make the same Handle server calls per handle (create with overwrite=false, then read the URL
back) with the same concurrency; the queue adds what makes it safe: the request log, per-handle claims,
leases and verification. Target: the queue reaches at least 0.8 of the bare loop's throughput.

    .venv/bin/python -m bench.queue_push [--handles 2000] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "handles_bench_queue"
DB_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
SECRET = "bench-secret"
PREFIX = "20.500.12345"


def recreate_database() -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--handles", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    env = {**os.environ, "DATABASE_URL": DB_URL, "HANDLES_DEV": "1", "DJANGO_SETTINGS_MODULE": "handles_project.settings",
           "HANDLE_SECRET_BENCH": SECRET, "HANDLES_Q_WORKERS": str(args.workers), "LOG_LEVEL": "WARNING",
           "DJANGO_DEBUG": "0"}
    os.environ.update(env)
    recreate_database()
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)

    import django

    django.setup()
    from django.db.models import Max, Min

    from bench.common import Figure, report
    from handles import services
    from handles.handle_server import records
    from handles.handle_server.client import HandleServerClient
    from handles.models import HandleRequest, Prefix
    from tests.simulator_process import SimulatorProcess

    with tempfile.TemporaryDirectory() as tmp, SimulatorProcess(Path(tmp) / "sim", prefixes=[PREFIX], secret=SECRET) as sim:
        prefix = services.prefix_save(prefix=Prefix(
            prefix=PREFIX, site_name="bench", server_url=sim.base_url, auth_identity=f"300:{PREFIX}/ADMIN",
            secret_env_var="HANDLE_SECRET_BENCH", tls_mode=Prefix.TLS.PINNED, pinned_certificate=sim.cert_path.read_text(),
            hs_admin_handle=f"{PREFIX}/ADMIN", hs_admin_index=300, hs_admin_permissions="111111111111"))
        config = prefix.server_config()

        # Baseline: the same two calls per handle, straight from threads, nothing recorded.
        clients = [HandleServerClient(config) for _ in range(args.workers)]
        names = [f"{PREFIX}/bare-{uuid.uuid4().hex[:12]}" for _ in range(args.handles)]

        def bare(i: int) -> None:
            client = clients[i % args.workers]
            url = f"https://example.org/bare/{i}"
            client.create_handle(names[i], records.new_record(url, admin_handle=f"{PREFIX}/ADMIN", admin_index=300,
                                                              permissions="111111111111"))
            assert client.get_url(names[i])[0] == url

        started = time.perf_counter()
        with ThreadPoolExecutor(args.workers) as pool:
            list(pool.map(bare, range(args.handles)))
        bare_rate = args.handles / (time.perf_counter() - started)

        # The queue: requests recorded by the service layer, pushed by a real qcluster.
        for i in range(args.handles):
            services.handle_mint(prefix=prefix, suffix=f"q-{uuid.uuid4().hex[:12]}", target_url=f"https://example.org/q/{i}")
        cluster = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 600
            while HandleRequest.objects.unfinished().exists():
                if time.monotonic() > deadline:
                    raise SystemExit("the queue did not drain in 10 minutes")
                time.sleep(0.5)
        finally:
            cluster.terminate()
            cluster.wait(timeout=30)
        done = HandleRequest.objects.aggregate(first=Min("started_at"), last=Max("finished_at"))
        failed = HandleRequest.objects.exclude(status="success").count()
        queue_rate = args.handles / (done["last"] - done["first"]).total_seconds()

    print(f"{args.handles} handles, {args.workers} workers/threads; queue failures: {failed}")
    report("queue_push", [Figure(
        "queue push throughput (create + verify)", queue_rate, "handles/s",
        f"bare loop of client calls, {args.workers} threads", bare_rate, target=">= 0.8 of baseline")],
        notes={"handles": args.handles, "workers": args.workers, "failed": failed})


if __name__ == "__main__":
    main()
