"""Collection managers see everything and change nothing.

The write paths are found, not listed by hand: every admin URL of the handles and handles_desk apps
(model pages and every custom page), every admin action the staff are offered, the mint page and every
desk view. Each gets a POST that would change something if it were allowed; nothing may change.
"""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import NoReverseMatch, get_resolver, reverse
from django.utils import timezone

from handles.desk.models import BulkJob, BulkJobItem, Collection
from handles.desk.urls import urlpatterns as desk_urlpatterns
from handles.models import Asset, Handle, HandleRequest, Prefix
from tests.factories import AssetFactory, HandleFactory, PrefixFactory

pytestmark = pytest.mark.django_db

# What a write would send: enough for any form of ours to be valid.
PAYLOAD = {
    "target_url": "https://evil.example/x", "reason": "because", "successor_url": "https://evil.example/s",
    "find": "https://", "replace": "http://", "confirm": "yes", "_preview": "1", "_mint": "1", "suffix": "new-1",
    "signature": "boom", "source_system": "dams", "external_id": "n-9", "title": "t", "url": "https://evil.example",
    "state": "published", "name": "Stolen", "post": "yes", "select_across": "1", "index": "0",
    "site_name": "x", "server_url": "https://evil.example", "secret_env_var": "X",
}


@pytest.fixture
def world():
    """One of everything, so that every page has an object to act on."""
    prefix = PrefixFactory()
    asset = AssetFactory()
    active = HandleFactory(prefix=prefix, suffix="live", asset=asset, synced_version=1)
    HandleFactory(prefix=prefix, suffix="stone", status=Handle.Status.TOMBSTONED, synced_version=1)
    failed = HandleRequest.objects.create(handle=active, op="update", action="redirect",
                                          full_handle=active.full_handle, handle_version=1, status="error",
                                          error="boom", finished_at=timezone.now())
    job = BulkJob.objects.create(kind="verify", selection={"ids": [active.pk]})
    collection = Collection.objects.create(name="Maps", source_system="dams")
    return {"handle": active, "handlerequest": failed, "bulkjob": job, "collection": collection, "asset": asset,
            "prefix": prefix}


def snapshot() -> dict:
    return {
        "handles": sorted(Handle.objects.values_list("pk", "status", "target_url", "version", "tombstone_reason")),
        "requests": sorted(HandleRequest.objects.values_list("pk", "status", "attempts", "max_attempts")),
        "jobs": sorted(BulkJob.objects.values_list("pk", "status", "cancel_requested")),
        "items": BulkJobItem.objects.count(),
        "collections": sorted(Collection.objects.values_list("pk", "name", "source_system")),
        "assets": sorted(Asset.objects.values_list("pk", "title", "external_id", "state")),
        "prefixes": sorted(Prefix.objects.values_list("pk", "prefix", "server_url", "site_name")),
    }


def admin_urls(world) -> list[str]:
    """Every admin URL of our apps, with an object of the right model where the URL names one."""
    resolver = get_resolver().namespace_dict["admin"][1]
    urls = []
    for name in sorted(n for n in resolver.reverse_dict if isinstance(n, str)):
        # Admin URL names are <app label>_<model>_<page>; other apps' (handles_repair, handles_api) are theirs.
        rest = name.removeprefix("handles_desk_") if name.startswith("handles_desk_") else name.removeprefix("handles_")
        model = rest.split("_")[0]
        if not name.startswith("handles_") or model not in world:
            continue
        for args in ([], [world[model].pk]):
            try:
                urls.append(reverse(f"admin:{name}", args=args))
            except NoReverseMatch:
                continue
    return sorted(set(urls))


def test_every_admin_url_refuses_a_collection_manager_write(client, manager_user, world):
    client.force_login(manager_user)
    urls = admin_urls(world)
    handle_pk = world["handle"].pk
    # The custom pages are among them: a new page cannot escape this test.
    for expected in (f"/admin/handles/handle/{handle_pk}/redirect/", "/admin/handles/handle/add/",
                     "/admin/handles/handlerequest/failures/retry/", f"/admin/handles_desk/bulkjob/{world['bulkjob'].pk}/cancel/",
                     "/admin/handles_desk/collection/add/", "/admin/handles/prefix/add/"):
        assert expected in urls
    before = snapshot()
    refused = {}
    for url in urls:
        response = client.post(url, PAYLOAD)
        refused[url] = response.status_code
        assert snapshot() == before, f"POST {url} changed something"
    # The pages that exist only to write answer 403 outright.
    writers = [u for u in urls if u.rstrip("/").rsplit("/", 1)[-1] in (
        "redirect", "tombstone", "restore", "delete-handle", "verify", "retry", "add", "cancel", "change", "delete")]
    assert writers and all(refused[u] == 403 for u in writers), {u: refused[u] for u in writers}


def test_every_admin_action_refuses_a_collection_manager(client, staff_user, manager_user, world):
    request = type("R", (), {"user": staff_user, "GET": {}, "method": "GET"})()
    changelists = {}
    for model in (Handle, HandleRequest):
        model_admin = admin.site._registry[model]
        changelists[reverse(f"admin:handles_{model._meta.model_name}_changelist")] = (
            list(model_admin.get_actions(request)), model)
    assert len(changelists["/admin/handles/handle/"][0]) == 6
    client.force_login(manager_user)
    before = snapshot()
    for url, (actions, model) in changelists.items():
        selected = list(model.objects.values_list("pk", flat=True))
        for name in actions:
            response = client.post(url, {**PAYLOAD, "action": name, "_selected_action": selected})
            assert response.status_code in (200, 302)
            assert snapshot() == before, f"action {name} on {url} changed something"


def test_the_desk_views_only_read(client, manager_user, world):
    client.force_login(manager_user)
    before = snapshot()
    for pattern in desk_urlpatterns:
        args = [world["handle"].pk] if "<int:pk>" in str(pattern.pattern) else []
        url = reverse(f"desk:{pattern.name}", args=args)
        assert client.get(url).status_code == 200
        for method in (client.post, client.put, client.delete):
            assert method(url, PAYLOAD).status_code == 405
    assert snapshot() == before


def test_staff_may_not_change_prefixes(staff_client, world):
    response = staff_client.post(reverse("admin:handles_prefix_change", args=[world["prefix"].pk]), PAYLOAD)
    assert response.status_code == 403
