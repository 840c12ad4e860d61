"""Asset services (handles.services.assets), called directly: the DAMS lifecycle's guards and idempotency keys.
(The same lifecycle through the API, and on the Handle server: tests/api/test_assets.py.)"""

from __future__ import annotations

import pytest

from handles.exceptions import HandleServiceError, HandleStateError
from handles.models import Asset, Handle, HandleRequest, Prefix
from handles.services import assets
from handles.services import handles as handle_services
from tests.factories import PrefixFactory

pytestmark = pytest.mark.django_db

URL = "https://dams.example.edu/node/1"


@pytest.fixture
def home() -> Prefix:
    return PrefixFactory()


def publish(prefix: Prefix, **extra) -> assets.AssetChange:
    return assets.asset_publish(**{"source_system": "dams", "external_id": "1", "url": URL, "prefix": prefix,
                                   **extra})


def test_publish_records_the_asset_and_mints_one_handle_however_often_it_is_called(home):
    first = publish(home, title="A map")
    again = publish(home)
    assert [r.action for r in first.requests] == ["mint"] and again.requests == []
    assert (again.asset.pk, again.asset.title, again.asset.state) == (first.asset.pk, "A map", "published")
    assert Handle.objects.filter(asset=first.asset).count() == 1


def test_publish_refuses_a_bad_url_and_records_nothing(home):
    with pytest.raises(HandleServiceError):
        publish(home, url="javascript:alert(1)")
    assert not Asset.objects.exists() and not Handle.objects.exists()


def test_a_url_change_to_the_same_url_changes_nothing(home):
    asset = publish(home).asset
    assert assets.asset_change_url(asset=asset, url=URL).requests == []
    moved = assets.asset_change_url(asset=asset, url="https://dams.example.edu/node/1/v2")
    assert [(r.action, r.url) for r in moved.requests] == [("redirect", "https://dams.example.edu/node/1/v2")]


def test_a_deleted_asset_is_neither_unpublished_nor_moved_and_deleting_again_changes_nothing(home):
    asset = publish(home).asset
    deleted = assets.asset_delete(asset=asset)
    assert [r.action for r in deleted.requests] == ["tombstone"]
    assert "deleted from dams" in deleted.requests[0].reason
    assert assets.asset_delete(asset=asset).requests == []
    with pytest.raises(HandleStateError, match="publish it again"):
        assets.asset_unpublish(asset=asset)
    with pytest.raises(HandleStateError, match="publish it again"):
        assets.asset_change_url(asset=asset, url="https://dams.example.edu/node/1/v2")
    assert [r.action for r in publish(home).requests] == ["restore"]


def test_request_once_runs_once_per_key_and_a_failed_call_keeps_no_key(home):
    handle = publish(home).requests[0].handle
    calls = []

    def verify() -> HandleRequest:
        calls.append(1)
        return handle_services.handle_verify(handle=handle)

    first, replayed = assets.request_once(idempotency_key="key-1", perform=verify)
    second, replayed_again = assets.request_once(idempotency_key="key-1", perform=verify)
    assert (replayed, replayed_again, second.pk, len(calls)) == (False, True, first.pk, 1)

    def refused() -> HandleRequest:
        raise HandleStateError("no")

    with pytest.raises(HandleStateError):
        assets.request_once(idempotency_key="key-2", perform=refused)
    again, replayed = assets.request_once(idempotency_key="key-2", perform=verify)
    assert replayed is False and again.idempotency_key == "key-2"
