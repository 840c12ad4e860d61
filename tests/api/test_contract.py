"""One contract test per endpoint: the exact keys of every answer (clients rely on them)."""

from __future__ import annotations

import pytest

from handles import services
from handles.models import Handle, HandleRequest
from tests.api.conftest import Api
from tests.factories import AssetFactory, HandleFactory

REQUEST_KEYS = {"id", "op", "full_handle", "url", "attempts", "status", "javastdout", "java_stderr", "error",
                "action", "created_at", "finished_at", "status_url"}
HANDLE_KEYS = {"handle", "prefix", "suffix", "url", "resolver_url", "file_uri", "status", "in_sync", "is_primary",
               "asset", "created_at", "updated_at"}
ASSET_KEYS = {"source_system", "external_id", "title", "url", "state", "created_at", "updated_at"}
ASSET_CHANGE_KEYS = {"asset", "handles", "requests"}


def assert_request(body: dict, **expected) -> None:
    assert set(body) == REQUEST_KEYS
    assert body["status"] in ("queued", "running", "success", "error")
    assert body["status_url"] == f"/api/v1/requests/{body['id']}"
    for key, value in expected.items():
        assert body[key] == value, key


def assert_handle(body: dict, **expected) -> None:
    assert set(body) == HANDLE_KEYS
    assert body["resolver_url"] == f"https://hdl.handle.net/{body['handle']}"
    assert body["asset"] is None or set(body["asset"]) == {"source_system", "external_id"}
    for key, value in expected.items():
        assert body[key] == value, key


@pytest.fixture
def handle(home) -> Handle:
    asset = AssetFactory(source_system="dams", external_id="4711", url="https://dams.example.edu/node/4711")
    return HandleFactory(prefix=home, suffix="x7kq2m", target_url=asset.url, asset=asset, version=2,
                         synced_version=2)


def test_create(writer: Api, home):
    response = writer.post("/handles", {"handle": "new-1", "url": "https://example.org/1"})
    assert response.status_code == 202
    body = response.json()
    assert_request(body, op="create", action="mint", full_handle="20.500.12345/new-1", url="https://example.org/1",
                   attempts=0, status="queued", javastdout="", java_stderr="", error="", finished_at=None)
    assert response["Location"] == body["status_url"]
    assert Handle.objects.get(suffix="new-1").status == "pending"


def test_get_handle(reader: Api, handle):
    response = reader.get("/handles/20.500.12345/X7KQ2M")  # case-insensitive, like the server
    assert response.status_code == 200
    assert_handle(response.json(), handle="20.500.12345/x7kq2m", prefix="20.500.12345", suffix="x7kq2m",
                  url="https://dams.example.edu/node/4711", status="active", in_sync=True, is_primary=False,
                  asset={"source_system": "dams", "external_id": "4711"},
                  file_uri="https://hdl.handle.net/20.500.12345/x7kq2m")


@pytest.mark.parametrize("method", ["post", "patch"])
def test_update(writer: Api, handle, method):
    response = getattr(writer, method)("/handles/20.500.12345/x7kq2m", {"url": "https://example.org/moved"})
    assert response.status_code == 202
    assert_request(response.json(), op="update", action="redirect", full_handle="20.500.12345/x7kq2m",
                   url="https://example.org/moved", status="queued")
    handle.refresh_from_db()
    assert handle.target_url == "https://example.org/moved"


def test_delete(writer: Api, handle):
    response = writer.delete("/handles/20.500.12345/x7kq2m")
    assert response.status_code == 202
    assert_request(response.json(), op="delete", action="delete", full_handle="20.500.12345/x7kq2m", url="")
    handle.refresh_from_db()
    assert handle.status == "deleted"


def test_request_status(reader: Api, handle):
    request = services.handle_verify(handle=handle)
    body = reader.get(f"/requests/{request.pk}").json()
    assert_request(body, id=request.pk, op="verify", full_handle="20.500.12345/x7kq2m", status="queued")


def test_list_local(reader: Api, handle):
    body = reader.get("/handles").json()
    assert set(body) == {"results", "next_cursor", "next"}
    assert [h["handle"] for h in body["results"]] == ["20.500.12345/x7kq2m"]
    assert_handle(body["results"][0])
    assert body["next_cursor"] is None and body["next"] is None


def test_publish(writer: Api, home):
    response = writer.post("/assets/publish", {"source_system": "dams", "external_id": "9001",
                                               "url": "https://dams.example.edu/node/9001", "title": "Letter"})
    assert response.status_code == 202
    body = response.json()
    assert set(body) == ASSET_CHANGE_KEYS
    assert set(body["asset"]) == ASSET_KEYS
    assert body["asset"]["state"] == "published" and body["asset"]["title"] == "Letter"
    assert len(body["handles"]) == 1
    assert_handle(body["handles"][0], status="pending", asset={"source_system": "dams", "external_id": "9001"})
    assert_request(body["requests"][0], op="create")


def test_unpublish(writer: Api, handle):
    response = writer.post("/assets/unpublish", {"source_system": "dams", "external_id": "4711"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == ASSET_CHANGE_KEYS and body["requests"] == []
    assert body["asset"]["state"] == "unpublished"
    assert_handle(body["handles"][0], status="active", url="https://dams.example.edu/node/4711")


def test_change_url(writer: Api, handle):
    response = writer.post("/assets/change-url", {"source_system": "dams", "external_id": "4711",
                                                  "url": "https://dams.example.edu/items/4711"})
    assert response.status_code == 202
    body = response.json()
    assert set(body) == ASSET_CHANGE_KEYS
    assert_handle(body["handles"][0], url="https://dams.example.edu/items/4711")
    assert_request(body["requests"][0], op="update", url="https://dams.example.edu/items/4711")


def test_delete_asset(writer: Api, handle):
    response = writer.post("/assets/delete", {"source_system": "dams", "external_id": "4711"})
    assert response.status_code == 202
    body = response.json()
    assert set(body) == ASSET_CHANGE_KEYS
    assert body["asset"]["state"] == "deleted"
    assert_handle(body["handles"][0], status="tombstoned")  # the prefix's default asset_delete_action
    assert_request(body["requests"][0], op="update", action="tombstone")


def test_lookup_asset(reader: Api, handle):
    body = reader.get("/lookup/asset", {"source_system": "dams", "external_id": "4711"}).json()
    assert set(body) == {"asset", "handles"}
    assert set(body["asset"]) == ASSET_KEYS
    assert_handle(body["handles"][0], handle="20.500.12345/x7kq2m")


@pytest.mark.parametrize("name", ["20.500.12345/X7kq2M", "hdl:20.500.12345/x7kq2m",
                                  "https://hdl.handle.net/20.500.12345/x7kq2m",
                                  "http://hdl.handle.net/20.500.12345/X7KQ2M"])
def test_lookup_handle(reader: Api, handle, name):
    response = reader.get("/lookup/handle", {"handle": name})
    assert response.status_code == 200
    assert_handle(response.json(), handle="20.500.12345/x7kq2m", status="active")


def test_lookup_url(reader: Api, handle):
    body = reader.get("/lookup/url", {"url": "https://dams.example.edu/node/4711"}).json()
    assert set(body) == {"url", "handles"}
    assert body["url"] == "https://dams.example.edu/node/4711"
    assert_handle(body["handles"][0], handle="20.500.12345/x7kq2m")


def test_iiif_metadata(reader: Api, handle):
    body = reader.get("/iiif/metadata", {"source_system": "dams", "external_id": "4711"}).json()
    assert body == {"metadata": [{"label": {"en": ["Handle"]},
                                  "value": {"none": ["https://hdl.handle.net/20.500.12345/x7kq2m"]}}]}


def test_resolve(reader: Api, prefix, run_queue, unique_suffix):
    suffix = unique_suffix("api")
    minted = run_queue(services.handle_mint, prefix=prefix, suffix=suffix, target_url="https://example.org/r")
    assert minted.status == HandleRequest.Status.SUCCESS
    body = reader.get(f"/resolve/20.500.12345/{suffix}").json()
    assert set(body) == {"handle", "server", "local", "agrees"}
    assert set(body["server"]) == {"found", "url", "values"}
    assert body["server"]["found"] is True and body["server"]["url"] == "https://example.org/r"
    assert {v["type"] for v in body["server"]["values"]} >= {"URL", "HS_ADMIN"}
    assert_handle(body["local"], status="active", in_sync=True)
    assert body["agrees"] is True


def test_list_remote(reader: Api, prefix, run_queue, unique_suffix):
    suffix = unique_suffix("remote")
    run_queue(services.handle_mint, prefix=prefix, suffix=suffix, target_url="https://example.org/l")
    body = reader.get("/prefixes/20.500.12345/remote-handles", {"page_size": 1000}).json()
    assert set(body) == {"prefix", "page", "page_size", "total", "handles", "next_page"}
    assert body["prefix"] == "20.500.12345" and body["page"] == 0 and body["page_size"] == 1000
    assert f"20.500.12345/{suffix}".upper() in body["handles"]
    assert body["total"] == len(body["handles"]) and body["next_page"] is None


def test_error_body(reader: Api, home):
    response = reader.get("/handles/20.500.12345/nope")
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "handle_not_found",
                                         "message": "There is no handle 20.500.12345/nope."}}


def test_openapi_and_docs(anonymous: Api):
    document = anonymous.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == {
        "/handles", "/handles/{prefix}/{suffix}", "/requests/{id}", "/resolve/{prefix}/{suffix}",
        "/prefixes/{prefix}/remote-handles", "/assets/publish", "/assets/unpublish", "/assets/change-url",
        "/assets/delete", "/lookup/asset", "/lookup/handle", "/lookup/url", "/iiif/metadata"}
    page = anonymous.get("/docs")
    assert page.status_code == 200 and page["Content-Type"].startswith("text/html")
    html = page.content.decode()
    assert "Create a handle" in html and "curl -H &quot;Authorization: Bearer" in html
    assert "<script src" not in html and "cdn" not in html.lower()  # offline: everything is served by us
