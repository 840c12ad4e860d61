"""The admin's handle list at 1,000,000 handles on PostgreSQL: server time and query count per request.

Loads its own database (handles_bench_admin) once with COPY: a million assets, a million handles (two
prefixes, random opaque suffixes, a few per cent tombstoned, deleted or pending) and a million requests
(a create per handle, redirects, some failures and queued work); later runs reuse it. Each page is
requested through Django's test client, in process, so the time is the server's: middleware, the admin,
the queries and the template. Baselines from the same run: the list with no search, and a bare
primary-key lookup. Target: every search under 300 ms.

    .venv/bin/python -m bench.admin_changelist                  # 1,000,000 handles
    .venv/bin/python -m bench.admin_changelist --size 100000 --repeat 5
    .venv/bin/python -m bench.admin_changelist --reload         # load the data again
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django.db.models import Model
    from django.test import Client

import argparse
import importlib
import os
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = os.environ.get("HANDLES_BENCH_ADMIN_DB", "handles_bench_admin")
ALPHABET = "23456789bcdfghjkmnpqrstvwxz"
WORDS = ("letter map photograph diary sketch plate survey campus chapel river prairie specimen drawing "
         "lecture notes minutes ledger postcard portrait album scrapbook herbarium collembola iowa grinnell "
         "college station railroad mill farm church parade snow flood harvest reunion commencement choir "
         "orchestra football debate society library museum garden greenhouse observatory telescope").split()
SOURCES = [("dams", 0.7, "https://dams.example.edu/node/{n}"),
           ("archivesspace", 0.2, "https://aspace.example.edu/repositories/2/digital_objects/{n}"),
           ("alma", 0.1, "https://grinnell.primo.exlibrisgroup.com/discovery/fulldisplay/alma99{n}/01GCL_INST:GCL")]


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "handles_project.settings")
    os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-not-secret")
    os.environ["DJANGO_ALLOWED_HOSTS"] = "testserver"
    os.environ["DJANGO_DEBUG"] = "0"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    sys.path.insert(0, str(ROOT))
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone():
            conn.execute(f"CREATE DATABASE {DB_NAME}")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def suffix_of(n: int) -> str:
    """Distinct 8-character opaque suffixes: n times a number prime to 27**8, written in the alphabet."""
    value = (n * 1_000_003 + 7_777_777) % (27 ** 8)
    chars = []
    for _ in range(8):
        value, digit = divmod(value, 27)
        chars.append(ALPHABET[digit])
    return "".join(chars)


def _rows_for(model: type[Model], rows: Iterable[dict[str, Any]]) -> Iterator[tuple[list[str], list[Any]]]:
    """Complete rows in the model's column order: fields the generator does not set take their default."""
    from django.db.models import NOT_PROVIDED

    fields = model._meta.concrete_fields
    defaults = {}
    for field in fields:
        if field.has_default():
            defaults[field.attname] = field.get_default()
        elif field.null:
            defaults[field.attname] = None
        elif field.default is NOT_PROVIDED and field.get_internal_type() in ("CharField", "TextField"):
            defaults[field.attname] = ""
    columns = [f.column for f in fields]
    attnames = [f.attname for f in fields]
    for row in rows:
        yield columns, [row[a] if a in row else defaults[a] for a in attnames]


def copy(model: type[Model], rows: Iterable[dict[str, Any]]) -> int:
    from django.db import connection

    count = 0
    columns = None
    with connection.cursor() as cursor:
        raw = cursor.cursor  # psycopg's own cursor: COPY
        for cols, values in _rows_for(model, rows):
            if columns is None:
                columns = cols
                sql = f"COPY {model._meta.db_table} ({', '.join(columns)}) FROM STDIN"
                copier = raw.copy(sql)
                stream = copier.__enter__()
            stream.write_row(values)
            count += 1
        if columns is not None:
            copier.__exit__(None, None, None)
    return count


def load(size: int) -> None:
    """COPY the data set (in one transaction), then build the search indexes and analyse."""
    from django.db import connection, transaction

    from handles import services
    from handles.models import Asset, Handle, HandleRequest, Prefix

    rng = random.Random(42)
    started = time.perf_counter()
    desk_indexes = importlib.import_module("handles.desk.migrations.0002_search_indexes").INDEXES
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE handles_handlerequest, handles_handle, handles_asset, handles_prefix CASCADE")
        for name, _, _ in desk_indexes:
            cursor.execute(f"DROP INDEX IF EXISTS {name}")
    prefixes = [services.prefix_save(prefix=Prefix(
        prefix=p, site_name=site, server_url="https://127.0.0.1:9", auth_identity=f"300:{p}/ADMIN",
        secret_env_var="HANDLE_SECRET_BENCH", tls_mode=Prefix.TLS.INSECURE, hs_admin_handle=f"{p}/ADMIN",
        is_default=(p == "20.500.14725"))) for p, site in (("20.500.14725", "Collections Portal"),
                                                            ("11084", "Digital Grinnell"))]
    base = datetime(2021, 1, 1, tzinfo=UTC)
    span = 5 * 365 * 24 * 3600

    def source_of(n: int) -> tuple[str, float, str]:
        x = (n * 7919) % 100
        return SOURCES[0] if x < 70 else SOURCES[1] if x < 90 else SOURCES[2]

    def when(n: int) -> datetime:
        return base + timedelta(seconds=(n * 2654435761) % span)

    with transaction.atomic():
        copy(Asset, ({"id": n, "source_system": source_of(n)[0], "external_id": f"node-{n}",
                      "title": " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 6))).capitalize()
                      + f", {1850 + n % 170}", "url": source_of(n)[2].format(n=n), "state": "published",
                      "created_at": when(n), "updated_at": when(n)} for n in range(1, size + 1)))
        statuses = []

        def handle(n: int) -> dict:
            roll = (n * 31) % 100
            status = ("tombstoned" if roll < 3 else "deleted" if roll < 4 else "pending" if roll < 5 else "active")
            statuses.append(status)
            suffix = suffix_of(n)
            changed = when(n) + timedelta(days=n % 90)
            synced = 0 if status == "pending" else 2 if n % 20 == 0 else 1
            version = 2 if n % 20 == 0 else 1
            if n % 500 == 0:  # not yet confirmed on the server
                synced = version - 1
            return {"id": n, "prefix_id": prefixes[0 if n % 10 else 1].pk, "suffix": suffix,
                    "suffix_key": suffix.upper(), "target_url": source_of(n)[2].format(n=n), "status": status,
                    "tombstone_reason": "Withdrawn" if status == "tombstoned" else "",
                    "tombstoned_at": changed if status == "tombstoned" else None,
                    "deleted_at": changed if status == "deleted" else None, "asset_id": n, "is_primary": True,
                    "created_at": when(n), "updated_at": changed, "version": version, "synced_version": synced,
                    "synced_at": changed if synced else None}

        copy(Handle, (handle(n) for n in range(1, size + 1)))
        prefix_of = {p.pk: p.prefix for p in prefixes}

        def requests() -> Iterator[dict[str, Any]]:
            rid = 0
            for n in range(1, size + 1):
                full = f"{prefix_of[prefixes[0 if n % 10 else 1].pk]}/{suffix_of(n)}"
                url = source_of(n)[2].format(n=n)
                rid += 1
                status = "queued" if statuses[n - 1] == "pending" and n % 2 else "success"
                yield {"id": rid, "handle_id": n, "op": "create", "action": "mint", "full_handle": full, "url": url,
                       "to_status": "active", "handle_version": 1, "status": status, "attempts": 1,
                       "max_attempts": 10, "requested_via": "import", "created_at": when(n), "updated_at": when(n),
                       "finished_at": when(n) if status == "success" else None,
                       "server_output": "PUT 201 responseCode 1\nVerified: the server resolves to " + url}
                if n % 20 == 0:
                    rid += 1
                    failed = n % 1000 == 0
                    yield {"id": rid, "handle_id": n, "op": "update", "action": "redirect", "full_handle": full,
                           "url": url, "from_url": url.replace("https://", "http://"), "to_status": "active",
                           "from_status": "active", "handle_version": 2, "attempts": 10 if failed else 1,
                           "status": "error" if failed else "success", "max_attempts": 10,
                           "error": f"Gave up after 10 attempts. Last error: Could not reach https://hs.example.edu:"
                                    f"8000/api/handles/{full}: Connection refused" if failed else "",
                           "requested_via": "admin", "created_at": when(n) + timedelta(days=1),
                           "updated_at": when(n) + timedelta(days=1), "finished_at": when(n) + timedelta(days=1)}

        copy(HandleRequest, requests())
        with connection.cursor() as cursor:
            for model in (Asset, Handle, HandleRequest):
                table = model._meta.db_table
                cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
    print(f"  loaded {size:,} assets, handles and their requests in {time.perf_counter() - started:.0f} s",
          flush=True)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '512MB'")
        for name, table, definition in desk_indexes:
            cursor.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} {definition}")
        cursor.execute("VACUUM ANALYZE handles_asset")
        cursor.execute("VACUUM ANALYZE handles_handle")
        cursor.execute("VACUUM ANALYZE handles_handlerequest")
    print(f"  built the search indexes and analysed in {time.perf_counter() - started:.0f} s", flush=True)


def measure(client: Client, url: str, repeat: int) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    response = client.get(url)  # warm: connection, templates, caches of the planner
    assert response.status_code == 200, (url, response.status_code)
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(url)
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    rows = response.content.count(b'name="_selected_action"') or response.content.count(b'<td class="mono">')
    timings.sort()
    return {"median": timings[len(timings) // 2], "p95": timings[min(len(timings) - 1, round(0.95 * (len(timings) - 1)))],
            "queries": len(queries), "sql_ms": sum(float(q["time"]) for q in queries.captured_queries) * 1000,
            "rows": rows}


def export_all(client: Client) -> None:
    """The browse page's CSV export of all handles, streamed to nowhere: rows, seconds, peak memory."""
    import resource

    from django.http import StreamingHttpResponse

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    first_byte = None
    lines = 0
    response = client.get("/browse/export.csv")
    assert isinstance(response, StreamingHttpResponse), "the export is streamed"
    for chunk in response.streaming_content:
        if first_byte is None:
            first_byte = time.perf_counter() - started
        lines += chunk.count(b"\n")
    elapsed = time.perf_counter() - started
    assert first_byte is not None, "the export sent nothing"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"\nCSV export of every handle: {lines - 1:,} rows in {elapsed:.1f} s ({(lines - 1) / elapsed:,.0f} rows/s), "
          f"first byte after {first_byte * 1000:.0f} ms, peak memory {peak / 1024:.0f} MB "
          f"({(peak - before) / 1024:.0f} MB more than before the export).")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--reload", action="store_true", help="load the data again even if it is there")
    parser.add_argument("--export", action="store_true",
                        help="also stream the CSV export of every handle (rows, time, peak memory)")
    args = parser.parse_args()
    setup_django()

    from django.contrib.auth import get_user_model
    from django.db import DEFAULT_DB_ALIAS, connections
    from django.db.backends.postgresql.base import DatabaseWrapper as PostgresConnection
    from django.test import Client

    from bench.common import Figure, report
    from handles.models import Asset, Handle

    if args.reload or Handle.objects.count() != args.size:
        print(f"Loading {args.size:,} handles into {DB_NAME} (once; later runs reuse it)...", flush=True)
        load(args.size)
    user = get_user_model().objects.filter(username="bench").first() or \
        get_user_model().objects.create_superuser("bench", "", "bench")
    client = Client()
    client.force_login(user)

    n = args.size // 2 + 17
    probe = Handle.objects.select_related("prefix", "asset").get(pk=n)
    asset = Asset.objects.get(pk=n)
    rare_word = next(w for w in asset.title.lower().split() if w.strip(",").isalpha())
    page = "/admin/handles/handle/"
    cases = [
        ("list, no search (baseline)", page),
        ("search: full handle", f"{page}?q={probe.full_handle}"),
        ("search: hdl: form, other case", f"{page}?q=hdl:{probe.prefix.prefix}/{probe.suffix.upper()}"),
        ("search: part of a suffix", f"{page}?q={probe.suffix[2:7]}"),
        ("search: URL fragment", f"{page}?q=digital_objects/{n // 10}"),
        ("search: asset id", f"{page}?q=node-{n}"),
        ("search: title words", f"{page}?q={asset.title.split(',')[0][:25].replace(' ', '+')}"),
        ("search: one common title word", f"{page}?q={rare_word}"),
        ("search: common URL text", f"{page}?q=dams.example"),
        ("search + status filter", f"{page}?q=primo&status=tombstoned"),
        ("filter: sync error", f"{page}?sync=error"),
        ("filter: sync pending", f"{page}?sync=pending"),
        ("filter: source + page 20", f"{page}?source=alma&p=20"),
        ("sorted by handle", f"{page}?o=1"),
        ("request log, search a handle", f"/admin/handles/handlerequest/?q={probe.full_handle}"),
        ("browse page (keyset), search", f"/browse/?q={probe.suffix[2:7]}"),
        ("dashboard (admin front page)", "/admin/"),
    ]
    results = []
    postgres = connections[DEFAULT_DB_ALIAS]
    assert isinstance(postgres, PostgresConnection)  # the benchmark's database is PostgreSQL
    print(f"\nHandle list at {Handle.objects.count():,} handles, PostgreSQL {postgres.pg_version // 10000}; "
          f"median of {args.repeat} requests after a warm-up (server time in process).\n", flush=True)
    for label, url in cases:
        results.append((label, url, measure(client, url, args.repeat)))
    started = time.perf_counter()
    for _ in range(args.repeat):
        Handle.objects.filter(pk=random.randint(1, args.size)).first()
    bare = (time.perf_counter() - started) * 1000 / args.repeat
    baseline = results[0][2]["median"]
    header = f"{'case':34} {'median ms':>10} {'p95 ms':>8} {'queries':>8} {'SQL ms':>8} {'rows':>5} {'× list':>7}"
    print(header)
    print("-" * len(header))
    for label, _url, r in results:
        print(f"{label:34} {r['median']:10.1f} {r['p95']:8.1f} {r['queries']:8d} {r['sql_ms']:8.1f} "
              f"{r['rows']:>5} {r['median'] / baseline:7.2f}")
    print(f"{'bare pk lookup (ORM, no page)':34} {bare:10.2f}")
    if args.export:
        export_all(client)
    searches = [r for label, _, r in results if label.startswith("search")]
    worst = max(r["median"] for r in searches)
    print(f"\nSlowest search: {worst:.0f} ms (target: under 300 ms).")
    report("admin_changelist", [
        Figure("admin handle list, slowest search (median)", worst, "ms", "same list, no search", baseline,
               higher_is_better=False, target="< 300 ms"),
        Figure("admin handle list, full-handle search", results[1][2]["median"], "ms", "same list, no search",
               baseline, higher_is_better=False, target="< 300 ms"),
    ], notes={"size": args.size, "cases": {label: r for label, _, r in results}, "bare_pk_lookup_ms": bare})
    return 0 if worst < 300 else 1


if __name__ == "__main__":
    sys.exit(main())
