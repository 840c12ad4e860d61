"""Collection managers see everything and change nothing.

The write paths are found, not listed by hand: every admin URL of the handles, handles_desk and
handles_repair apps (model pages and every custom page), every admin action the staff are offered, the
mint page and every desk view. Each gets a POST that would change something if it were allowed; nothing
may change.
"""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import NoReverseMatch, get_resolver, reverse
from django.utils import timezone

from handles.desk.models import BulkJob, BulkJobItem, Collection
from handles.desk.urls import urlpatterns as desk_urlpatterns
from handles.models import Asset, Handle, HandleRequest, Prefix
from handles.repair.models import (
    ImportBatch,
    ImportPreset,
    ImportRow,
    ReconciliationRow,
    ReconciliationRun,
    RepairJob,
)
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
    stone = HandleFactory(prefix=prefix, suffix="stone", asset=asset, status=Handle.Status.TOMBSTONED,
                          synced_version=1)
    failed = HandleRequest.objects.create(handle=active, op="update", action="redirect",
                                          full_handle=active.full_handle, handle_version=1, status="error",
                                          error="boom", finished_at=timezone.now())
    # Jobs whose changes failed on the server: staff may retry them, managers may only look.
    incomplete = {"success": 0, "error": 1, "queued": 0, "running": 0, "unpushed": 1}
    job = BulkJob.objects.create(kind="verify", selection={"ids": [active.pk]}, state="incomplete",
                                 verification=incomplete)
    BulkJobItem.objects.create(job=job, key=active.pk, handle=active, full_handle=active.full_handle, outcome="ok",
                               request=failed)
    batch = ImportBatch.objects.create(file_name="a.csv", file_sha256="0" * 64, prefix=prefix, mode="push",
                                       step="push", state="incomplete", applied_at=timezone.now(), verification=incomplete,
                                       counts={"rows": 2, "new": 2})
    ImportRow.objects.create(batch=batch, line=2, handle_text=active.full_handle, outcome="new", handle=active,
                             request=failed)
    ImportRow.objects.create(batch=batch, line=3, handle_text=stone.full_handle, outcome="new", handle=stone)
    run = ReconciliationRun.objects.create(prefix=prefix, state="done", finished_at=timezone.now())
    repair = RepairJob.objects.create(run=run, kinds=["url_differs"], state="incomplete", verification=incomplete)
    ReconciliationRow.objects.create(run=run, kind="url_differs", full_handle=active.full_handle, handle=active,
                                     repair_request=failed, repair_job=repair, repaired_at=timezone.now())
    collection = Collection.objects.create(name="Maps", source_system="dams")
    return {"handle": active, "handlerequest": failed, "bulkjob": job, "collection": collection, "asset": asset,
            "prefix": prefix, "importbatch": batch, "reconciliationrun": run, "repairjob": repair,
            "importpreset": ImportPreset.objects.create(name="Grinnell"), "assetwithseveralhandles": asset}


def snapshot() -> dict:
    return {
        "handles": sorted(Handle.objects.values_list("pk", "status", "target_url", "version", "tombstone_reason")),
        "requests": sorted(HandleRequest.objects.values_list("pk", "status", "attempts", "max_attempts")),
        "jobs": sorted(BulkJob.objects.values_list("pk", "state", "cancel_requested")),
        "items": BulkJobItem.objects.count(),
        "collections": sorted(Collection.objects.values_list("pk", "name", "source_system")),
        "assets": sorted(Asset.objects.values_list("pk", "title", "external_id", "state")),
        "prefixes": sorted(Prefix.objects.values_list("pk", "prefix", "server_url", "site_name")),
        "imports": sorted(ImportBatch.objects.values_list("pk", "state", "mapping", "verification")),
        "repairs": sorted(RepairJob.objects.values_list("pk", "state", "verification")),
        "runs": ReconciliationRun.objects.count(),
        "presets": sorted(ImportPreset.objects.values_list("pk", "name", "handle_column")),
    }


def admin_urls(world) -> list[str]:
    """Every admin URL of our apps, with an object of the right model where the URL names one."""
    resolver = get_resolver().namespace_dict["admin"][1]
    urls = []
    for name in sorted(n for n in resolver.reverse_dict if isinstance(n, str)):
        # Admin URL names are <app label>_<model>_<page>; handles_api's are its own.
        rest = name.removeprefix("handles_")
        for app in ("desk_", "repair_"):
            rest = rest.removeprefix(app)
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
    repair_writers = [f"/admin/handles_repair/importbatch/{world['importbatch'].pk}/{page}/"
                      for page in ("apply", "continue-push", "retry-failed")] + [
        f"/admin/handles_repair/reconciliationrun/{world['reconciliationrun'].pk}/repair/",
        f"/admin/handles_repair/reconciliationrun/repair-retry/{world['repairjob'].pk}/",
        "/admin/handles_repair/importbatch/add/", "/admin/handles_repair/reconciliationrun/add/"]
    for expected in (f"/admin/handles/handle/{handle_pk}/redirect/", "/admin/handles/handle/add/",
                     "/admin/handles/handlerequest/failures/retry/", f"/admin/handles_desk/bulkjob/{world['bulkjob'].pk}/cancel/",
                     f"/admin/handles_desk/bulkjob/{world['bulkjob'].pk}/retry-failed/",
                     "/admin/handles_desk/collection/add/", "/admin/handles/prefix/add/", *repair_writers):
        assert expected in urls
    before = snapshot()
    refused = {}
    for url in urls:
        response = client.post(url, PAYLOAD)
        refused[url] = response.status_code
        assert snapshot() == before, f"POST {url} changed something"
    # The pages that exist only to write answer 403 outright. (A repair app's change page is a report.)
    writers = [u for u in urls if not u.startswith("/admin/handles_repair/") and u.rstrip("/").rsplit("/", 1)[-1] in (
        "redirect", "tombstone", "restore", "delete-handle", "verify", "retry", "retry-failed", "add", "cancel",
        "change", "delete")] + repair_writers
    assert writers and all(refused[u] == 403 for u in writers), {u: refused[u] for u in writers}


def test_managers_are_not_offered_a_retry_of_a_jobs_failed_requests(client, staff_user, manager_user, world):
    pages = [reverse("admin:handles_desk_bulkjob_change", args=[world["bulkjob"].pk]),
             reverse("admin:handles_repair_importbatch_change", args=[world["importbatch"].pk]),
             reverse("admin:handles_repair_reconciliationrun_change", args=[world["reconciliationrun"].pk])]
    client.force_login(staff_user)
    for page in pages:
        assert 'Retry the 1 failed request"' in client.get(page).content.decode(), page
    assert "Continue pushing (1 not pushed yet)" in client.get(pages[1]).content.decode()
    client.force_login(manager_user)
    for page in pages:
        html = client.get(page).content.decode()
        assert "some changes failed on the server" in html or "some handles failed on the server" in html, page
        assert "Retry the" not in html and "Continue pushing" not in html, page


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
