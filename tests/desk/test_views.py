"""The read-only browse pages, the handle page and the CSV export."""

from __future__ import annotations

import csv
import io

import pytest
from django.urls import reverse

from handles.desk import exports
from handles.desk.models import Collection
from handles.models import Handle, HandleRequest
from tests.factories import AssetFactory, HandleFactory, PrefixFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def offline_prefix():
    return PrefixFactory()


@pytest.fixture
def manager_client(client, manager_user):
    client.force_login(manager_user)
    return client


def shown(response) -> list[str]:
    return [h.full_handle for h, _ in response.context["rows"]]


def read_csv(response) -> list[list[str]]:
    body = b"".join(response.streaming_content).decode("utf-8")
    assert body.startswith("\ufeff")
    return list(csv.reader(io.StringIO(body[1:])))


def test_browse_needs_a_login_and_the_view_permission(client, offline_prefix):
    response = client.get(reverse("desk:browse"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login"))
    client.force_login(UserFactory(username="nobody"))
    assert client.get(reverse("desk:browse")).status_code == 403
    assert client.get(reverse("desk:export")).status_code == 403


def test_browse_filters_by_prefix_collection_source_and_status(manager_client, offline_prefix):
    other = PrefixFactory(prefix="11084", auth_identity="300:11084/ADMIN", hs_admin_handle="11084/ADMIN")
    maps = AssetFactory(source_system="dams", external_id="maps-1", title="Map of Grinnell")
    HandleFactory(prefix=offline_prefix, suffix="m1", asset=maps)
    HandleFactory(prefix=other, suffix="99", asset=AssetFactory(source_system="alma", external_id="9910"),
                  status=Handle.Status.TOMBSTONED)
    collection = Collection.objects.create(name="Maps", source_system="dams", external_id_prefix="maps-")
    url = reverse("desk:browse")
    assert shown(manager_client.get(url, {"prefix": other.pk})) == ["11084/99"]
    assert shown(manager_client.get(url, {"collection": collection.pk})) == ["20.500.12345/m1"]
    assert shown(manager_client.get(url, {"source": "alma"})) == ["11084/99"]
    assert shown(manager_client.get(url, {"status": "tombstoned"})) == ["11084/99"]
    assert shown(manager_client.get(url, {"q": "grinnell"})) == ["20.500.12345/m1"]
    page = manager_client.get(url, {"q": "grinnell"}).content.decode()
    assert "Map of Grinnell" in page and 'href="/browse/export.csv?q=grinnell' in page


def test_browse_pages_by_keyset_forwards_and_back(manager_client, offline_prefix, monkeypatch):
    monkeypatch.setattr("handles.desk.views.PAGE_SIZE", 3)
    for i in range(8):
        HandleFactory(prefix=offline_prefix, suffix=f"k{i}")
    url = reverse("desk:browse")
    first = manager_client.get(url, {"sort": "handle"})
    assert shown(first) == ["20.500.12345/k0", "20.500.12345/k1", "20.500.12345/k2"]
    assert first.context["previous_cursor"] == ""
    second = manager_client.get(url, {"sort": "handle", "after": first.context["next_cursor"]})
    assert shown(second) == ["20.500.12345/k3", "20.500.12345/k4", "20.500.12345/k5"]
    third = manager_client.get(url, {"sort": "handle", "after": second.context["next_cursor"]})
    assert shown(third) == ["20.500.12345/k6", "20.500.12345/k7"] and third.context["next_cursor"] == ""
    back = manager_client.get(url, {"sort": "handle", "before": third.context["previous_cursor"]})
    assert shown(back) == shown(second)
    newest = manager_client.get(url, {"sort": "-created"})
    assert shown(newest)[0] == "20.500.12345/k7"
    resumed = manager_client.get(url, {"sort": "-updated", "after": manager_client.get(
        url, {"sort": "-updated"}).context["next_cursor"]})
    assert len(shown(resumed)) == 3


def test_a_broken_cursor_is_refused_with_the_reason(manager_client, offline_prefix):
    HandleFactory(prefix=offline_prefix, suffix="only")
    handle_sort_cursor = manager_client.get(reverse("desk:browse"), {"sort": "handle"}).context["next_cursor"]
    assert handle_sort_cursor == ""  # one page: no cursor given out
    for params in ({"after": "%%%"}, {"after": "WzFd"}, {"before": "eyJhIjogMX0"},
                   {"sort": "-updated", "after": "WzEsIkFCQyJd"}):  # [1, "ABC"]: a key of the handle order
        response = manager_client.get(reverse("desk:browse"), params)
        assert response.status_code == 400 and response.context["rows"] == []
        assert "The cursor is not one this list gave out" in response.content.decode()


def test_detail_page_shows_the_handle_its_asset_and_history(manager_client, offline_prefix):
    asset = AssetFactory(title="Campus map, 1921")
    handle = HandleFactory(prefix=offline_prefix, suffix="det", asset=asset, target_url="https://x.example/new")
    HandleFactory(prefix=offline_prefix, suffix="det-legacy", asset=asset)
    HandleRequest.objects.create(handle=handle, op="update", action="redirect", full_handle=handle.full_handle,
                                 handle_version=1, from_url="https://x.example/old", url="https://x.example/new",
                                 status="success")
    html = manager_client.get(reverse("desk:detail", args=[handle.pk])).content.decode()
    assert "hdl:20.500.12345/det" in html and "Campus map, 1921" in html
    assert "https://x.example/old → https://x.example/new" in html
    assert "20.500.12345/det-legacy" in html
    assert "<form method=\"post\" action=\"/admin/logout/\">" in html  # the only form: logging out


def test_export_streams_the_current_filter_with_formulas_neutralised(manager_client, offline_prefix, settings):
    settings.HANDLES_DESK_EXPORT_CHUNK = 2  # several keyset batches
    evil = AssetFactory(title="=HYPERLINK(\"http://evil\")", external_id="+1", source_system="dams")
    HandleFactory(prefix=offline_prefix, suffix="-minus", asset=evil)
    for i in range(4):
        HandleFactory(prefix=offline_prefix, suffix=f"x{i}")
    HandleFactory(prefix=offline_prefix, suffix="skip", status=Handle.Status.DELETED)
    response = manager_client.get(reverse("desk:export"), {"status": "active"})
    assert response.streaming and response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="handles-')
    rows = read_csv(response)
    assert rows[0] == exports.HANDLE_COLUMNS
    by_handle = {row[0]: dict(zip(rows[0], row, strict=True)) for row in rows[1:]}
    assert sorted(by_handle) == ["20.500.12345/-minus", *[f"20.500.12345/x{i}" for i in range(4)]]
    first = by_handle["20.500.12345/-minus"]
    assert (first["asset_title"], first["asset_id"]) == ("'=HYPERLINK(\"http://evil\")", "'+1")
    assert first["sync"] == "pending" and first["resolver_url"] == "https://hdl.handle.net/20.500.12345/-minus"


@pytest.mark.parametrize("value, expected", [
    ("=1+1", "'=1+1"), ("+1", "'+1"), ("-2", "'-2"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("plain", "plain"), ("a=b", "a=b"), (None, ""), (7, "7"),
])
def test_formula_injection_is_neutralised(value, expected):
    assert exports.neutralise(value) == expected


def test_keyset_reads_every_row_once_in_batches(offline_prefix, django_assert_num_queries):
    for i in range(5):
        HandleFactory(prefix=offline_prefix, suffix=f"r{i}")
    with django_assert_num_queries(3):  # batches of 2, 2 and 1
        rows = list(exports.keyset(Handle.objects.all(), chunk=2))
    assert [h.suffix for h in rows] == [f"r{i}" for i in range(5)]
