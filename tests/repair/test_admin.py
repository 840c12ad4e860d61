"""The admin pages: upload with column mapping and presets, the dry-run report, apply, progress JSON,
reconciliation by class with repair preview, the health page, assets with several handles; who may do what."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from handles.models import Handle, HandleRequest
from handles.repair.models import (
    HandleCheck,
    HealthOutcome,
    HealthRun,
    ImportBatch,
    ImportPreset,
    ImportRow,
    JobState,
    ReconciliationRow,
    ReconciliationRun,
)
from tests.factories import AssetFactory, HandleFactory
from tests.repair.conftest import GRINNELL_CSV, primo_page, server_put

LEGACY = (
    "MMS ID,Handle URL,dc:title\n"
    "991011589491704641,http://hdl.handle.net/11084/88,Plate 3\n"
    "991011507293904641,hdl:11084/99,Plate 4\n"
)


def _upload(client, content: bytes | str, name: str = "legacy.csv", **fields):
    data = content.encode() if isinstance(content, str) else content
    return client.post(reverse("admin:handles_repair_importbatch_add"),
                       {"file": SimpleUploadedFile(name, data, content_type="text/csv"), "encoding": "utf-8",
                        "delimiter": "auto", **fields})


def _mapping(prefix, **overrides):
    data = {"column_handle": "Handle URL", "column_external_id": "MMS ID", "column_title": "dc:title",
            "prefix": prefix.pk, "source_system": "alma", "url_template": "", "mode": "adopt", "save_preset_as": ""}
    return {**data, **overrides}


def test_upload_map_dry_run_and_apply(staff_client, grinnell_prefix, django_capture_on_commit_callbacks):
    response = _upload(staff_client, LEGACY)
    batch = ImportBatch.objects.get()
    assert response.status_code == 302 and response["Location"].endswith(f"/{batch.pk}/change/")
    page = staff_client.get(response["Location"])
    assert page.status_code == 200
    assert b'<option value="MMS ID">MMS ID</option>' in page.content  # the file's own columns to choose from
    # The guess is pre-selected; the mapping is confirmed and saved as a preset, then the dry run runs.
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(response["Location"], _mapping(grinnell_prefix, save_preset_as="CABB report"))
    batch.refresh_from_db()
    assert batch.analysed
    assert batch.counts["new"] == 2
    preset = ImportPreset.objects.get(name="CABB report")
    assert (preset.handle_column, preset.external_id_column, preset.source_system) == ("Handle URL", "MMS ID", "alma")
    report = staff_client.get(response["Location"])
    assert b"Apply: record 2 new handles" in report.content and b"11084/99" in report.content
    status = json.loads(staff_client.get(reverse("admin:handles_repair_importbatch_status", args=[batch.pk])).content)
    assert status["state"] == "done" and status["finished"] and status["counts"]["new"] == 2

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        staff_client.post(reverse("admin:handles_repair_importbatch_apply", args=[batch.pk]))
    batch.refresh_from_db()
    assert (batch.step, batch.state) == ("apply", "queued") and len(callbacks) == 1  # handed to the queue on commit
    callbacks[0]()  # the queue runs the apply (sync in tests): records the handles, queues verifications
    batch.refresh_from_db()
    # Recorded, but not applied until the server confirmed each handle (the verifications are not run here).
    assert batch.state == "verifying"
    assert set(Handle.objects.values_list("suffix", "status")) == {("88", "active"), ("99", "active")}
    assert HandleRequest.objects.filter(op=HandleRequest.Op.VERIFY).count() == 2
    status = json.loads(staff_client.get(reverse("admin:handles_repair_importbatch_status", args=[batch.pk])).content)
    assert (status["state"], status["finished"], status["done"], status["total"]) == ("verifying", False, 0, 2)
    assert status["verification"] == {"success": 0, "error": 0, "queued": 2, "running": 0, "unpushed": 0}
    page = staff_client.get(reverse("admin:handles_repair_importbatch_change", args=[batch.pk])).content.decode()
    assert "Applied; waiting for the server to confirm each handle" in page and "0 of 2 verified" in page


def test_a_preset_fills_the_mapping(staff_client, grinnell_prefix, django_capture_on_commit_callbacks):
    preset = ImportPreset.objects.create(name="Grinnell", handle_column="Handle URL", external_id_column="MMS ID",
                                         title_column="dc:title", prefix=grinnell_prefix, source_system="alma")
    _upload(staff_client, GRINNELL_CSV.read_bytes(), name=GRINNELL_CSV.name, preset=preset.pk)
    batch = ImportBatch.objects.get()
    assert batch.preset == preset and batch.mapping["handle"] == "Handle URL" and batch.source_system == "alma"
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(reverse("admin:handles_repair_importbatch_change", args=[batch.pk]),
                          _mapping(grinnell_prefix))
    batch.refresh_from_db()
    assert batch.counts["conflict"] == 4 and batch.counts["new"] == 12078
    conflicts = staff_client.get(reverse("admin:handles_repair_importbatch_change", args=[batch.pk]) + "?outcome=conflict")
    assert b"11084/1750186419" in conflicts.content and b"11084/1749071023" in conflicts.content


@pytest.mark.parametrize(("content", "message"), [
    (b"PK\x03\x04binary", b"spreadsheet workbook"),
    (b"Handle,Handle\n11084/1,x\n", b"appears twice in the header"),
    ("Handle;URL\n".encode("utf-16"), b"UTF-16"),
    (b"Handle,Title\n11084/1,caf\xe9\n", b"not valid utf-8"),
    (b"", b"The submitted file is empty"),
])
def test_broken_files_get_a_message_not_a_500(staff_client, grinnell_prefix, content, message):
    response = _upload(staff_client, content)
    assert response.status_code == 200
    assert message in response.content
    assert not ImportBatch.objects.exists()


def test_a_preset_with_a_bad_template_is_refused_in_its_form(client, superuser):
    client.force_login(superuser)
    response = client.post(reverse("admin:handles_repair_importpreset_add"), {
        "name": "bad", "handle_column": "Handle", "url_template": "https://x.example/{mms}", "mode": "adopt",
        "encoding": "utf-8", "delimiter": "auto"})
    assert response.status_code == 200 and b"may use {external_id}" in response.content
    assert not ImportPreset.objects.exists()


def test_a_mapping_that_cannot_read_the_file_is_refused(staff_client, grinnell_prefix):
    _upload(staff_client, "Title,Note\nA,B\n")
    batch = ImportBatch.objects.get()
    response = staff_client.post(reverse("admin:handles_repair_importbatch_change", args=[batch.pk]),
                                 {"column_title": "Title", "mode": "adopt", "prefix": grinnell_prefix.pk})
    assert response.status_code == 200 and b"Map the column holding the handle" in response.content
    assert (ImportBatch.objects.get().step, ImportBatch.objects.get().state) == ("upload", "done")


def test_report_csv_neutralises_formulas(staff_client, grinnell_prefix, django_capture_on_commit_callbacks):
    _upload(staff_client, 'Handle URL,dc:title\n11084/5,"=cmd|\' /C calc\'!A0"\n11084/6,"+SUM(A1)"\n')
    batch = ImportBatch.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(reverse("admin:handles_repair_importbatch_change", args=[batch.pk]),
                          _mapping(grinnell_prefix, column_external_id="", url_template="https://x.example/{suffix}"))
    batch.refresh_from_db()
    assert batch.counts == {"invalid": 2, "rows": 2, "vendor": 0}
    body = b"".join(staff_client.get(reverse("admin:handles_repair_importbatch_report", args=[batch.pk])).streaming_content)
    lines = body.decode("utf-8-sig").splitlines()
    assert "looks like a spreadsheet formula" in lines[1]
    assert all(not cell.startswith(("=", "+", "-", "@")) for line in lines[1:] for cell in line.split(","))


def test_reconciliation_page_and_repair_preview(staff_client, grinnell_live, site, django_capture_on_commit_callbacks):
    url = primo_page(site, "991", "Plate")
    server_put(grinnell_live, "11084/1742400039", url)
    HandleFactory(prefix=grinnell_live, suffix="99", target_url=url)
    start = staff_client.get(reverse("admin:handles_repair_reconciliationrun_add"))
    assert start.status_code == 200
    assert b"Scheduled: every prefix is reconciled by the task queue (daily" in start.content
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(reverse("admin:handles_repair_reconciliationrun_add"),
                                     {"prefix": grinnell_live.pk})
    run = ReconciliationRun.objects.get()
    assert response["Location"].endswith(f"/{run.pk}/change/")
    page = staff_client.get(response["Location"])
    assert page.status_code == 200 and run.counts["missing"] == 1 and run.counts["orphan"] == 1
    assert b"11084/1742400039" in page.content and b"vendor" in page.content
    preview = staff_client.post(reverse("admin:handles_repair_reconciliationrun_repair", args=[run.pk]),
                                {"kinds": ["missing"], "rows": ""})
    assert preview.status_code == 200 and b"Queue this repair" in preview.content
    assert not HandleRequest.objects.exists()  # the dry run changed nothing
    orphan = run.rows.get(kind=ReconciliationRow.Kind.ORPHAN)
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(reverse("admin:handles_repair_reconciliationrun_repair", args=[run.pk]),
                          {"rows": str(orphan.pk), "confirm": "1"})
    orphan.refresh_from_db()
    assert orphan.repair_request.status == "success"  # adopted, then verified on the server
    assert run.rows.get(kind="missing").repair_request is None  # only the chosen row was repaired
    csv_body = b"".join(staff_client.get(reverse("admin:handles_repair_reconciliationrun_rows",
                                                 args=[run.pk])).streaming_content)
    assert b"orphan,11084/1742400039" in csv_body


def test_health_page_with_trend_and_failing_export(staff_client, grinnell_prefix):
    handle = HandleFactory(prefix=grinnell_prefix, suffix="7", asset=AssetFactory(title="=HYPERLINK(evil)"))
    for share in (0.5, 1.0):
        run = HealthRun.objects.create(state=JobState.DONE, progress_total=2, counts={"correct": int(2 * share),
                                                                                      "broken": 2 - int(2 * share)})
    HandleCheck.objects.create(handle=handle, run=run, checked_at="2025-12-08T11:51:26Z", outcome=HealthOutcome.WRONG_OBJECT,
                               final_url="https://example.org/other", detail="Lands on another object")
    page = staff_client.get(reverse("admin:handles_repair_healthrun_changelist"))
    assert page.status_code == 200
    assert b"<svg" in page.content and b"50.0% of 2 resolve correctly" in page.content
    assert b"11084/7" in page.content and b"Start a health check" in page.content
    body = b"".join(staff_client.get(reverse("admin:handles_repair_healthrun_failing")).streaming_content)
    assert "11084/7,wrong_object" in body.decode("utf-8-sig") and ",'=HYPERLINK(evil)," in body.decode("utf-8-sig")


def test_start_a_health_check_from_the_admin(staff_client, grinnell_live, site, settings,
                                             django_capture_on_commit_callbacks):
    settings.HANDLES_HEALTH_ALLOW_PRIVATE = True
    settings.HANDLES_HEALTH_HOST_INTERVAL = 0
    url = primo_page(site, "9911", "Plate")
    server_put(grinnell_live, "11084/5", url)
    HandleFactory(prefix=grinnell_live, suffix="5", target_url=url)
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(reverse("admin:handles_repair_healthrun_changelist"),
                                     {"prefixes": [grinnell_live.pk], "status": "active"})
    run = HealthRun.objects.get()
    assert response["Location"].endswith(f"/{run.pk}/change/")
    assert run.counts == {"correct": 1} and run.filters == {"prefix_ids": [grinnell_live.pk], "status": "active"}
    assert staff_client.get(response["Location"]).status_code == 200


def test_asset_with_several_handles_choose_primary(staff_client, grinnell_prefix, django_capture_on_commit_callbacks):
    grinnell_prefix.vendor_suffix_pattern = r"^\d{10}$"
    grinnell_prefix.save()
    asset = AssetFactory(url="https://example.org/99")
    legacy = HandleFactory(prefix=grinnell_prefix, suffix="99", asset=asset, is_primary=True, target_url=asset.url)
    vendor = HandleFactory(prefix=grinnell_prefix, suffix="1742400039", asset=asset, target_url="https://old.example/x")
    changelist = staff_client.get(reverse("admin:handles_repair_assetwithseveralhandles_changelist"))
    assert changelist.status_code == 200 and b"11084/99" in changelist.content
    url = reverse("admin:handles_repair_assetwithseveralhandles_change", args=[asset.pk])
    page = staff_client.get(url)
    assert b"vendor" in page.content and b"primary" in page.content
    with django_capture_on_commit_callbacks(execute=False):
        staff_client.post(url, {"primary": legacy.pk})
    vendor.refresh_from_db()
    assert vendor.target_url == asset.url  # the other handle follows the primary's target (queued redirect)
    assert HandleRequest.objects.get(handle=vendor).action == HandleRequest.Action.REDIRECT


def test_staff_without_the_repair_permissions_see_nothing(client, grinnell_prefix):
    from tests.factories import UserFactory

    client.force_login(UserFactory(username="intern"))  # staff, in no group
    batch = ImportBatch.objects.create(file_name="x.csv", file_sha256="0", content=b"h\n", header=["h"])
    for url in (reverse("admin:handles_repair_importbatch_change", args=[batch.pk]),
                reverse("admin:handles_repair_importbatch_status", args=[batch.pk]),
                reverse("admin:handles_repair_importbatch_report", args=[batch.pk]),
                reverse("admin:handles_repair_healthrun_changelist"),
                reverse("admin:handles_repair_healthrun_failing")):
        assert client.get(url).status_code == 403, url


def test_collection_managers_look_but_cannot_start_anything(client, manager_user, grinnell_prefix):
    client.force_login(manager_user)
    assert client.get(reverse("admin:handles_repair_importbatch_changelist")).status_code == 200
    assert client.get(reverse("admin:handles_repair_healthrun_changelist")).status_code == 200
    assert client.get(reverse("admin:handles_repair_importbatch_add")).status_code == 403
    assert client.get(reverse("admin:handles_repair_reconciliationrun_add")).status_code == 403
    assert _upload(client, LEGACY).status_code == 403
    assert client.post(reverse("admin:handles_repair_healthrun_changelist"), {}).status_code == 403
    assert not ImportBatch.objects.exists() and not HealthRun.objects.exists()
    assert not ImportRow.objects.exists()
