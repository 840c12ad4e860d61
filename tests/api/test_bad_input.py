"""Bad input gets a 4xx with a stable code, never a 500 and never a half-applied change."""

from __future__ import annotations

import pytest

from handles import services
from handles.models import Asset, Handle, HandleRequest
from tests.api.conftest import ROOT, Api
from tests.factories import HandleFactory


def error(response) -> tuple[int, str]:
    assert response["Content-Type"] == "application/json"
    return response.status_code, response.json()["error"]["code"]


@pytest.mark.parametrize(("body", "expected"), [
    (b"{not json", (400, "malformed_json")),
    (b"[1, 2]", (400, "invalid_body")),
    (b'"just a string"', (400, "invalid_body")),
    (b"", (400, "missing_body")),
    (b"\xff\xfe{}", (400, "malformed_json")),
    (b"[" * 50_000 + b"]" * 50_000, (413, "body_too_large")),
    (b'{"a":' * 5_000 + b"1" + b"}" * 5_000, (400, "malformed_json")),
    (b'{"url": 123}', (400, "invalid_type")),
    (b'{"url": ["https://example.org"]}', (400, "invalid_type")),
    (b'{"url": "https://example.org/1", "handle": {"a": 1}}', (400, "invalid_type")),
    (b'{"url": "https://example.org/1", "handle": true}', (400, "invalid_type")),
    (b'{"url": null}', (400, "required")),
    (b'{"URL": "https://example.org/1"}', (400, "unknown_field")),
    (b'{"url": "javascript:alert(1)"}', (400, "invalid_url")),
    (b'{"url": "ftp://example.org/file"}', (400, "invalid_url")),
    (b'{"url": "/relative/path"}', (400, "invalid_url")),
    (b'{"url": "https://user:pw@example.org/"}', (400, "invalid_url")),
    (b'{"url": "https://example.org/a b"}', (400, "invalid_url")),
    (b'{"url": "https://example.org:99999/"}', (400, "invalid_url")),
    (b'{"url": "https://example.org/\\ud800"}', (400, "invalid_text")),
    (b'{"url": "https://example.org/' + b"x" * 2000 + b'"}', (400, "url_too_long")),
    (b'{"url": "https://example.org/1", "handle": "a\\u0000b"}', (400, "invalid_suffix")),
    (b'{"url": "https://example.org/1", "handle": " padded"}', (400, "invalid_suffix")),
    (b'{"url": "https://example.org/1", "handle": "a/../b"}', (400, "invalid_suffix")),
    (b'{"url": "https://example.org/1", "handle": "' + b"x" * 256 + b'"}', (400, "suffix_too_long")),
    (b'{"url": "https://example.org/1", "handle": "hdl:20.500.12345/x"}', (400, "invalid_suffix")),
    (b'{"url": "https://example.org/1", "handle": "20.500.12345/x"}', (400, "invalid_suffix")),
    (b'{"url": "https://example.org/1", "prefix": "20.500.404"}', (400, "unknown_prefix")),
    (b'{"url": "https://example.org/1", "prefix": "not a prefix"}', (400, "invalid_prefix")),
    (b'{"url": "https://example.org/1", "prefix": "0.NA/20.500.12345"}', (400, "invalid_prefix")),
])
def test_create_with_bad_bodies(writer: Api, home, body, expected):
    assert error(writer.post("/handles", body)) == expected
    assert not Handle.objects.exists() and not HandleRequest.objects.exists()


def test_a_body_that_is_not_json(writer: Api, home):
    response = writer.client.post(f"{ROOT}/handles", "url=https://example.org", content_type="text/plain",
                                  headers=writer.headers)
    assert error(response) == (415, "unsupported_media_type")


def test_an_oversize_body(writer: Api, home, settings):
    settings.HANDLES_API_MAX_BODY_BYTES = 1000
    assert error(writer.post("/handles", {"url": "https://example.org/" + "x" * 1000})) == (413, "body_too_large")


def test_create_without_any_default_prefix(writer: Api, db):
    assert error(writer.post("/handles", {"url": "https://example.org/1"})) == (400, "prefix_required")


def test_state_conflicts(writer: Api, home):
    HandleFactory(prefix=home, suffix="gone", target_url="https://example.org/a", status=Handle.Status.DELETED)
    HandleFactory(prefix=home, suffix="here", target_url="https://example.org/a")
    created = writer.post("/handles", {"handle": "GONE", "url": "https://example.org/1"})
    assert error(created) == (409, "handle_exists") and "was deleted" in created.json()["error"]["message"]
    assert error(writer.post("/handles/20.500.12345/gone", {"url": "https://example.org/b"})) == (409, "invalid_state")
    assert error(writer.delete("/handles/20.500.12345/gone")) == (409, "invalid_state")
    assert error(writer.post("/handles/20.500.12345/missing", {"url": "https://example.org/b"})) == (
        404, "handle_not_found")
    assert error(writer.delete("/handles/20.500.12345/missing")) == (404, "handle_not_found")
    assert error(writer.post("/handles/20.500.12345/here", {"url": "https://example.org/a"})) == (409, "no_change")
    services.handle_tombstone(handle=Handle.objects.get(suffix="here"), reason="withdrawn")
    assert error(writer.post("/handles/20.500.12345/here", {"url": "https://example.org/b"})) == (409, "invalid_state")


@pytest.mark.parametrize(("path", "expected"), [
    ("/handles/20.500.404/x", (404, "unknown_prefix")),
    ("/handles/not-a-prefix!/x", (400, "invalid_prefix")),
    ("/handles/20.500.12345/a%00b", (400, "invalid_suffix")),
    ("/handles/20.500.12345/a%0Ab", (400, "invalid_suffix")),
    ("/handles/20.500.12345/%20x", (400, "invalid_suffix")),
    ("/handles/20.500.12345/a//b", (400, "invalid_suffix")),
    ("/handles/20.500.12345/" + "x" * 300, (400, "suffix_too_long")),
    ("/requests/99999999999999999999999", (404, "request_not_found")),
    ("/requests/12", (404, "request_not_found")),
    ("/requests/abc", (404, "not_found")),
    ("/nowhere", (404, "not_found")),
    ("/resolve/20.500.404/x", (404, "unknown_prefix")),
    ("/prefixes/20.500.404/remote-handles", (404, "unknown_prefix")),
    ("/prefixes/20.500.12345/remote-handles?page=-1", (400, "min_value")),
    ("/prefixes/20.500.12345/remote-handles?page_size=5000", (400, "max_value")),
    ("/handles?limit=0", (400, "min_value")),
    ("/handles?limit=abc", (400, "invalid")),
    ("/handles?status=lost", (400, "invalid_choice")),
    ("/handles?changed_since=yesterday", (400, "invalid")),
    ("/handles?cursor=!!!", (400, "invalid_cursor")),
    ("/handles?cursor=MTI", (400, "invalid_cursor")),  # a valid id cursor, but not for a changed_since list
    ("/handles?cursor=MTIz", (400, "invalid_cursor")),  # a cursor of the API's first codec: refused once
    ("/handles?prefix=20.500.404", (400, "unknown_prefix")),
    ("/handles?external_id=4711", (400, "source_system_required")),
    ("/handles?source_system=DAMS!", (400, "invalid_source_system")),
    ("/handles?source_system=" + "a" * 65, (400, "max_length")),
    ("/handles?prefix=" + "9" * 65, (400, "max_length")),
    # A parameter the list does not know is refused: ignoring it would list more than was asked for.
    ("/handles?sort=bogus", (400, "unknown_field")),
    ("/handles?collection=999", (400, "unknown_field")),
    ("/handles?stauts=active", (400, "unknown_field")),
    ("/handles?status=", (400, "blank")),
    ("/prefixes/20.500.12345/remote-handles?sort=name", (400, "unknown_field")),
    ("/lookup/handle?handle=nohandle", (400, "invalid_handle")),
    ("/lookup/handle?handle=hdl:", (400, "invalid_handle")),
    ("/lookup/handle", (400, "required")),
    ("/lookup/handle?handle=20.500.12345/a%00", (400, "null_characters_not_allowed")),
    ("/lookup/url?url=mailto:x@example.org", (400, "invalid_url")),
    ("/lookup/asset?source_system=dams", (400, "required")),
    ("/lookup/asset?source_system=dams&external_id=nope", (404, "asset_not_found")),
    ("/iiif/metadata?source_system=dams&external_id=nope", (404, "asset_not_found")),
])
def test_bad_reads(reader: Api, home, path, expected):
    if "cursor=MTI" in path:
        path += "&changed_since=2026-01-01T00:00:00Z"
    assert error(reader.client.get(ROOT + path, headers=reader.headers)) == expected


@pytest.mark.parametrize(("path", "body", "expected"), [
    ("/assets/publish", {"source_system": "dams", "external_id": "1"}, (400, "required")),
    ("/assets/publish", {"source_system": "Dams", "external_id": "1", "url": "https://e.org/1"},
     (400, "invalid_source_system")),
    ("/assets/publish", {"source_system": "dams", "external_id": 1, "url": "https://e.org/1"}, (400, "invalid_type")),
    ("/assets/publish", {"source_system": "dams", "external_id": "1", "url": "https://e.org/1", "title": 5},
     (400, "invalid_type")),
    ("/assets/publish", {"source_system": "dams", "external_id": "1", "url": "https://e.org/1", "prefix": "9.9"},
     (400, "unknown_prefix")),
    ("/assets/unpublish", {"source_system": "dams", "external_id": "404"}, (404, "asset_not_found")),
    ("/assets/change-url", {"source_system": "dams", "external_id": "404", "url": "https://e.org/2"},
     (404, "asset_not_found")),
    ("/assets/change-url", {"source_system": "dams", "external_id": "404", "url": "data:,x"}, (400, "invalid_url")),
    ("/assets/delete", {"source_system": "dams", "external_id": "404", "reason": ["x"]}, (400, "invalid_type")),
])
def test_bad_asset_calls(writer: Api, home, path, body, expected):
    assert error(writer.post(path, body)) == expected
    assert not Asset.objects.exists()


def test_a_deleted_asset_cannot_be_unpublished_or_moved(writer: Api, home):
    writer.post("/assets/publish", {"source_system": "dams", "external_id": "1", "url": "https://e.org/1"})
    writer.post("/assets/delete", {"source_system": "dams", "external_id": "1"})
    assert error(writer.post("/assets/unpublish", {"source_system": "dams", "external_id": "1"})) == (
        409, "invalid_state")
    assert error(writer.post("/assets/change-url", {"source_system": "dams", "external_id": "1",
                                                    "url": "https://e.org/2"})) == (409, "invalid_state")


@pytest.mark.parametrize(("method", "path"), [("put", "/handles"), ("delete", "/lookup/url"),
                                              ("get", "/assets/publish"), ("put", "/handles/20.500.12345/x")])
def test_wrong_methods(writer: Api, home, method, path):
    response = getattr(writer.client, method)(ROOT + path, headers=writer.headers)
    assert error(response) == (405, "method_not_allowed")
    assert response["Allow"]


def test_an_unexpected_failure_is_still_a_json_error(reader: Api, home, monkeypatch):
    """A bug answers in the API's own format (and is logged), not with Django's HTML page."""
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("handles.api.views.queries.handles_page", broken)
    assert error(reader.get("/handles")) == (500, "internal_error")
