"""Local listing (keyset paging, filters) and the ArchivesSpace / IIIF lookups."""

from __future__ import annotations

import random
from datetime import timedelta

import psycopg
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connection
from django.utils import timezone

from handles.api import queries
from handles.api.representations import handle_json
from handles.models import Asset, Handle
from tests.api.conftest import Api
from tests.factories import AssetFactory, HandleFactory, PrefixFactory


def names(body: dict, key: str = "results") -> list[str]:
    return [h["handle"] for h in body[key]]


def test_paging_walks_every_handle_once_in_a_stable_order(reader: Api, home):
    made = [HandleFactory(prefix=home, suffix=f"p{i}") for i in range(7)]
    seen, params, pages = [], {"limit": 3}, 0
    while True:
        body = reader.get("/handles", params).json()
        seen += names(body)
        pages += 1
        if body["next_cursor"] is None:
            break
        params = {"limit": 3, "cursor": body["next_cursor"]}
        assert body["next"] == f"/api/v1/handles?limit=3&cursor={body['next_cursor']}"
    assert pages == 3
    assert seen == [h.full_handle for h in made]


def test_a_handle_added_while_paging_does_not_shift_the_pages(reader: Api, home):
    for i in range(4):
        HandleFactory(prefix=home, suffix=f"p{i}")
    first = reader.get("/handles", {"limit": 2}).json()
    HandleFactory(prefix=home, suffix="late")
    rest = reader.get("/handles", {"limit": 10, "cursor": first["next_cursor"]}).json()
    assert names(first) + names(rest) == [f"20.500.12345/{s}" for s in ("p0", "p1", "p2", "p3", "late")]


def test_filters(reader: Api, home, other_prefix):
    dams = AssetFactory(source_system="dams", external_id="1")
    ils = AssetFactory(source_system="alma", external_id="1")
    HandleFactory(prefix=home, suffix="a", asset=dams)
    HandleFactory(prefix=home, suffix="b", asset=ils, status=Handle.Status.TOMBSTONED)
    HandleFactory(prefix=other_prefix, suffix="c", asset=dams)
    assert names(reader.get("/handles", {"prefix": "20.500.99999"}).json()) == ["20.500.99999/c"]
    assert names(reader.get("/handles", {"status": "tombstoned"}).json()) == ["20.500.12345/b"]
    assert names(reader.get("/handles", {"source_system": "dams"}).json()) == ["20.500.12345/a", "20.500.99999/c"]
    assert names(reader.get("/handles", {"source_system": "alma", "external_id": "1"}).json()) == ["20.500.12345/b"]
    assert names(reader.get("/handles", {"prefix": "20.500.12345", "source_system": "dams"}).json()) == [
        "20.500.12345/a"]


def test_changed_since_lists_by_change_time(reader: Api, home):
    now = timezone.now()
    for suffix, age in (("old", 10), ("newer", 2), ("newest", 1), ("middle", 5)):
        handle = HandleFactory(prefix=home, suffix=suffix)
        Handle.objects.filter(pk=handle.pk).update(updated_at=now - timedelta(days=age))
    since = (now - timedelta(days=6)).isoformat()
    first = reader.get("/handles", {"changed_since": since, "limit": 2}).json()
    rest = reader.get("/handles", {"changed_since": since, "cursor": first["next_cursor"]}).json()
    assert names(first) + names(rest) == ["20.500.12345/middle", "20.500.12345/newer", "20.500.12345/newest"]
    assert rest["next_cursor"] is None


def test_a_resolver_url_too_long_for_archivesspace_has_no_file_uri(reader: Api, home):
    long_suffix = "x" * 240
    HandleFactory(prefix=home, suffix=long_suffix)
    body = reader.get("/lookup/handle", {"handle": f"20.500.12345/{long_suffix}"}).json()
    assert body["resolver_url"] == f"https://hdl.handle.net/20.500.12345/{long_suffix}"
    assert len(body["resolver_url"]) > 255 and body["file_uri"] is None


def test_the_resolver_base_is_a_setting(reader: Api, home, settings):
    settings.HANDLES_RESOLVER_BASE_URL = "https://hdl.example.edu"
    HandleFactory(prefix=home, suffix="a")
    assert reader.get("/lookup/handle", {"handle": "20.500.12345/a"}).json()["file_uri"] == (
        "https://hdl.example.edu/20.500.12345/a")


def test_asset_handles_come_primary_first_then_live(reader: Api, home, other_prefix):
    asset = AssetFactory(source_system="dams", external_id="9")
    HandleFactory(prefix=home, suffix="gone", asset=asset, status=Handle.Status.DELETED)
    HandleFactory(prefix=home, suffix="live", asset=asset)
    HandleFactory(prefix=other_prefix, suffix="cite-me", asset=asset, is_primary=True)
    body = reader.get("/lookup/asset", {"source_system": "dams", "external_id": "9"}).json()
    assert names(body, "handles") == ["20.500.99999/cite-me", "20.500.12345/live", "20.500.12345/gone"]
    assert [h["status"] for h in body["handles"]] == ["active", "active", "deleted"]


def test_reverse_lookup_by_url(reader: Api, home):
    url = "https://dams.example.edu/node/1?view=full&lang=fr#top"
    HandleFactory(prefix=home, suffix="a", target_url=url)
    HandleFactory(prefix=home, suffix="b", target_url=url + "x")
    assert names(reader.get("/lookup/url", {"url": url}).json(), "handles") == ["20.500.12345/a"]
    assert reader.get("/lookup/url", {"url": "https://nowhere.example.org/"}).json()["handles"] == []


def test_reverse_lookup_of_a_long_non_ascii_url(reader: Api, home):
    """2000 random CJK characters are 6 kB that do not compress: a btree refuses such a row ("index row size
    exceeds btree maximum 2704"), the hash index takes it."""
    rng = random.Random(7)
    url = "https://example.org/" + "".join(chr(rng.randrange(0x4E00, 0x9FFF)) for _ in range(1980))
    HandleFactory(prefix=home, suffix="long", target_url=url)
    assert names(reader.get("/lookup/url", {"url": url}).json(), "handles") == ["20.500.12345/long"]


def test_iiif_lists_live_handles_only(reader: Api, home):
    asset = AssetFactory(source_system="dams", external_id="9")
    HandleFactory(prefix=home, suffix="a", asset=asset, is_primary=True)
    HandleFactory(prefix=home, suffix="b", asset=asset, status=Handle.Status.PENDING)
    HandleFactory(prefix=home, suffix="t", asset=asset, status=Handle.Status.TOMBSTONED)
    HandleFactory(prefix=home, suffix="d", asset=asset, status=Handle.Status.DELETED)
    body = reader.get("/iiif/metadata", {"source_system": "dams", "external_id": "9"}).json()
    assert [entry["value"]["none"][0] for entry in body["metadata"]] == [
        "https://hdl.handle.net/20.500.12345/a", "https://hdl.handle.net/20.500.12345/b"]
    assert all(entry["label"] == {"en": ["Handle"]} for entry in body["metadata"])


@pytest.mark.parametrize("prepared", [True, False])
def test_compiled_lookups_answer_what_their_querysets_answer(home, other_prefix, settings, prepared):
    """The ArchivesSpace lookups run SQL compiled once (and prepared, unless turned off); the same
    QuerySets through the ORM must give the same handles, for every value."""
    settings.HANDLES_API_PREPARED_LOOKUPS = prepared
    for n in range(3):
        asset = AssetFactory(source_system="dams", external_id=f"n{n}", url=f"https://dams.example.edu/{n}")
        HandleFactory(prefix=home, suffix=f"Mixed-{n}", target_url=asset.url, asset=asset)
        HandleFactory(prefix=other_prefix, suffix=f"geo-{n}", target_url=asset.url, asset=asset, is_primary=True)
    for n in range(3):
        asset = Asset.objects.get(external_id=f"n{n}")
        expected = [handle_json(h) for h in queries.handles_of_asset(asset, None)]
        assert [handle_json(h) for h in queries.lookup_of_asset("dams", f"n{n}", None)] == expected
        assert [handle_json(h) for h in queries.lookup_with_url(asset.url, None)] == expected
        assert handle_json(queries.lookup_by_name("20.500.12345", f"MIXED-{n}")) == handle_json(
            Handle.objects.select_related("prefix", "asset").get(suffix=f"Mixed-{n}"))
    assert [h.full_handle for h in queries.lookup_of_asset("dams", "n1", {other_prefix.pk})] == ["20.500.99999/geo-1"]
    assert queries.lookup_by_name("20.500.12345", "nope") is None


def test_without_postgresql_the_lookups_run_their_querysets(home, monkeypatch):
    """SQLite in development has no prepared statements: the same QuerySets run through the ORM."""
    asset = AssetFactory(source_system="dams", external_id="9", url="https://dams.example.edu/9")
    HandleFactory(prefix=home, suffix="Dev", target_url=asset.url, asset=asset)
    monkeypatch.setattr(connection, "vendor", "sqlite")
    assert queries.lookup_by_name("20.500.12345", "dev").full_handle == "20.500.12345/Dev"
    assert [h.suffix for h in queries.lookup_of_asset("dams", "9", None)] == ["Dev"]
    assert [h.suffix for h in queries.lookup_with_url(asset.url, None)] == ["Dev"]


def test_a_compiled_lookup_refuses_a_queryset_that_changes_its_values(db):
    folding = queries.CompiledLookup(lambda prefix, suffix: Handle.objects.by_name(prefix, suffix))
    with pytest.raises(ImproperlyConfigured):
        folding.rows("20.500.12345", "abc")


@pytest.mark.django_db(transaction=True)
def test_a_lookup_survives_a_connection_that_died_between_requests():
    """The compiled lookups skip Django's per-request health check: a read on a dead connection (the
    database restarted) is tried again once, on a new connection."""
    prefix = PrefixFactory(prefix="20.500.12345", server_url="https://127.0.0.1:9")
    HandleFactory(prefix=prefix, suffix="alive")
    assert queries.lookup_by_name("20.500.12345", "alive") is not None
    connection.connection.close()  # behind Django's back, as a server restart would
    assert queries.lookup_by_name("20.500.12345", "ALIVE").suffix == "alive"


@pytest.mark.django_db(transaction=True)
def test_a_lookup_survives_a_backend_the_server_ended():
    """As a database restart does: the server ends our backend; the next lookup reconnects once."""
    prefix = PrefixFactory(prefix="20.500.12345", server_url="https://127.0.0.1:9")
    HandleFactory(prefix=prefix, suffix="alive")
    assert queries.lookup_by_name("20.500.12345", "alive") is not None
    backend = connection.connection.info.backend_pid
    with psycopg.connect(connection.connection.info.dsn, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [backend])
    assert queries.lookup_by_name("20.500.12345", "ALIVE").suffix == "alive"
    assert connection.connection.info.backend_pid != backend


@pytest.mark.django_db(transaction=True)
def test_a_compiled_lookup_reports_sql_errors_as_django_errors():
    """A failing statement is a Django DatabaseError (as through the ORM), not a lost connection."""
    broken = queries.CompiledLookup(lambda value: Handle.objects.extra(where=["1/0 = 1"]).filter(suffix=value)
                                    .values_list("pk"))
    backend = connection.connection.info.backend_pid if connection.connection else None
    with pytest.raises(DatabaseError, match="division by zero"):
        broken.rows("x")
    assert queries.lookup_by_name("20.500.12345", "nope") is None  # the same connection still answers
    assert backend is None or connection.connection.info.backend_pid == backend


def test_in_a_transaction_a_lookup_reads_within_it(home):
    """Inside atomic() (here: the test's transaction) the lookup runs in that transaction, so it sees
    what the transaction wrote and does not commit anything by itself."""
    HandleFactory(prefix=home, suffix="uncommitted")
    assert connection.in_atomic_block
    assert queries.lookup_by_name("20.500.12345", "UNCOMMITTED").suffix == "uncommitted"
    assert connection.connection.pgconn.transaction_status == psycopg.pq.TransactionStatus.INTRANS


def test_a_lookup_value_with_nul_never_reaches_the_server(db):
    with pytest.raises(ValueError, match="NUL"):
        queries.lookup_by_name("20.500.12345", "a\x00b")
