"""ArchivesSpace lookup throughput and latency, against a bare Django JSON view served the same way.

N handles (default 1,000,000), each with its DAMS asset, live in PostgreSQL (database `handles_bench`,
or `handles_bench_<N>` for other sizes, or the one --database or HANDLES_BENCH_DB names), loaded once
with COPY and reused by later runs. One gunicorn
(the README's production command: sync workers) serves both the API and, mounted only by
bench/settings.py, a bare JSON view. A load generator on loopback (wrk if installed, else a threaded
Python client) asks random handles by name, by asset and by URL with a read token, and the bare view;
the four take turns in rounds, so a change of load on the (shared) machine meets them alike.
Targets: at most 2.5 times the bare view's server CPU per request (so at least 40 % of its throughput where
CPU is the limit), with the lookups on Django's supported database paths; p99 < 20 ms.

    .venv/bin/python -m bench.api_lookup                     # 1,000,000 handles (first load: a few minutes)
    .venv/bin/python -m bench.api_lookup --handles 20000     # quick
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from http.client import HTTPConnection
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "20.500.14725"
ALPHABET = "23456789bcdfghjkmnpqrstvwxz"
SUFFIX_SPACE = len(ALPHABET) ** 8
SAMPLE = 20_000  # distinct random lookups per kind


def suffix_of(i: int) -> str:
    """A random-looking, unique 8-character suffix for row i (a bijection on 27^8: 2 does not divide it)."""
    n = (i * 2_654_435_761 + 12_345) % SUFFIX_SPACE
    chars = []
    for _ in range(8):
        n, r = divmod(n, len(ALPHABET))
        chars.append(ALPHABET[r])
    return "".join(chars)


def url_of(i: int) -> str:
    return f"https://collections.example.edu/node/{i}"


# --- Database -------------------------------------------------------------------------------------
def ensure_database(name: str) -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def copy_rows(model: Any, explicit: dict[str, Callable[[int], Any]], count: int) -> None:
    """COPY `count` rows into the model's table. Columns not given explicitly get the field's default,
    so fields added to the model later do not break the benchmark."""
    from django.db import connection

    fields = [f for f in model._meta.concrete_fields]
    defaults = {f.name: f.get_default() for f in fields if f.name not in explicit}
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    with connection.cursor() as cursor, cursor.cursor.copy(
        f"COPY {connection.ops.quote_name(model._meta.db_table)} ({columns}) FROM STDIN"
    ) as copy:
        for i in range(count):
            copy.write_row([f.get_db_prep_save(explicit[f.name](i) if f.name in explicit else defaults[f.name],
                                               connection) for f in fields])


def load(n: int) -> None:
    """Fill the database with n assets and their handles, unless a previous run already did."""
    from django.db import connection, transaction
    from django.utils import timezone

    from handles import services
    from handles.models import Asset, Handle, Prefix

    prefix = Prefix.objects.filter(prefix=PREFIX).first()
    if prefix is not None and Handle.objects.count() == n and Asset.objects.count() == n:
        print(f"reusing {n:,} handles in the benchmark database")
        return
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE handles_handlerequest, handles_handle, handles_asset RESTART IDENTITY CASCADE")
    if prefix is None:
        prefix = services.prefix_save(prefix=Prefix(
            prefix=PREFIX, site_name="Collections Portal", is_default=True, server_url="https://127.0.0.1:9",
            auth_identity=f"300:{PREFIX}/ADMIN", secret_env_var="HANDLE_SECRET_BENCH", tls_mode=Prefix.TLS.INSECURE,
            hs_admin_handle=f"{PREFIX}/ADMIN", suffix_policy=Prefix.SuffixPolicy.RANDOM))
    base = timezone.now() - timedelta(days=365)
    when = lambda i: base + timedelta(seconds=i * 10)  # noqa: E731
    with transaction.atomic():
        copy_rows(Asset, {
            "id": lambda i: i + 1, "source_system": lambda i: "dams", "external_id": str,
            "title": lambda i: f"Object {i}", "url": url_of, "state": lambda i: "published",
            "created_at": when, "updated_at": when,
        }, n)
        copy_rows(Handle, {
            "id": lambda i: i + 1, "prefix": lambda i: prefix.pk, "suffix": suffix_of,
            "suffix_key": lambda i: suffix_of(i).upper(), "target_url": url_of, "status": lambda i: "active",
            "asset": lambda i: i + 1, "created_at": when, "updated_at": when, "version": lambda i: 1,
            "synced_version": lambda i: 1, "synced_at": when,
        }, n)
        with connection.cursor() as cursor:
            for table in ("handles_asset", "handles_handle"):
                cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), %s)", [n])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE handles_asset, handles_handle")
    print(f"loaded {n:,} assets and handles with COPY in {time.perf_counter() - started:.0f} s")


def read_token() -> str:
    from handles.api import services
    from handles.api.models import ApiToken

    return services.token_create(token=ApiToken(name="bench api_lookup", scope=ApiToken.Scope.READ),
                                 created_by=None)


# --- Server ---------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_gunicorn(port: int, workers: int, env: dict[str, str]) -> subprocess.Popen:
    gunicorn = Path(sys.executable).with_name("gunicorn")
    process = subprocess.Popen(
        [str(gunicorn), "handles_project.wsgi", "-w", str(workers), "-b", f"127.0.0.1:{port}", "--log-level",
         "warning"], cwd=ROOT, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/bench/bare", timeout=2) as answer:
                if answer.status == 200:
                    return process
        except OSError:
            time.sleep(0.2)
    process.terminate()
    raise SystemExit("gunicorn did not start within 30 s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat fields 14 and 15)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_pids(master: int) -> dict[str, set[int]]:
    """gunicorn's workers, and the PostgreSQL backends that serve them."""
    from django.db import connection

    workers = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == master:
                workers.add(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                       "AND pid <> pg_backend_pid()")
        backends = {row[0] for row in cursor.fetchall()}
    return {"app": workers, "db": backends}


def measure_cpu(master: int, run: Callable[[], dict[str, float]]) -> dict[str, float]:
    """Run one slice and add the server's CPU per request: the cost that decides throughput on an idle
    machine, and that other people's load on a shared one does not change. A backend that ends during the
    slice (CONN_MAX_AGE) loses its share, so the database figure is a slight underestimate."""
    before = {kind: {pid: cpu_seconds(pid) for pid in pids} for kind, pids in server_pids(master).items()}
    result = run()
    after = server_pids(master)
    for kind, pids in after.items():
        used = sum(cpu_seconds(pid) - before[kind].get(pid, 0.0) for pid in pids)
        result[f"{kind}_cpu_ms"] = used * 1000 / max(1, result["requests"])
    return result


# --- Load generators ------------------------------------------------------------------------------
WRK_SCRIPT = """
local paths = {}
for line in io.lines(os.getenv("BENCH_PATHS")) do paths[#paths + 1] = line end
local headers = {["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")}
local threads = 0
function setup(thread) threads = threads + 1; thread:set("tid", threads) end
function init(args) math.randomseed(os.time() * 1000 + tid) end
function request() return wrk.format("GET", paths[math.random(#paths)], headers) end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %d, "seconds": %f, "p50_ms": %f, "p99_ms": %f, "errors": %d, "non2xx": %d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def run_wrk(port: int, paths: list[str], token: str, seconds: float, connections: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        script, listing = Path(tmp) / "lookup.lua", Path(tmp) / "paths.txt"
        script.write_text(WRK_SCRIPT)
        listing.write_text("\n".join(paths) + "\n")
        result = subprocess.run(
            ["wrk", "-t", str(min(2, connections)), "-c", str(connections), "-d", f"{seconds:g}s", "-s", str(script),
             f"http://127.0.0.1:{port}"],
            env={**os.environ, "BENCH_PATHS": str(listing), "BENCH_TOKEN": token},
            capture_output=True, text=True, check=True)
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("{"))
    stats = json.loads(line)
    return {"rps": stats["requests"] / stats["seconds"], "p50_ms": stats["p50_ms"], "p99_ms": stats["p99_ms"],
            "requests": stats["requests"], "failed": stats["errors"] + stats["non2xx"]}


def run_python(port: int, paths: list[str], token: str, seconds: float, connections: int) -> dict[str, float]:
    """The fallback: one thread per connection; a new connection per request, as gunicorn's sync workers
    close each one."""
    from bench.common import threaded_load

    deadline = time.monotonic() + seconds

    def client(seed: int) -> tuple[list[float], int]:
        rng = random.Random(seed)
        mine: list[float] = []
        failed = 0
        while time.monotonic() < deadline:
            started = time.perf_counter()
            conn = HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", rng.choice(paths), headers={"Authorization": f"Bearer {token}"})
                answer = conn.getresponse()
                answer.read()
                ok = answer.status == 200
            except OSError:
                ok = False
            finally:
                conn.close()
            mine.append(time.perf_counter() - started)
            failed += not ok
        return mine, failed

    return threaded_load(client, connections)


def combine(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Throughput over all rounds; latency percentiles as the median round's (per-round histograms cannot
    be merged exactly), and the worst round's p99 beside them."""
    seconds = sum(r["requests"] / r["rps"] for r in rounds if r["rps"])
    middle = sorted(rounds, key=lambda r: r["p99_ms"])[len(rounds) // 2]
    requests = sum(r["requests"] for r in rounds)
    return {"rps": requests / seconds, "p50_ms": middle["p50_ms"],
            "p99_ms": middle["p99_ms"], "worst_p99_ms": max(r["p99_ms"] for r in rounds),
            "app_cpu_ms": sum(r["app_cpu_ms"] * r["requests"] for r in rounds) / max(1, requests),
            "db_cpu_ms": sum(r["db_cpu_ms"] * r["requests"] for r in rounds) / max(1, requests),
            "requests": requests, "failed": sum(r["failed"] for r in rounds)}


# --- The run --------------------------------------------------------------------------------------
def lookup_paths(n: int) -> dict[str, list[str]]:
    rng = random.Random(2026)
    rows = [rng.randrange(n) for _ in range(min(SAMPLE, n))]
    return {
        "bare Django JSON view": ["/bench/bare"],
        "lookup by handle name": ["/api/v1/lookup/handle?" + urlencode({"handle": f"hdl:{PREFIX}/{suffix_of(i).upper()}"})
                                  for i in rows],
        "lookup by asset": ["/api/v1/lookup/asset?" + urlencode({"source_system": "dams", "external_id": str(i)})
                            for i in rows],
        "reverse lookup by URL": ["/api/v1/lookup/url?" + urlencode({"url": url_of(i)}) for i in rows],
    }


def check_answers(port: int, paths: dict[str, list[str]], token: str) -> None:
    """Each kind of lookup finds its handle before it is timed."""
    for name, listing in paths.items():
        request = urllib.request.Request(f"http://127.0.0.1:{port}{listing[0]}",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            body = json.loads(answer.read())
        found = body.get("handle") or (body.get("handles") or [{}])[0].get("handle")
        if not found:
            raise SystemExit(f"{name}: no handle in the answer {body}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--handles", type=int, default=1_000_000, help="handles in the database (default 1,000,000)")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per endpoint (default 15)")
    parser.add_argument("--rounds", type=int, default=3, help="the endpoints take turns this many times (default 3)")
    parser.add_argument("--connections", type=int, default=4, help="concurrent client connections (default 4)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers (default 4, as the README)")
    parser.add_argument("--python-client", action="store_true", help="use the Python client even if wrk exists")
    parser.add_argument("--database", default=os.environ.get("HANDLES_BENCH_DB", ""),
                        help="the benchmark's database (default: HANDLES_BENCH_DB, else handles_bench[_<N>]); "
                             "people sharing a PostgreSQL server each name their own")
    args = parser.parse_args()

    database = args.database or ("handles_bench" if args.handles == 1_000_000 else f"handles_bench_{args.handles}")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.settings", "HANDLES_BENCH_DB": database,
           "HANDLES_DEV": "", "DJANGO_DEBUG": "0"}
    env.pop("DATABASE_URL", None)  # bench/settings.py names the benchmark's own database
    os.environ.clear()
    os.environ.update(env)
    ensure_database(database)

    import django
    from django.core.management import call_command

    django.setup()
    from bench.common import Figure, report

    call_command("migrate", verbosity=0)
    load(args.handles)
    token = read_token()
    paths = lookup_paths(args.handles)
    use_wrk = shutil.which("wrk") is not None and not args.python_client
    generator = run_wrk if use_wrk else run_python

    port = free_port()
    server = start_gunicorn(port, args.workers, env)
    try:
        check_answers(port, paths, token)
        for listing in paths.values():
            generator(port, listing, token, 2, args.connections)  # warm up: worker imports, caches
        # Rounds in turn, so that a change of load on the machine meets every endpoint alike.
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in paths}
        for _ in range(args.rounds):
            for name, listing in paths.items():
                rounds[name].append(measure_cpu(server.pid, partial(
                    generator, port, listing, token, args.seconds / args.rounds, args.connections)))
        results = {name: combine(measured) for name, measured in rounds.items()}
    finally:
        server.terminate()
        server.wait(timeout=30)

    bare = results["bare Django JSON view"]
    load_average = os.getloadavg()[0]
    print(f"\n{args.handles:,} handles in PostgreSQL; gunicorn {args.workers} sync workers; "
          f"{'wrk' if use_wrk else 'Python client'}, {args.connections} connections, {args.seconds:g} s each in "
          f"{args.rounds} rounds; load average {load_average:.1f} on {os.cpu_count()} CPUs\n")
    print(f"{'endpoint':<24} {'req/s':>9} {'vs bare':>8} {'p50 ms':>8} {'p99 ms':>8} {'worst p99':>10} "
          f"{'CPU ms/req: app':>16} {'+ db':>6} {'bare/this':>10} {'failed':>7}")
    bare_cpu = bare["app_cpu_ms"] + bare["db_cpu_ms"]
    for name, r in results.items():
        cpu = r["app_cpu_ms"] + r["db_cpu_ms"]
        print(f"{name:<24} {r['rps']:>9,.0f} {r['rps'] / bare['rps']:>8.2f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
              f"{r['worst_p99_ms']:>10.2f} {r['app_cpu_ms']:>16.2f} {r['db_cpu_ms']:>6.2f} {bare_cpu / cpu:>10.2f} "
              f"{r['failed']:>7}")
    print("\n(CPU ms/req: the server's own CPU per request, gunicorn workers + their PostgreSQL backends; "
          "bare/this is the throughput ratio to expect where that CPU is the limit.)")
    print()
    figures = []
    for name, r in results.items():
        if name == "bare Django JSON view":
            continue
        figures.append(Figure(f"{name}: throughput", r["rps"], "req/s", "bare Django JSON view", bare["rps"],
                              target=">= 0.4 of baseline"))
        figures.append(Figure(f"{name}: p99 latency", r["p99_ms"], "ms", "bare Django JSON view p99",
                              bare["p99_ms"], higher_is_better=False, target="< 20 ms"))
        figures.append(Figure(f"{name}: server CPU per request", r["app_cpu_ms"] + r["db_cpu_ms"], "ms",
                              "bare Django JSON view", bare_cpu, higher_is_better=False,
                              target="<= 2.5x baseline"))  # 2.5x the CPU: 40 % of the throughput, CPU-bound
    report("api_lookup", figures, notes={"handles": args.handles, "workers": args.workers,
                                         "connections": args.connections, "client": "wrk" if use_wrk else "python",
                                         "load_average": load_average, "results": results})
    failed = sum(r["failed"] for r in results.values())
    if failed:
        raise SystemExit(f"{failed} requests failed")


if __name__ == "__main__":
    main()
