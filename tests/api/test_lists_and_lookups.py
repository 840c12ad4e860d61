"""Local listing (keyset paging, filters) and the ArchivesSpace / IIIF lookups."""

from __future__ import annotations

import random
from datetime import timedelta

from django.utils import timezone

from handles.models import Handle
from tests.api.conftest import Api
from tests.factories import AssetFactory, HandleFactory


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
