"""Import conflicts stay visible: a handle the file cites for two records is listed with both records and
where the server resolves it now; staff choose the record that keeps it, through the services and the
queue. import_handles exits non-zero when lines were left out, and the admin says so."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from handles.models import Handle, HandleRequest
from handles.repair import services
from handles.repair.models import ConflictResolution, ImportBatch, ImportRow
from tests.repair.conftest import GRINNELL_CSV, primo_page, server_put, server_url

# 11084/500 is cited for two records; the server resolves it to the second one's page. One line is invalid.
FILE = ("MMS ID,Handle URL,dc:title\n"
        "111,http://hdl.handle.net/11084/500,\"Correspondence to Isabella, 1908, Letter One\"\n"
        "222,http://hdl.handle.net/11084/500,\"Correspondence to Isabella, 1908, Letter Two\"\n"
        "333,http://hdl.handle.net/11084/501,Plate\n"
        "444,http://hdl.handle.net/99999/1,Another library's handle\n")


@pytest.fixture
def conflicted(grinnell_live, site, tmp_path):
    pages = {mms: primo_page(site, mms, title) for mms, title in (("111", "One"), ("222", "Two"), ("333", "Plate"))}
    server_put(grinnell_live, "11084/500", pages["222"])
    path = tmp_path / "report.csv"
    path.write_text(FILE, encoding="utf-8")
    return path, pages


def test_the_command_exits_non_zero_when_lines_were_left_out_and_reads_the_server(conflicted, capsys):
    path, pages = conflicted
    with pytest.raises(CommandError) as left_out:
        call_command("import_handles", str(path), "--source-system", "alma")
    assert left_out.value.returncode == 3
    message = str(left_out.value)
    assert "3 lines left out: 2 conflict, 1 invalid." in message
    assert "2 of the conflicting lines cite a handle the file gives to several records" in message
    assert "Commonest reasons:" in message and "(1x)" in message
    rows = ImportRow.objects.filter(outcome=ImportRow.Outcome.CONFLICT)
    assert set(rows.values_list("server_url", flat=True)) == {pages["222"]}
    # A clean file exits 0.
    clean = path.with_name("clean.csv")
    clean.write_text("MMS ID,Handle URL\n333,http://hdl.handle.net/11084/501\n", encoding="utf-8")
    call_command("import_handles", str(clean), "--source-system", "alma")


def test_applied_with_lines_left_out_still_exits_non_zero(conflicted, django_capture_on_commit_callbacks):
    path, _ = conflicted
    with django_capture_on_commit_callbacks(execute=False), pytest.raises(CommandError) as left_out:
        call_command("import_handles", str(path), "--source-system", "alma", "--apply")
    assert left_out.value.returncode == 3
    assert Handle.objects.get().full_handle == "11084/501"  # what could be applied was applied


def _analysed(path, prefix) -> ImportBatch:
    from handles.repair import tasks

    batch = services.import_batch_create(file_name=path.name, content=path.read_bytes(), via="test")
    services.import_batch_configure(batch=batch, mapping=batch.mapping, prefix=prefix, source_system="alma")
    services.import_batch_start_analysis(batch=batch)  # as the admin starts it (its hand-over not run here)
    tasks.analyse_import(batch.pk)  # the task: the dry run, then the server read for the conflicts
    return ImportBatch.objects.get(pk=batch.pk)


def test_the_conflicts_page_lists_both_records_and_where_the_server_resolves(conflicted, grinnell_live, staff_client):
    path, pages = conflicted
    batch = _analysed(path, grinnell_live)
    page = staff_client.get(reverse("admin:handles_repair_importbatch_change", args=[batch.pk]))
    assert b"3 lines left out" in page.content and b"Resolve the conflicts" in page.content
    conflicts = staff_client.get(reverse("admin:handles_repair_importbatch_conflicts", args=[batch.pk]))
    text = conflicts.content.decode()
    assert conflicts.status_code == 200 and "11084/500" in text
    assert "alma:111" in text and "alma:222" in text and "Letter One" in text and "Letter Two" in text
    assert pages["222"] in text and "(line 3)" in text  # the server resolves it to line 3's record
    assert "where it resolves now" in text and "11084/501" not in text  # only the conflicting handle


def test_staff_choose_the_record_that_keeps_the_handle_the_other_gets_a_new_one(conflicted, grinnell_live,
                                                                                staff_client, run_queue):
    path, pages = conflicted
    batch = _analysed(path, grinnell_live)
    one, two = ImportRow.objects.filter(batch=batch, outcome=ImportRow.Outcome.CONFLICT).order_by("line")
    url = reverse("admin:handles_repair_importbatch_conflicts", args=[batch.pk])
    response = run_queue(staff_client.post, url, {"keep": one.pk, "others": "new_handle"})
    assert response.status_code == 302
    one.refresh_from_db()
    two.refresh_from_db()
    assert (one.resolution, two.resolution) == (ConflictResolution.KEPT, ConflictResolution.NEW_HANDLE)
    kept = Handle.objects.get(prefix=grinnell_live, suffix="500")
    assert kept.asset.external_id == "111" and kept.target_url == pages["111"]
    # Through the queue: the server now resolves the handle to the chosen record (an update, verified).
    assert HandleRequest.objects.get(pk=one.request_id).status == "success"
    assert server_url(grinnell_live, "11084/500") == pages["111"]
    minted = Handle.objects.get(pk=two.handle_id)
    assert minted.asset.external_id == "222" and minted.suffix != "500"
    assert server_url(grinnell_live, minted.full_handle) == pages["222"]
    assert minted.full_handle in two.resolution_note
    # Once resolved, it stays resolved.
    run_queue(staff_client.post, url, {"keep": two.pk, "others": "flag"})
    assert Handle.objects.filter(prefix=grinnell_live, suffix="500").get().asset.external_id == "111"
    page = staff_client.get(url)
    assert "Keeps the handle" in page.content.decode() and "Given a new handle" in page.content.decode()


def test_keeping_the_record_the_server_already_resolves_to_verifies_and_flags_the_other(conflicted, grinnell_live,
                                                                                       run_queue):
    path, pages = conflicted
    batch = _analysed(path, grinnell_live)
    one, two = ImportRow.objects.filter(batch=batch, outcome=ImportRow.Outcome.CONFLICT).order_by("line")
    run_queue(services.import_conflict_resolve, batch=batch, keep_row_id=two.pk, others="flag")
    request = HandleRequest.objects.get(handle__suffix="500")
    assert request.op == HandleRequest.Op.VERIFY and request.status == "success"
    one.refresh_from_db()
    assert one.resolution == ConflictResolution.FLAGGED and "line 3 keeps 11084/500" in one.resolution_note
    assert Handle.objects.count() == 1


def test_bad_choices_are_refused_clearly(conflicted, grinnell_live, staff_client):
    path, _ = conflicted
    batch = _analysed(path, grinnell_live)
    new = ImportRow.objects.get(batch=batch, handle_text="11084/501")
    url = reverse("admin:handles_repair_importbatch_conflicts", args=[batch.pk])
    page = staff_client.post(url, {"keep": new.pk, "others": "flag"}, follow=True)
    assert "not one of this import&#x27;s conflicting lines" in page.content.decode()
    page = staff_client.post(url, {"others": "flag"}, follow=True)
    assert "Choose the record that keeps the handle." in page.content.decode()
    assert not Handle.objects.exists()


def test_the_grinnell_reports_two_conflicts_are_listed(grinnell_prefix, staff_client):
    batch = services.import_batch_create(file_name="grinnell.csv", content=GRINNELL_CSV.read_bytes(), via="test")
    services.import_batch_configure(batch=batch, mapping=batch.mapping, prefix=grinnell_prefix, source_system="alma")
    services.import_batch_analyse(batch.pk)
    from handles.repair.conflicts import conflict_groups

    groups = conflict_groups(batch.pk)
    assert sorted(g.handle_text for g in groups) == ["11084/1749071023", "11084/1750186419"]
    assert all(len(g.rows) == 2 and g.rows[0].external_id != g.rows[1].external_id for g in groups)
    page = staff_client.get(reverse("admin:handles_repair_importbatch_conflicts", args=[batch.pk]))
    assert b"11084/1749071023" in page.content and b"not read yet" in page.content


def test_reading_the_server_again_hands_one_task_to_the_queue(conflicted, grinnell_live, staff_client, monkeypatch,
                                                             django_capture_on_commit_callbacks):
    """The conflicts page's "read the server again": the read is one task, handed over once the POST commits
    (it once went through the job hand-over with arguments that no longer fit and failed on commit)."""
    from handles.repair import tasks

    path, pages = conflicted
    batch = _analysed(path, grinnell_live)
    conflicting = ImportRow.objects.filter(batch=batch, outcome=ImportRow.Outcome.CONFLICT)
    conflicting.update(server_url="")
    queued = []
    monkeypatch.setattr("django_q.tasks.async_task", lambda func, *args, **kwargs: queued.append((func, args)))
    url = reverse("admin:handles_repair_importbatch_conflicts", args=[batch.pk])
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(url, {"_read_server": "1"})
    assert response.status_code == 302
    assert queued == [("handles.repair.tasks.read_import_conflicts", (batch.pk,))]
    assert tasks.read_import_conflicts(batch.pk).startswith("1 conflicting handle")
    assert set(conflicting.values_list("server_url", flat=True)) == {pages["222"]}
