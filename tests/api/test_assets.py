"""The DAMS asset lifecycle: publish, unpublish, URL change, delete (services and API)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from handles import services
from handles.exceptions import HandleExists, PrefixForbidden
from handles.handle_server.client import HandleNotFound, client_for
from handles.models import Asset, Handle, HandleRequest, Prefix
from tests.api.conftest import Api, issue_token
from tests.factories import AssetFactory, HandleFactory

DAMS = {"source_system": "dams", "external_id": "4711"}
URL = "https://dams.example.edu/node/4711"


def publish(api: Api, **extra):
    return api.post("/assets/publish", {**DAMS, "url": URL, **extra})


def test_publish_mints_the_node_id_under_an_asset_id_prefix(writer: Api, home):
    home.suffix_policy = Prefix.SuffixPolicy.ASSET_ID
    services.prefix_save(prefix=home)
    body = publish(writer).json()
    assert [h["handle"] for h in body["handles"]] == ["20.500.12345/4711"]
    assert Handle.objects.get().asset == Asset.objects.get(**DAMS)


def test_publish_mints_a_random_suffix_by_default(writer: Api, home):
    body = publish(writer).json()
    suffix = body["handles"][0]["suffix"]
    assert len(suffix) == home.suffix_length and set(suffix) <= set(home.suffix_alphabet)


def test_publishing_twice_gives_one_handle(writer: Api, home):
    first = publish(writer)
    second = publish(writer)
    assert (first.status_code, second.status_code) == (202, 200)
    assert second.json()["requests"] == []
    assert second.json()["handles"] == first.json()["handles"]
    assert Handle.objects.count() == 1 and HandleRequest.objects.count() == 1


def test_publish_with_a_new_url_makes_the_handle_follow(writer: Api, home):
    publish(writer)
    body = publish(writer, url="https://dams.example.edu/items/4711").json()
    assert [r["op"] for r in body["requests"]] == ["update"]
    assert Handle.objects.get().target_url == "https://dams.example.edu/items/4711"


def test_given_policy_needs_a_suffix(writer: Api, home):
    home.suffix_policy = Prefix.SuffixPolicy.GIVEN
    services.prefix_save(prefix=home)
    response = publish(writer)
    assert response.status_code == 400 and response.json()["error"]["code"] == "suffix_required"
    assert not Asset.objects.exists()  # refused whole: the asset was not recorded either
    assert publish(writer, handle="letter-1").json()["handles"][0]["suffix"] == "letter-1"


def test_unpublish_leaves_the_handle_unchanged(writer: Api, home):
    publish(writer)
    before = Handle.objects.values().get()
    body = writer.post("/assets/unpublish", DAMS).json()
    assert body["asset"]["state"] == "unpublished" and body["requests"] == []
    assert Handle.objects.values().get() == before


def test_url_change_moves_the_handles_that_pointed_at_the_old_url(writer: Api, home, other_prefix):
    asset = AssetFactory(**DAMS, url=URL)
    ours = HandleFactory(prefix=home, suffix="a", target_url=URL, asset=asset)
    geodata = HandleFactory(prefix=other_prefix, suffix="g", target_url="https://geo.example.edu/4711", asset=asset)
    body = writer.post("/assets/change-url", {**DAMS, "url": "https://dams.example.edu/items/4711"}).json()
    assert [r["full_handle"] for r in body["requests"]] == ["20.500.12345/a"]
    ours.refresh_from_db()
    geodata.refresh_from_db()
    assert ours.target_url == "https://dams.example.edu/items/4711"
    assert geodata.target_url == "https://geo.example.edu/4711"  # another site's handle stays


def test_delete_tombstones_or_deletes_by_the_prefix_setting(writer: Api, home, other_prefix):
    other_prefix.asset_delete_action = Prefix.AssetDeleteAction.DELETE
    services.prefix_save(prefix=other_prefix)
    asset = AssetFactory(**DAMS, url=URL)
    HandleFactory(prefix=home, suffix="a", target_url=URL, asset=asset)
    HandleFactory(prefix=other_prefix, suffix="g", target_url=URL, asset=asset)
    body = writer.post("/assets/delete", {**DAMS, "reason": "Withdrawn"}).json()
    assert {r["full_handle"]: r["action"] for r in body["requests"]} == {"20.500.12345/a": "tombstone",
                                                                          "20.500.99999/g": "delete"}
    assert dict(Handle.objects.values_list("suffix", "status")) == {"a": "tombstoned", "g": "deleted"}
    assert Handle.objects.get(suffix="a").tombstone_reason == "Withdrawn"
    assert Asset.objects.get(**DAMS).state == "deleted"  # the record stays
    again = writer.post("/assets/delete", DAMS)
    assert again.status_code == 200 and again.json()["requests"] == []


def test_republishing_a_deleted_asset_restores_its_tombstones(writer: Api, home):
    asset = AssetFactory(**DAMS, url=URL)
    withdrawn_by_staff = HandleFactory(prefix=home, suffix="old", target_url=URL, asset=asset)
    services.handle_tombstone(handle=withdrawn_by_staff, reason="Duplicate")
    HandleFactory(prefix=home, suffix="a", target_url=URL, asset=asset, synced_version=1)  # on the server
    writer.post("/assets/delete", DAMS)
    body = publish(writer).json()
    assert [(r["full_handle"], r["action"]) for r in body["requests"]] == [("20.500.12345/a", "restore")]
    assert dict(Handle.objects.values_list("suffix", "status")) == {"old": "tombstoned", "a": "active"}


def test_a_deleted_handle_is_never_minted_again(writer: Api, home):
    home.suffix_policy = Prefix.SuffixPolicy.ASSET_ID
    home.asset_delete_action = Prefix.AssetDeleteAction.DELETE
    services.prefix_save(prefix=home)
    publish(writer)
    writer.post("/assets/delete", DAMS)
    response = publish(writer)
    assert response.status_code == 409 and response.json()["error"]["code"] == "handle_exists"
    assert "never reused" in response.json()["error"]["message"]
    assert Asset.objects.get(**DAMS).state == "deleted"  # nothing half-applied


def test_a_token_for_one_prefix_cannot_move_another_prefixes_handles(client, home, other_prefix):
    asset = AssetFactory(**DAMS, url=URL)
    HandleFactory(prefix=home, suffix="a", target_url=URL, asset=asset)
    HandleFactory(prefix=other_prefix, suffix="g", target_url=URL, asset=asset)
    geodata_only = Api(client, issue_token("write", [other_prefix]))
    response = geodata_only.post("/assets/change-url", {**DAMS, "url": "https://dams.example.edu/items/4711"})
    assert response.status_code == 403 and response.json()["error"]["code"] == "prefix_forbidden"
    assert set(Handle.objects.values_list("target_url", flat=True)) == {URL}
    assert Asset.objects.get(**DAMS).url == URL


def test_service_guard_refuses_before_any_write(home, other_prefix):
    with pytest.raises(PrefixForbidden):
        services.asset_publish(source_system="dams", external_id="1", url=URL, prefix=home,
                               permitted_prefix_ids={other_prefix.pk})
    assert not Asset.objects.exists()


def test_lifecycle_reaches_the_handle_server(writer: Api, prefix, run_queue, unique_suffix):
    """Publish, move, delete through the API and the queue: the simulator ends as intended each time."""
    prefix.suffix_policy = Prefix.SuffixPolicy.ASSET_ID
    services.prefix_save(prefix=prefix)
    node = unique_suffix("node")
    ref = {"source_system": "dams", "external_id": node}
    server = client_for(prefix.server_config())

    run_queue(writer.post, "/assets/publish", {**ref, "url": "https://dams.example.edu/a"})
    assert server.get_url(f"{prefix.prefix}/{node}")[0] == "https://dams.example.edu/a"

    run_queue(writer.post, "/assets/change-url", {**ref, "url": "https://dams.example.edu/b"})
    assert server.get_url(f"{prefix.prefix}/{node}")[0] == "https://dams.example.edu/b"

    run_queue(writer.post, "/assets/delete", ref)
    handle = Handle.objects.get(suffix=node)
    assert handle.status == "tombstoned" and handle.in_sync
    assert server.get_url(handle.full_handle)[0] == handle.tombstone_url

    prefix.asset_delete_action = Prefix.AssetDeleteAction.DELETE
    services.prefix_save(prefix=prefix)
    run_queue(writer.post, "/assets/publish", {**ref, "url": "https://dams.example.edu/b"})
    assert server.get_url(handle.full_handle)[0] == "https://dams.example.edu/b"  # restored
    run_queue(writer.post, "/assets/delete", ref)
    with pytest.raises(HandleNotFound):
        server.get_url(handle.full_handle)
    assert HandleRequest.objects.filter(handle=handle).exclude(status="success").count() == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_publishes_mint_one_handle(monkeypatch):
    """Two DAMS workers publish the same new asset at once: the asset's row lock lets one mint."""
    monkeypatch.setattr("handles.outbox.handover.enqueue_request", lambda request_id: None)  # no server in this test
    home = services.prefix_save(prefix=Prefix(
        prefix="20.500.12345", site_name="Portal", is_default=True, server_url="https://127.0.0.1:9",
        auth_identity="300:20.500.12345/ADMIN", secret_env_var="HANDLE_SECRET_TEST", tls_mode=Prefix.TLS.INSECURE,
        hs_admin_handle="20.500.12345/ADMIN"))
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def publish_once() -> None:
        try:
            barrier.wait(timeout=10)
            services.asset_publish(source_system="dams", external_id="77", url=URL, prefix=home)
        except BaseException as exc:  # reported below, in the main thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=publish_once) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert Asset.objects.count() == 1 and Handle.objects.count() == 1


def test_mint_for_another_assets_suffix_is_refused(home):
    home.suffix_policy = Prefix.SuffixPolicy.ASSET_ID
    services.prefix_save(prefix=home)
    HandleFactory(prefix=home, suffix="4711", target_url=URL)  # a legacy handle, not linked to the asset
    with pytest.raises(HandleExists):
        services.asset_publish(**DAMS, url=URL, prefix=home)
    assert not Asset.objects.exists()
