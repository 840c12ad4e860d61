"""Throughput of the API's create endpoint (POST /api/v1/handles: mint and hand the request to the task
queue), against a bare Django view that inserts one row, served by the same gunicorn in the same run.

The create side does what a DAMS's call costs: token check, throttle, JSON and form validation, a random
suffix, the handle and its request in one transaction, the hand-over to the task queue after commit
(django-q2's broker: the ORM queue, or Redis with HANDLES_REDIS_URL). No worker runs, so nothing is pushed:
the push is bench/queue_push.py's. The bare view reads a JSON body and inserts one row with the ORM, in a
transaction of its own (bench/urls.py). A threaded Python client (a new connection per request, as gunicorn's sync workers close
each) posts to each in turn, in rounds. Target: at least 0.5 of the bare view's throughput.

    .venv/bin/python -m bench.api_create [--seconds 15] [--rounds 3] [--connections 4] [--workers 4]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from functools import partial
from http.client import HTTPConnection

from bench.api_lookup import free_port, measure_cpu, start_gunicorn

DB_NAME = os.environ.get("HANDLES_BENCH_CREATE_DB", "handles_bench_create")  # several runs at once: one each
PREFIX = "20.500.14725"


def recreate_database() -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")


def post_load(port: int, path: str, token: str, seconds: float, connections: int, expected: int) -> dict[str, float]:
    """POST a new URL per request from `connections` threads (a new connection per request)."""
    from bench.common import threaded_load

    deadline = time.monotonic() + seconds
    counter = itertools.count()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def client(seed: int) -> tuple[list[float], int]:
        mine: list[float] = []
        failed = 0
        while time.monotonic() < deadline:
            body = json.dumps({"url": f"https://collections.example.edu/node/{next(counter)}"})
            started = time.perf_counter()
            conn = HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request("POST", path, body=body, headers=headers)
                answer = conn.getresponse()
                answer.read()
                failed += answer.status != expected
            except OSError:
                failed += 1
            finally:
                conn.close()
            mine.append(time.perf_counter() - started)
        return mine, failed

    return threaded_load(client, connections)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per endpoint (default 15)")
    parser.add_argument("--rounds", type=int, default=3, help="the endpoints take turns this many times (default 3)")
    parser.add_argument("--connections", type=int, default=4, help="concurrent client connections (default 4)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers (default 4, as the README)")
    args = parser.parse_args()

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.settings", "HANDLES_BENCH_DB": DB_NAME,
           "HANDLES_DEV": "", "DJANGO_DEBUG": "0"}
    env.pop("DATABASE_URL", None)  # bench/settings.py names the benchmark's own database
    os.environ.clear()
    os.environ.update(env)
    recreate_database()

    import django
    from django.core.management import call_command

    django.setup()
    from django.db import connection
    from django_q.brokers import get_broker

    from bench.common import Figure, report
    from bench.urls import BareRow
    from handles import services
    from handles.api import services as api_services
    from handles.api.models import ApiToken
    from handles.models import Handle, HandleRequest, Prefix

    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {BareRow._meta.db_table} (id bigserial PRIMARY KEY, url varchar(2000) NOT NULL, "
                       "created_at timestamptz NOT NULL)")
    services.prefix_save(prefix=Prefix(
        prefix=PREFIX, site_name="Collections Portal", is_default=True, server_url="https://127.0.0.1:9",
        auth_identity=f"300:{PREFIX}/ADMIN", secret_env_var="HANDLE_SECRET_BENCH", tls_mode=Prefix.TLS.INSECURE,
        hs_admin_handle=f"{PREFIX}/ADMIN", suffix_policy=Prefix.SuffixPolicy.RANDOM))
    token = api_services.token_create(token=ApiToken(name="bench api_create", scope=ApiToken.Scope.WRITE),
                                      created_by=None)
    endpoints = {"bare view inserting one row": ("/bench/bare-insert", 201),
                 "API create (mint + enqueue)": ("/api/v1/handles", 202)}

    port = free_port()
    server = start_gunicorn(port, args.workers, env)
    try:
        for path, expected in endpoints.values():  # warm up: worker imports, connections
            post_load(port, path, token, 2, args.connections, expected)
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in endpoints}
        for _ in range(args.rounds):
            for name, (path, expected) in endpoints.items():
                rounds[name].append(measure_cpu(server.pid, partial(
                    post_load, port, path, token, args.seconds / args.rounds, args.connections, expected)))
    finally:
        server.terminate()
        server.wait(timeout=30)

    results = {}
    for name, measured in rounds.items():
        requests = sum(r["requests"] for r in measured)
        seconds = sum(r["requests"] / r["rps"] for r in measured if r["rps"])
        results[name] = {"rps": requests / seconds, "requests": requests, "failed": sum(r["failed"] for r in measured),
                         "p50_ms": sorted(r["p50_ms"] for r in measured)[len(measured) // 2],
                         "p99_ms": sorted(r["p99_ms"] for r in measured)[len(measured) // 2],
                         "app_cpu_ms": sum(r["app_cpu_ms"] * r["requests"] for r in measured) / max(1, requests),
                         "db_cpu_ms": sum(r["db_cpu_ms"] * r["requests"] for r in measured) / max(1, requests)}
    # Every create answered 202 left its handle, its request, and the request's task in the broker.
    handles = Handle.objects.count()
    handed_over = HandleRequest.objects.filter(enqueued_at__isnull=False).count()
    queued_tasks = get_broker().queue_size()
    load_average = os.getloadavg()[0]
    print(f"\ngunicorn {args.workers} sync workers; Python client, {args.connections} connections, "
          f"{args.seconds:g} s each in {args.rounds} rounds; load average {load_average:.1f} on {os.cpu_count()} CPUs")
    print(f"{'endpoint':<30} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/req: app':>16} {'+ db':>6} {'failed':>7}")
    for name, r in results.items():
        print(f"{name:<30} {r['rps']:>8,.1f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['app_cpu_ms']:>16.2f} "
              f"{r['db_cpu_ms']:>6.2f} {r['failed']:>7}")
    print(f"handles recorded {handles:,}; requests handed to the queue {handed_over:,}; tasks in the broker "
          f"{queued_tasks:,}")
    bare, create = results["bare view inserting one row"], results["API create (mint + enqueue)"]
    report("api_create", [Figure("API create (mint + enqueue): throughput", create["rps"], "req/s",
                                 "bare Django view inserting one row", bare["rps"], target=">= 0.5 of baseline")],
           notes={"workers": args.workers, "connections": args.connections, "load_average": load_average,
                  "results": results, "handles": handles, "handed_over": handed_over, "tasks": queued_tasks})
    failed = sum(r["failed"] for r in results.values())
    if failed or not handles == handed_over == queued_tasks:
        raise SystemExit(f"{failed} requests failed; {handles} handles, {handed_over} handed over, {queued_tasks} "
                         "tasks: every create must leave one of each")


if __name__ == "__main__":
    main()
