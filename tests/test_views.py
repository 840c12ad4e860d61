"""Public pages: the tombstone page (HTTP 410) and the local resolver."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from handles.models import Handle
from tests.factories import AssetFactory, HandleFactory, PrefixFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def offline_prefix():
    return PrefixFactory()


@pytest.fixture
def tombstoned(offline_prefix):
    return HandleFactory(
        prefix=offline_prefix, suffix="Gone-1", status=Handle.Status.TOMBSTONED,
        asset=AssetFactory(title="Letter from Isabella, 1898"),
        tombstone_reason="Withdrawn at the request of the donor's family.",
        successor_url="https://dams.example.edu/node/2002",
        tombstoned_at=timezone.make_aware(datetime.datetime(2025, 5, 12, 10, 0)),
    )


def test_tombstone_page_says_what_it_was_when_why_and_where_to_look(client, tombstoned):
    response = client.get("/tombstone/20.500.12345/Gone-1")
    html = response.content.decode()
    assert response.status_code == 410
    assert '<dd id="tombstone-title">Letter from Isabella, 1898</dd>' in html
    assert "This object has been withdrawn" in html
    assert '<time datetime="2025-05-12T10:00:00+00:00">12 May 2025</time>' in html
    assert "Withdrawn at the request of the donor&#x27;s family." in html
    assert '<a id="tombstone-successor" href="https://dams.example.edu/node/2002" rel="nofollow">' in html
    assert "hdl:20.500.12345/Gone-1" in html and '<meta name="robots" content="noindex">' in html


def test_tombstone_page_without_asset_or_successor(client, offline_prefix):
    HandleFactory(prefix=offline_prefix, suffix="bare", status=Handle.Status.TOMBSTONED, tombstone_reason="Duplicate")
    html = client.get("/tombstone/20.500.12345/bare").content.decode()
    assert "An object of Collections Portal" in html and "tombstone-successor" not in html


def test_the_handle_name_is_case_insensitive_like_the_server(client, tombstoned):
    assert client.get("/tombstone/20.500.12345/gone-1").status_code == 410
    assert client.get("/handles/20.500.12345/GONE-1").status_code == 410


def test_resolver_redirects_to_the_target(client, offline_prefix):
    HandleFactory(prefix=offline_prefix, suffix="a/b c", target_url="https://example.org/x?y=1")
    response = client.get("/handles/20.500.12345/a/b%20c")
    assert (response.status_code, response["Location"]) == (302, "https://example.org/x?y=1")


def test_resolver_serves_the_tombstone_page_for_a_withdrawn_handle(client, tombstoned):
    response = client.get("/handles/20.500.12345/Gone-1")
    assert response.status_code == 410 and "Letter from Isabella" in response.content.decode()


def test_deleted_and_unknown_handles_are_not_found(client, offline_prefix):
    HandleFactory(prefix=offline_prefix, suffix="del", status=Handle.Status.DELETED)
    assert client.get("/handles/20.500.12345/del").status_code == 404
    assert client.get("/tombstone/20.500.12345/del").status_code == 404
    assert client.get("/handles/20.500.12345/nothing").status_code == 404


def test_tombstone_url_of_a_live_handle_goes_to_its_target(client, offline_prefix):
    HandleFactory(prefix=offline_prefix, suffix="live", target_url="https://example.org/live")
    response = client.get("/tombstone/20.500.12345/live")
    assert (response.status_code, response["Location"]) == (302, "https://example.org/live")


def test_titles_and_reasons_are_escaped(client, offline_prefix):
    HandleFactory(prefix=offline_prefix, suffix="x", status=Handle.Status.TOMBSTONED,
                  asset=AssetFactory(title="<script>alert(1)</script>"), tombstone_reason="<b>no</b>")
    html = client.get("/tombstone/20.500.12345/x").content.decode()
    assert "<script>alert" not in html and "&lt;script&gt;" in html and "&lt;b&gt;no&lt;/b&gt;" in html
