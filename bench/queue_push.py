"""Throughput of the request queue, end to end, against a bare loop of client calls to the same server.

Both sides make the same Handle server calls per handle (create with overwrite=false, then read the URL
back) with the same concurrency (--workers: qcluster workers on one side, threads on the other). The queue
side is timed from the first mint to the last request's success, with the cluster already running: it
includes recording the handles and their requests (the bulk mint service, one transaction, as an import
or a batch of API calls records them), the hand-over to the task queue, the per-handle claims, leases,
the request log and the read-back. Target: at least 0.8 of the bare loop's throughput.

The server is the project's simulator, or with --real-server a real HANDLE.NET 9.3.1 server started here in
a temporary folder from shared/real-handle-server (the folder: --real-server DIR, HANDLES_REAL_SERVER_DIST,
or a shared/real-handle-server beside the project), and stopped at the end.

    .venv/bin/python -m bench.queue_push [--handles 2000] [--workers 2]
    .venv/bin/python -m bench.queue_push --real-server [--workers 1]
    .venv/bin/python -m bench.queue_push --mint single      # one mint per transaction (handle_mint), as before
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "handles_bench_queue"
DB_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
SECRET = "bench-secret"
PREFIX = "20.500.12345"


def real_server_dist() -> Path | None:
    """The real server's folder for `make bench`, if this machine has one: HANDLES_REAL_SERVER_DIST, else a
    shared/real-handle-server beside the project (or beside a folder above it, for a git worktree)."""
    named = os.environ.get("HANDLES_REAL_SERVER_DIST")
    candidates = [Path(named)] if named else [up / "shared" / "real-handle-server" for up in ROOT.parents]
    return next((path for path in candidates if (path / "start").is_file()), None)


def recreate_database() -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")


@dataclass
class Server:
    url: str
    certificate: str
    identity: str
    secret: str
    prefix: str


def free_ports(count: int) -> list[int]:
    """Free loopback ports below 32001 (hdl-setup-server refuses higher ones)."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randint(20000, 32000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        if port not in ports:
            ports.append(port)
    return ports


@contextmanager
def simulator_server(tmp: Path) -> Iterator[Server]:
    from tests.simulator_process import SimulatorProcess

    with SimulatorProcess(tmp / "sim", prefixes=[PREFIX], secret=SECRET) as sim:
        yield Server(sim.base_url, sim.cert_path.read_text(), f"300:{PREFIX}/ADMIN", SECRET, PREFIX)


@contextmanager
def real_server(dist: Path, tmp: Path) -> Iterator[Server]:
    folder = tmp / "real-handle-server"
    started = subprocess.run([str(dist / "start"), str(folder), *map(str, free_ports(2))], capture_output=True,
                             text=True, timeout=180)
    if started.returncode != 0:
        raise SystemExit(f"the real Handle server did not start:\n{started.stdout}\n{started.stderr}")
    try:
        env = dict(line.split("=", 1) for line in (folder / "env").read_text().splitlines() if "=" in line)
        yield Server(env["HANDLE_SERVER_URL"], Path(env["HANDLE_SERVER_CERTIFICATE"]).read_text(),
                     env["HANDLE_SERVER_IDENTITY"], env["HANDLE_SERVER_SECRET"], env["HANDLE_SERVER_PREFIX"])
    finally:
        subprocess.run([str(dist / "stop"), str(folder)], capture_output=True, timeout=120)


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--handles", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=None, help="default: 2 (simulator), 1 (real server)")
    parser.add_argument("--real-server", nargs="?", const="", default=None, metavar="DIR",
                        help="a real HANDLE.NET server started from DIR (default: HANDLES_REAL_SERVER_DIST or "
                        "../shared/real-handle-server)")
    parser.add_argument("--mint", choices=["bulk", "single"], default="bulk",
                        help="record the mints in one transaction (bulk, default) or one per transaction")
    args = parser.parse_args()
    real = args.real_server is not None
    dist = Path(args.real_server) if args.real_server else real_server_dist()
    if real and dist is None:
        raise SystemExit("--real-server: no real Handle server folder (set HANDLES_REAL_SERVER_DIST)")
    workers = args.workers or (1 if real else 2)

    secret_env = "HANDLE_SECRET_BENCH"
    env = {**os.environ, "DATABASE_URL": DB_URL, "HANDLES_DEV": "1", "DJANGO_SETTINGS_MODULE": "handles_project.settings",
           "HANDLES_Q_WORKERS": str(workers), "LOG_LEVEL": "WARNING", "DJANGO_DEBUG": "0"}
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

    with tempfile.TemporaryDirectory() as tmp, \
            (real_server(dist, Path(tmp)) if real and dist is not None else simulator_server(Path(tmp))) as server:
        os.environ[secret_env] = env[secret_env] = server.secret
        admin_handle, admin_index = server.identity.split(":", 1)[1], int(server.identity.split(":", 1)[0])
        prefix = services.prefix_save(prefix=Prefix(
            prefix=server.prefix, site_name="bench", server_url=server.url, auth_identity=server.identity,
            secret_env_var=secret_env, tls_mode=Prefix.TLS.PINNED, pinned_certificate=server.certificate,
            hs_admin_handle=admin_handle, hs_admin_index=admin_index, hs_admin_permissions="011111110011"))
        config = prefix.server_config()
        run = uuid.uuid4().hex[:6]

        # Baseline: the same two calls per handle, straight from threads, nothing recorded.
        clients = [HandleServerClient(config) for _ in range(workers)]
        names = [f"{server.prefix}/bare-{run}-{i}" for i in range(args.handles)]

        def bare(i: int) -> None:
            client = clients[i % workers]
            url = f"https://example.org/bare/{i}"
            client.create_handle(names[i], records.new_record(url, admin_handle=admin_handle, admin_index=admin_index,
                                                              permissions="011111110011"))
            assert client.get_url(names[i])[0] == url

        # Warm-up, untimed: connections up, and the server's JVM past its first, slower requests (the
        # queue, measured second, would otherwise get a faster server than the bare loop).
        warm_up = min(300, args.handles // 4)
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(bare, range(warm_up)))
        started = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(bare, range(warm_up, args.handles)))
        bare_rate = (args.handles - warm_up) / (time.perf_counter() - started)

        # The queue: a running qcluster; mints recorded by the service layer, timed until the last success.
        cluster = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            warm = services.handle_mint(prefix=prefix, suffix=f"warm-{run}", target_url="https://example.org/warm")
            wait_until(lambda: HandleRequest.objects.filter(pk=warm.pk, status="success").exists(), 120,
                       "the warm-up mint's success")
            items = [services.MintItem(target_url=f"https://example.org/q/{i}", suffix=f"q-{run}-{i}")
                     for i in range(args.handles)]
            t0 = time.time()
            if args.mint == "bulk":
                services.handles_mint_bulk(prefix=prefix, items=items, via="bench")
            else:
                for item in items:
                    services.handle_mint(prefix=prefix, target_url=item.target_url, suffix=item.suffix, via="bench")
            minted = time.time() - t0
            wait_until(lambda: not HandleRequest.objects.unfinished().exists(), 900, "draining the queue")
        finally:
            cluster.terminate()
            cluster.wait(timeout=60)
        timed = HandleRequest.objects.exclude(pk=warm.pk)
        done = timed.aggregate(first=Min("started_at"), last=Max("finished_at"))
        failed = timed.exclude(status="success").count()
        end_to_end = args.handles / (done["last"].timestamp() - t0)
        pushing = args.handles / (done["last"] - done["first"]).total_seconds()

    where = "real HANDLE.NET 9.3.1 server" if real else "simulator"
    print(f"{args.handles} handles against the {where}, {workers} worker(s)/thread(s); mints: {args.mint}; "
          f"queue failures: {failed}")
    print(f"recording the mints: {args.handles / minted:,.0f} mints/s ({minted:.2f} s); pushing alone (first "
          f"claim to last success): {pushing:,.1f} handles/s; bare loop {bare_rate:,.1f} handles/s")
    name = "queue_push_real" if real else "queue_push"
    report(name, [Figure(
        f"queue end to end, mint to verified ({where})", end_to_end, "handles/s",
        f"bare loop of create + read back, {workers} thread(s)", bare_rate, target=">= 0.8 of baseline")],
        notes={"handles": args.handles, "workers": workers, "failed": failed, "mint": args.mint,
               "mints_per_s": args.handles / minted, "pushing_per_s": pushing, "server": where})
    if failed:
        raise SystemExit(f"{failed} requests did not succeed")


if __name__ == "__main__":
    main()
