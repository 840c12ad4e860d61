"""The ArchivesSpace lookups' queries (handles.api.queries): one constant SQL statement each, run through
Django's cursor, on PostgreSQL on the "lookups" connection that binds values server-side and prepares each
statement once per connection. They must answer what the equivalent QuerySets answer, be seen by Django
like any query, and keep working after the database dropped their connection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.db import DatabaseError, DataError, connection, connections
from django.test.utils import CaptureQueriesContext

from handles.api import queries
from handles.api.representations import handle_json
from handles.models import Asset, Handle, Prefix
from tests.api.conftest import Api, issue_token
from tests.factories import AssetFactory, HandleFactory

ROOT = Path(__file__).resolve().parents[2]
BOTH_CONNECTIONS = ["default", queries.LOOKUPS_DB]
on_lookups_connection = pytest.mark.django_db(transaction=True, databases=BOTH_CONNECTIONS)


def seed(home: Prefix, other: Prefix) -> None:
    """Three assets, each with a handle under each prefix (the other prefix's is the primary one), and a
    handle without an asset."""
    for n in range(3):
        asset = AssetFactory(source_system="dams", external_id=f"n{n}", url=f"https://dams.example.edu/{n}")
        HandleFactory(prefix=home, suffix=f"Mixed-{n}", target_url=asset.url, asset=asset)
        HandleFactory(prefix=other, suffix=f"geo-{n}", target_url=asset.url, asset=asset, is_primary=True)
    HandleFactory(prefix=home, suffix="Loose", target_url="https://dams.example.edu/loose", asset=None)


def assert_lookups_answer_what_their_querysets_answer(home: Prefix, other: Prefix) -> None:
    for n in range(3):
        asset = Asset.objects.get(external_id=f"n{n}")
        expected = [handle_json(h) for h in queries.handles_of_asset(asset, None)]
        assert len(expected) == 2
        assert [handle_json(h) for h in queries.lookup_of_asset("dams", f"n{n}", None)] == expected
        assert [handle_json(h) for h in queries.lookup_with_url(asset.url, None)] == expected
        assert handle_json(queries.lookup_by_name("20.500.12345", f"MIXED-{n}")) == handle_json(
            queries.handle_named("20.500.12345", f"mixed-{n}"))
    loose = queries.lookup_by_name("20.500.12345", "loose")
    assert handle_json(loose) == handle_json(queries.handle_named("20.500.12345", "Loose"))
    assert loose.asset is None and handle_json(loose)["asset"] is None
    assert [h.full_handle for h in queries.lookup_of_asset("dams", "n1", {other.pk})] == ["20.500.99999/geo-1"]
    assert [h.full_handle for h in queries.lookup_with_url("https://dams.example.edu/1", {home.pk})] == [
        "20.500.12345/Mixed-1"]
    assert queries.lookup_by_name("20.500.12345", "nope") is None
    assert queries.lookup_by_name("20.500.77777", "Mixed-1") is None
    assert queries.lookup_of_asset("dams", "nope", None) == []
    assert queries.lookup_with_url("https://nowhere.example.org/", None) == []


def test_in_a_transaction_the_lookups_answer_what_their_querysets_answer(home, other_prefix):
    """Inside atomic() (here: the test's transaction) a lookup runs on the default connection, within it."""
    seed(home, other_prefix)
    assert queries.lookup_database() is connections["default"]
    assert_lookups_answer_what_their_querysets_answer(home, other_prefix)


@on_lookups_connection
def test_on_their_own_connection_the_lookups_answer_what_their_querysets_answer(home, other_prefix):
    seed(home, other_prefix)
    assert queries.lookup_database() is connections[queries.LOOKUPS_DB]
    assert_lookups_answer_what_their_querysets_answer(home, other_prefix)


LOOKUPS = {
    "by name": (lambda: queries.lookup_by_name("20.500.12345", "mixed-1"), queries.BY_NAME_SQL, "'MIXED-1'"),
    "of asset": (lambda: queries.lookup_of_asset("dams", "n1", None), queries.OF_ASSET_SQL, "'n1'"),
    "with URL": (lambda: queries.lookup_with_url("https://dams.example.edu/1", None), queries.WITH_URL_SQL,
                 "'https://dams.example.edu/1'"),
}


@on_lookups_connection
@pytest.mark.parametrize("kind", LOOKUPS)
def test_each_lookup_is_one_query_that_django_sees(home, other_prefix, kind):
    """CaptureQueriesContext (and so the debug toolbar, Sentry and OpenTelemetry's Django instrumentation,
    which hook the same cursor) sees each lookup's one query with its values; the default connection is
    not touched, not even for a health check."""
    seed(home, other_prefix)
    run, sql, value = LOOKUPS[kind]
    with CaptureQueriesContext(connections[queries.LOOKUPS_DB]) as lookups, \
            CaptureQueriesContext(connection) as default:
        assert run()
    assert len(lookups.captured_queries) == 1
    assert len(default.captured_queries) == 0
    shown = lookups.captured_queries[0]["sql"]
    assert shown.startswith(sql.split("%s")[0]) and value in shown


@pytest.mark.parametrize("kind", LOOKUPS)
def test_in_a_transaction_each_lookup_is_one_query_on_the_default_connection(home, other_prefix, kind):
    seed(home, other_prefix)
    run, sql, value = LOOKUPS[kind]
    with CaptureQueriesContext(connection) as default:
        assert run()
    assert len(default.captured_queries) == 1
    assert value in default.captured_queries[0]["sql"]


@on_lookups_connection
def test_a_lookup_request_makes_one_query(client, home, other_prefix):
    """Through the API, once the token is remembered: each lookup request is its one query."""
    seed(home, other_prefix)
    api = Api(client, issue_token("read"))
    assert api.get("/lookup/handle", {"handle": "20.500.12345/mixed-0"}).status_code == 200  # remembers the token
    for path, params in (("/lookup/handle", {"handle": "hdl:20.500.12345/MIXED-1"}),
                         ("/lookup/asset", {"source_system": "dams", "external_id": "n1"}),
                         ("/lookup/url", {"url": "https://dams.example.edu/1"})):
        with CaptureQueriesContext(connections[queries.LOOKUPS_DB]) as lookups, \
                CaptureQueriesContext(connection) as default:
            response = api.get(path, params)
        assert response.status_code == 200, response.content
        assert (len(lookups.captured_queries), len(default.captured_queries)) == (1, 0), path


@on_lookups_connection
def test_each_statement_is_prepared_once_per_connection_and_planned_generically(home, other_prefix):
    """psycopg prepares each lookup's statement at its first run on the connection; later runs with other
    values reuse it, and after PostgreSQL's first few custom plans it keeps one generic plan: no planning
    per request."""
    seed(home, other_prefix)
    runs = 12
    for n in range(runs):
        queries.lookup_by_name("20.500.12345", f"mixed-{n % 3}")
        queries.lookup_of_asset("dams", f"n{n % 4}", None)
        queries.lookup_with_url(f"https://dams.example.edu/{n}", None)
    with connections[queries.LOOKUPS_DB].cursor() as cursor:
        cursor.execute("SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements "
                       "WHERE statement LIKE %s", ["%FROM handles_handle h%"])
        prepared = {statement: (generic, custom) for statement, generic, custom in cursor.fetchall()}
    assert len(prepared) == 3
    for sql in (queries.BY_NAME_SQL, queries.OF_ASSET_SQL, queries.WITH_URL_SQL):
        generic, custom = prepared[numbered_placeholders(sql)]
        assert generic + custom == runs
        assert generic >= runs - 5


def numbered_placeholders(sql: str) -> str:
    """The statement as PostgreSQL keeps it: psycopg sends %s as $1, $2 ..."""
    parts = sql.split("%s")
    return parts[0] + "".join(f"${n}{part}" for n, part in enumerate(parts[1:], start=1))


def test_only_the_lookups_connection_binds_server_side_and_prepares():
    """The rest of the app keeps Django's client-side binding and no prepared statements."""
    lookups = settings.DATABASES[queries.LOOKUPS_DB]
    default = settings.DATABASES["default"]
    assert lookups["NAME"] == default["NAME"] and lookups["HOST"] == default["HOST"]
    assert lookups["OPTIONS"]["server_side_binding"] is True
    assert lookups["OPTIONS"]["prepare_threshold"] == 0
    assert lookups["CONN_HEALTH_CHECKS"] is False and lookups["TEST"]["MIRROR"] == "default"
    assert not default.get("OPTIONS", {}).get("server_side_binding")
    assert "prepare_threshold" not in default.get("OPTIONS", {})


def settings_of_lookups(**environment: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "HANDLES_", "DATABASE_URL"))}
    env.update({"DJANGO_SETTINGS_MODULE": "handles_project.settings", "HANDLES_DEV": "1", **environment})
    code = "import json; from django.conf import settings; print(json.dumps(settings.DATABASES.get('lookups')))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60, check=True)
    return json.loads(result.stdout)


def test_prepared_lookups_can_be_turned_off_and_sqlite_has_no_lookups_connection(tmp_path):
    postgres = "postgres://postgres@127.0.0.1:5432/handles"
    assert settings_of_lookups(DATABASE_URL=postgres)["OPTIONS"]["prepare_threshold"] == 0
    off = settings_of_lookups(DATABASE_URL=postgres, HANDLES_API_PREPARED_LOOKUPS="0")["OPTIONS"]
    assert off["prepare_threshold"] is None and off["server_side_binding"] is True  # unnamed statements
    assert settings_of_lookups(HANDLES_VAR_DIR=str(tmp_path)) is None


@on_lookups_connection
def test_a_lookup_survives_a_connection_that_died_between_requests(home):
    """The lookups' connection has no per-request health check: a read on a dead connection (the database
    restarted) is tried again once, on a new connection."""
    HandleFactory(prefix=home, suffix="alive")
    lookups = connections[queries.LOOKUPS_DB]
    assert queries.lookup_by_name("20.500.12345", "alive") is not None
    lookups.connection.close()  # behind Django's back, as a server restart would
    assert queries.lookup_by_name("20.500.12345", "ALIVE").suffix == "alive"


@on_lookups_connection
def test_a_lookup_survives_a_backend_the_server_ended(home):
    """As a database restart does: the server ends our backend; the next lookup reconnects once."""
    HandleFactory(prefix=home, suffix="alive")
    lookups = connections[queries.LOOKUPS_DB]
    assert queries.lookup_by_name("20.500.12345", "alive") is not None
    backend = lookups.connection.info.backend_pid
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [backend])
    assert queries.lookup_by_name("20.500.12345", "ALIVE").suffix == "alive"
    assert lookups.connection.info.backend_pid != backend


@on_lookups_connection
def test_a_failing_statement_is_a_django_error_and_not_tried_again(home, monkeypatch):
    """A statement that fails on a sound connection is a Django DatabaseError (as through the ORM), not a
    lost connection: it is run once, and the connection stays."""
    lookups = connections[queries.LOOKUPS_DB]
    assert queries.lookup_by_name("20.500.12345", "nope") is None
    backend = lookups.connection.info.backend_pid
    monkeypatch.setattr(queries, "BY_NAME_SQL", queries.BY_NAME_SQL.replace("LIMIT 1", "AND 1 / 0 = 1 LIMIT 1"))
    HandleFactory(prefix=home, suffix="there")
    with CaptureQueriesContext(lookups) as captured, pytest.raises(DatabaseError, match="division by zero"):
        queries.lookup_by_name("20.500.12345", "there")
    assert len(captured.captured_queries) == 1
    monkeypatch.undo()
    assert queries.lookup_by_name("20.500.12345", "there").suffix == "there"
    assert lookups.connection.info.backend_pid == backend


def test_in_a_transaction_a_lookup_reads_within_it(home):
    """Inside atomic() (here: the test's transaction) the lookup runs in that transaction, so it sees what
    the transaction wrote and does not commit anything by itself."""
    HandleFactory(prefix=home, suffix="uncommitted")
    assert connection.in_atomic_block
    assert queries.lookup_by_name("20.500.12345", "UNCOMMITTED").suffix == "uncommitted"
    assert connection.connection.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS


@on_lookups_connection
def test_a_lookup_value_with_nul_never_reaches_the_server(home):
    """PostgreSQL text cannot hold NUL: psycopg refuses the value before sending it (the API's forms refuse
    it earlier, with a 400)."""
    with pytest.raises(DataError, match="NUL"):
        queries.lookup_by_name("20.500.12345", "a\x00b")
    assert queries.lookup_by_name("20.500.12345", "nope") is None  # the connection still answers


SQLITE_SCRIPT = r'''
import json
import django
django.setup()
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

call_command("migrate", verbosity=0)
from handles.api import queries
from handles.api.representations import handle_json
from handles.models import Asset
from tests.factories import AssetFactory, HandleFactory, PrefixFactory

home = PrefixFactory(prefix="20.500.12345")
other = PrefixFactory(prefix="20.500.99999", hs_admin_handle="20.500.99999/ADMIN")
asset = AssetFactory(source_system="dams", external_id="9", url="https://dams.example.edu/9")
HandleFactory(prefix=home, suffix="Dev", target_url=asset.url, asset=asset)
HandleFactory(prefix=other, suffix="geo", target_url=asset.url, asset=asset, is_primary=True)
HandleFactory(prefix=home, suffix="Loose", target_url="https://dams.example.edu/loose", asset=None)
expected = [handle_json(h) for h in queries.handles_of_asset(Asset.objects.get(), None)]
with CaptureQueriesContext(connection) as captured:
    out = {
        "vendor": connection.vendor,
        "aliases": sorted(__import__("django.conf").conf.settings.DATABASES),
        "by name": handle_json(queries.lookup_by_name("20.500.12345", "dev")),
        "expected by name": handle_json(queries.handle_named("20.500.12345", "Dev")),
        "loose": handle_json(queries.lookup_by_name("20.500.12345", "LOOSE")),
        "expected loose": handle_json(queries.handle_named("20.500.12345", "Loose")),
        "of asset": [handle_json(h) for h in queries.lookup_of_asset("dams", "9", None)],
        "of asset, other prefix": [h.full_handle for h in queries.lookup_of_asset("dams", "9", {other.pk})],
        "with URL": [handle_json(h) for h in queries.lookup_with_url(asset.url, None)],
        "expected": expected,
        "missing": [queries.lookup_by_name("20.500.12345", "nope"), queries.lookup_of_asset("dams", "x", None)],
    }
out["queries"] = len(captured.captured_queries)
print(json.dumps(out))
'''


def test_the_lookups_answer_the_same_on_sqlite(tmp_path):
    """`make run`'s embedded SQLite, in a process of its own: the same SQL runs there, and answers what the
    QuerySets answer (timestamps aware, booleans as booleans)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "HANDLES_", "DATABASE_URL"))}
    env.update({"DJANGO_SETTINGS_MODULE": "handles_project.settings", "HANDLES_DEV": "1",
                "HANDLES_VAR_DIR": str(tmp_path)})
    done = subprocess.run([sys.executable, "-c", SQLITE_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["vendor"] == "sqlite" and out["aliases"] == ["default"]
    assert out["by name"] == out["expected by name"] and out["by name"]["handle"] == "20.500.12345/Dev"
    assert out["by name"]["created_at"].endswith("+00:00") and out["by name"]["is_primary"] is False
    assert out["loose"] == out["expected loose"] and out["loose"]["asset"] is None
    assert len(out["expected"]) == 2 and out["expected"][0]["handle"] == "20.500.99999/geo"
    assert out["of asset"] == out["expected"] and out["with URL"] == out["expected"]
    assert out["of asset, other prefix"] == ["20.500.99999/geo"]
    assert out["missing"] == [None, []]
    # Seven lookups, one query each; the two handle_named QuerySets are the other two.
    assert out["queries"] == 9


def test_a_queryset_and_a_lookup_agree_on_a_deleted_handle(home):
    """Status is part of the answer: a lookup finds deleted and tombstoned handles too, as the QuerySets do."""
    HandleFactory(prefix=home, suffix="gone", status=Handle.Status.DELETED)
    assert queries.lookup_by_name("20.500.12345", "gone").status == "deleted"
    assert queries.handle_named("20.500.12345", "gone").status == "deleted"
