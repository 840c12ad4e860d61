"""Resolution health across many hosts: checks per second beside the configured sum of per-host rates,
measured in the same run.

Handles are spread over --hosts web sites on loopback addresses (127.0.0.2, 127.0.0.3, ...: a host each
for the politeness), all listed host after host (the scheduler, not the order, must spread the work),
and registered on the Handle server simulator. The whole check runs as `health.run` does in the worker,
in a process of its own; the sites run in this one and record when each request arrived, so the
politeness (the smallest spacing of two requests to one host) is measured too.

Figures: checks/s over the whole run, beside the sum of the per-host rates (hosts / interval), which is
the most politeness allows (target: at least 0.9 of it); and beside a bare thread per host doing the same
lookups and page requests at the same interval, measured right after in the same run, which shows what
the machine allows at that moment (a busy 2-core machine cannot always reach the configured sum).

    .venv/bin/python -m bench.health [--hosts 8] [--per-host 150] [--interval 0.05]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.loopback_sites import LoopbackSites
    from tests.simulator_process import SimulatorProcess

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = os.environ.get("HANDLES_BENCH_DB") or f"handles_bench_health_{os.getpid()}"
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


def bare(interval: float) -> None:
    """The second baseline, in its own process: one thread per host that asks the Handle server and follows
    the page (the same client and fetcher), then sleeps out the rest of its interval. No database, no
    scheduler: what this machine allows right now."""
    import django

    django.setup()
    from concurrent.futures import ThreadPoolExecutor

    from handles.handle_server.client import client_for
    from handles.models import Handle
    from handles.repair.http_check import PageFetcher, host_of

    handles = list(Handle.objects.select_related("prefix").order_by("pk"))
    by_host: dict[str, list] = {}
    for handle in handles:
        by_host.setdefault(host_of(handle.target_url), []).append(handle)
    client = client_for(handles[0].prefix.server_config())
    fetcher = PageFetcher.from_settings()
    fetcher.limiter.interval = 0  # this loop keeps the interval itself

    def one_host(items: list) -> int:
        for handle in items:
            turn = time.monotonic() + interval
            url, _ = client.get_url(handle.full_handle)
            assert url is not None and fetcher.follow(url).ok
            time.sleep(max(0.0, turn - time.monotonic()))
        return len(items)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(by_host)) as pool:
        checked = sum(pool.map(one_host, by_host.values()))
    print(json.dumps({"seconds": time.perf_counter() - started, "checked": checked}))


def child() -> None:
    """The check itself, in its own process (as in the worker)."""
    import django

    django.setup()
    from handles.repair import health, services

    run = services.health_start(filters={}, via="bench", enqueue=False)
    started = time.perf_counter()
    run = health.run(run.pk)
    print(json.dumps({"seconds": time.perf_counter() - started, "state": run.state, "counts": run.counts,
                      "error": run.error}))


def setup(sites: LoopbackSites, hosts: int, per_host: int, data_dir: Path, sim: SimulatorProcess) -> int:
    import django

    django.setup()
    from django.db import transaction

    from handles import services
    from handles.models import Handle, Prefix
    from handles.simulator.store import bulk_load

    ours = [(f"H{host}-{n}", sites.url(host, f"/object/{host}-{n}")) for host in range(hosts) for n in range(per_host)]
    bulk_load(data_dir, ((f"{PREFIX}/{suffix}", url) for suffix, url in ours))
    prefix = services.prefix_save(prefix=Prefix(
        prefix=PREFIX, site_name="Bench", is_default=True, server_url=sim.base_url, auth_identity=f"300:{PREFIX}/ADMIN",
        secret_env_var=SECRET_ENV, tls_mode=Prefix.TLS.PINNED, pinned_certificate=sim.cert_path.read_text(),
        hs_admin_handle=f"{PREFIX}/ADMIN", hs_admin_index=300, hs_admin_permissions="111111111111"))
    with transaction.atomic():
        services.insert_rows(Handle, ["prefix_id", "suffix", "suffix_key", "target_url", "status", "synced_version"],
                             [(prefix.pk, s, s.upper(), u, Handle.Status.ACTIVE, 1) for s, u in ours])
    return len(ours)


def run_child(mode: str, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    output = subprocess.run([sys.executable, "-m", "bench.health", "--child", mode, "--interval", str(args.interval)],
                            cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--per-host", type=int, default=150)
    parser.add_argument("--interval", type=float, default=0.05, help="HANDLES_HEALTH_HOST_INTERVAL, seconds")
    parser.add_argument("--child", choices=["check", "bare"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    env = {**os.environ, "DATABASE_URL": DB_URL, "HANDLES_BENCH_DB": DB_NAME, "HANDLES_DEV": "1",
           "DJANGO_SETTINGS_MODULE": "handles_project.settings", SECRET_ENV: SECRET, "LOG_LEVEL": "WARNING",
           "DJANGO_DEBUG": "0", "HANDLES_HEALTH_ALLOW_PRIVATE": "1",  # the sites are on loopback addresses
           "HANDLES_HEALTH_HOST_INTERVAL": str(args.interval), "HANDLES_HEALTH_WORKERS": str(2 * args.hosts),
           "HANDLES_HEALTH_TIMEOUT": "10"}
    os.environ.update(env)
    if args.child == "check":
        child()
        return
    if args.child == "bare":
        bare(args.interval)
        return
    from tests.loopback_sites import LoopbackSites
    from tests.simulator_process import SimulatorProcess

    recreate_database()
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
        with tempfile.TemporaryDirectory() as tmp, LoopbackSites(args.hosts) as sites, SimulatorProcess(
                Path(tmp) / "sim", prefixes=[PREFIX], secret=SECRET, startup_timeout=30) as sim:
            total = setup(sites, args.hosts, args.per_host, Path(tmp) / "sim", sim)
            result = run_child("check", args, env)
            hits = {host: sorted(t for t, _ in times) for host, times in sites.hits.items()}
            loop = run_child("bare", args, env)
    finally:
        from django.db import connections

        connections.close_all()
        recreate_database(drop_only=True)
    assert result["state"] == "done" and result["counts"] == {"correct": total}, result
    # Arrival times carry this process's scheduling jitter: a request that arrives late makes the next gap
    # look short. Each host's mean spacing is the rate it saw; the smallest single gap is printed too.
    spacing = min((times[-1] - times[0]) / (len(times) - 1) for times in hits.values())
    smallest = min(later - earlier for times in hits.values() for earlier, later in zip(times, times[1:], strict=False))
    start = min(times[0] for times in hits.values())
    print("per host: first request, last request, mean spacing (s): " + "; ".join(
        f"{times[0] - start:.2f} {times[-1] - start:.2f} {(times[-1] - times[0]) / (len(times) - 1):.3f}"
        for times in hits.values()))
    rate = total / result["seconds"]
    allowed = args.hosts / args.interval
    loop_rate = loop["checked"] / loop["seconds"]
    print(f"{total:,} checks over {args.hosts} hosts in {result['seconds']:.2f} s: {rate:,.1f} checks/s; "
          f"politeness allows {allowed:,.1f}/s ({args.hosts} hosts x 1/{args.interval} s); requests to one host: "
          f"mean spacing at least {spacing * 1000:.1f} ms, smallest gap on arrival {smallest * 1000:.1f} ms "
          f"(interval {args.interval * 1000:.0f} ms); a bare thread per host with the same client: "
          f"{loop_rate:,.1f}/s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpu")
    from bench.common import Figure, report

    report("health", [
        Figure(f"health check over {args.hosts} hosts: checks/s", rate, "checks/s",
               "sum of the per-host rates (hosts / HANDLES_HEALTH_HOST_INTERVAL)", allowed, target=">= 0.9 x"),
        Figure(f"health check over {args.hosts} hosts: checks/s", rate, "checks/s",
               "a bare thread per host (same client and fetcher, no database, no scheduler)", loop_rate,
               target=">= 0.9 x"),
        Figure("mean spacing of requests to one host (the least of the hosts)", spacing * 1000, "ms",
               "HANDLES_HEALTH_HOST_INTERVAL", args.interval * 1000, target=">= 0.9 x"),
    ], notes={"hosts": args.hosts, "per_host": args.per_host, "interval_s": args.interval,
              "seconds": result["seconds"], "counts": result["counts"], "smallest_gap_ms": smallest * 1000,
              "bare_loop_per_s": loop_rate, "load_average": os.getloadavg()[0]})


if __name__ == "__main__":
    main()
