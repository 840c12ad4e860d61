"""Legacy import: what each line of a real file becomes, applying in one step, and nothing half-done."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from handles import services as core
from handles.models import Asset, Handle, HandleRequest
from handles.repair import services
from handles.repair.csvfile import ImportFileError
from handles.repair.models import ImportBatch, ImportMode, ImportPreset, ImportRow
from tests.factories import AssetFactory, HandleFactory
from tests.repair.conftest import GRINNELL_CSV, PRIMO, primo_page, server_put, server_url

Outcome = ImportRow.Outcome


def dry_run(content: str | bytes, prefix=None, *, mapping=None, source_system="alma", url_template="",
            mode=ImportMode.ADOPT, encoding="utf-8") -> ImportBatch:
    data = content.encode("utf-8") if isinstance(content, str) else content
    batch = services.import_batch_create(file_name="t.csv", content=data, encoding=encoding, via="test")
    batch = services.import_batch_configure(batch=batch, mapping=mapping or batch.mapping, prefix=prefix,
                                            source_system=source_system, url_template=url_template, mode=mode)
    return services.import_batch_analyse(batch.pk)


def outcomes(batch: ImportBatch) -> list[tuple[int, str, str]]:
    return list(batch.rows.order_by("line").values_list("line", "handle_text", "outcome"))


def test_grinnell_report_imports_with_its_template_and_reports_its_two_conflicting_handles(grinnell_prefix):
    batch = dry_run(GRINNELL_CSV.read_bytes(), grinnell_prefix)
    assert batch.counts == {"rows": 12082, "new": 12078, "conflict": 4, "vendor": 807}
    conflicts = batch.rows.filter(outcome=Outcome.CONFLICT).order_by("line")
    assert sorted({r.handle_text for r in conflicts}) == ["11084/1749071023", "11084/1750186419"]
    assert "lines 354, 355" in conflicts[0].reason and "none of them is imported" in conflicts[0].reason
    row = batch.rows.get(line=2)  # first data line: 991011585443104641, 11084/35233
    assert row.target_url == PRIMO.format(external_id="991011585443104641")
    assert (row.source_system, row.external_id, row.vendor, row.primary) == ("alma", "991011585443104641", False, True)
    assert batch.rows.get(handle_text="11084/1742929396").vendor


def test_handle_forms_bom_whitespace_and_duplicates(grinnell_prefix):
    content = ("\ufeffHandle URL , MMS ID\n"
               "  hdl:11084/1 ,  m1 \n"
               "http://hdl.handle.net/11084/2,m2\n"
               "https://hdl.handle.net/11084/3,m3\n"
               "HTTPS://HDL.HANDLE.NET/11084/4,m4\n"
               "11084/5,m5\n"
               "\n"
               "hdl:11084/1,m1\n"
               "11084/2,m9\n")
    batch = dry_run(content, grinnell_prefix)
    assert outcomes(batch) == [
        (2, "11084/1", "new"), (3, "11084/2", "conflict"), (4, "11084/3", "new"), (5, "11084/4", "new"),
        (6, "11084/5", "new"), (8, "11084/1", "duplicate"), (9, "11084/2", "conflict")]
    assert batch.rows.get(line=8).reason == "Repeats line 2."
    assert batch.rows.get(line=2).external_id == "m1"  # stray whitespace stripped


def test_invalid_lines_say_why(grinnell_prefix):
    grinnell_prefix.url_template = ""
    grinnell_prefix.save()
    content = ("handle,url\n"
               "11084/ok,https://example.org/ok\n"
               "nope,https://example.org/a\n"
               "99999/1,https://example.org/b\n"
               "11084/x,javascript:alert(1)\n"
               "11084/y,\n"
               "11084/a/../b,https://example.org/c\n")
    batch = dry_run(content, None, mapping={"handle": "handle", "url": "url"}, source_system="")
    reasons = dict(batch.rows.values_list("line", "reason"))
    assert batch.counts["new"] == 1 and batch.counts["invalid"] == 5
    assert "not a handle" in reasons[3]
    assert "The prefix 99999 is not configured here" in reasons[4]
    assert "must start with http:// or https://" in reasons[5]
    assert "No target URL" in reasons[6]
    assert "'..' path segments" in reasons[7]


def test_targets_from_a_column_the_prefix_template_or_the_import_template(grinnell_prefix):
    content = "Handle,MMS ID,Link\n11084/1,111,https://col.example/1\n11084/2,222,\n"
    batch = dry_run(content, grinnell_prefix, mapping={"handle": "Handle", "external_id": "MMS ID", "url": "Link"})
    assert list(batch.rows.order_by("line").values_list("target_url", flat=True)) == [
        "https://col.example/1", PRIMO.format(external_id="222")]
    batch = dry_run(content, grinnell_prefix, mapping={"handle": "Handle", "external_id": "MMS ID"},
                    url_template="https://dams.example/{source_system}/{external_id}?h={suffix}")
    assert batch.rows.get(line=3).target_url == "https://dams.example/alma/222?h=2"


def test_a_template_placeholder_without_a_value_is_a_reasoned_invalid_line(grinnell_prefix):
    batch = dry_run("Handle,MMS ID\n11084/1,\n", grinnell_prefix)
    assert batch.rows.get().reason == "The URL template needs {external_id}, which this row does not give."


def test_bad_templates_and_mappings_are_refused_before_the_dry_run(grinnell_prefix):
    batch = services.import_batch_create(file_name="t.csv", content=b"Handle,Title\n11084/1,x\n")
    with pytest.raises(core.HandleServiceError, match=r"may use \{external_id\}"):
        services.import_batch_configure(batch=batch, mapping={"handle": "Handle"}, prefix=grinnell_prefix,
                                        url_template="https://x.example/{mms}")
    with pytest.raises(core.HandleServiceError, match="'Nope' is not in the file"):
        services.import_batch_configure(batch=batch, mapping={"handle": "Nope"}, prefix=grinnell_prefix)


def test_compared_with_our_records(grinnell_prefix):
    asset = AssetFactory(source_system="alma", external_id="1")
    HandleFactory(prefix=grinnell_prefix, suffix="same", target_url=PRIMO.format(external_id="1"), asset=asset)
    HandleFactory(prefix=grinnell_prefix, suffix="OTHERURL", target_url="https://elsewhere.example/")
    HandleFactory(prefix=grinnell_prefix, suffix="otherasset", target_url=PRIMO.format(external_id="3"),
                  asset=AssetFactory(source_system="alma", external_id="x"))
    HandleFactory(prefix=grinnell_prefix, suffix="gone", target_url=PRIMO.format(external_id="4"),
                  status=Handle.Status.DELETED)
    content = "Handle,MMS ID\n11084/SAME,1\n11084/otherurl,2\n11084/otherasset,3\n11084/gone,4\n"
    batch = dry_run(content, grinnell_prefix)
    rows = {r.line: r for r in batch.rows.all()}
    assert rows[2].outcome == "same"  # case-insensitive, like the Handle server
    assert (rows[3].outcome, rows[3].reason) == ("conflict", "Here it points to https://elsewhere.example/.")
    assert (rows[4].outcome, rows[4].reason) == ("conflict", "Here it identifies alma:x, not alma:3.")
    assert rows[5].reason == "This handle was deleted here; a deleted handle is never reused."


def test_apply_adopts_in_one_step_and_running_the_file_again_changes_nothing(grinnell_prefix,
                                                                              django_capture_on_commit_callbacks):
    content = "Handle URL,MMS ID,dc:title\n11084/99,m99,Letter\n11084/1742400039,m99,Letter\n11084/7,m7,Map\n"
    batch = dry_run(content, grinnell_prefix)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        batch = services.import_batch_apply(batch.pk)
    # Recorded; applied only once the server confirmed each handle (the verifications wait in `callbacks`).
    assert batch.state == "verifying" and len(callbacks) == 1
    assert batch.verification["queued"] == 3 and batch.finished_at is None
    handles = {h.suffix: h for h in Handle.objects.select_related("asset")}
    assert {s: (h.status, h.is_primary, h.in_sync) for s, h in handles.items()} == {
        "99": ("active", True, False), "1742400039": ("active", False, False), "7": ("active", True, False)}
    assert handles["99"].asset == handles["1742400039"].asset  # two handles, one object
    assert handles["99"].asset.title == "Letter" and handles["99"].asset.url == PRIMO.format(external_id="m99")
    requests = HandleRequest.objects.all()
    assert {(r.op, r.full_handle, r.url) for r in requests} == {
        ("verify", f"11084/{s}", h.target_url) for s, h in handles.items()}
    linked = batch.rows.filter(outcome=Outcome.NEW, handle__isnull=False, request__isnull=False).count()
    assert linked == 3

    # A second delivery of the apply task changes nothing and keeps the import as it was.
    assert services.import_batch_apply(batch.pk).state == "verifying"
    assert Handle.objects.count() == 3 and not ImportBatch.objects.get(pk=batch.pk).error
    assert services.import_batch_analyse(batch.pk).state == "verifying"  # nor a late dry run

    again = dry_run(content, grinnell_prefix)
    assert again.counts == {"rows": 3, "same": 3, "vendor": 1}
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.import_batch_apply(again.pk)
    assert callbacks == [] and Handle.objects.count() == 3 and HandleRequest.objects.count() == 3
    assert Asset.objects.count() == 2
    assert ImportBatch.objects.get(pk=again.pk).applied  # nothing queued: nothing to verify


def test_a_vendor_handle_is_primary_only_of_an_asset_without_a_legacy_one(grinnell_prefix):
    content = "Handle URL,MMS ID\n11084/1742400039,m1\n11084/99,m1\n11084/1742400040,m2\n"
    batch = dry_run(content, grinnell_prefix)
    assert dict(batch.rows.values_list("handle_text", "primary")) == {
        "11084/1742400039": False, "11084/99": True, "11084/1742400040": True}


def test_an_error_leaves_nothing_half_applied(grinnell_prefix, django_capture_on_commit_callbacks):
    content = "Handle URL,MMS ID\n" + "".join(f"11084/{n},m{n}\n" for n in range(1, 2501))
    batch = dry_run(content, grinnell_prefix)
    # Someone mints one of the file's handles between the dry run and the apply (in the second chunk).
    core.handle_mint(prefix=grinnell_prefix, suffix="2400", target_url="https://example.org/minted")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        batch = services.import_batch_apply(batch.pk)
    assert batch.analysed
    assert "11084/2400 was created here" in batch.error and "Nothing was applied" in batch.error
    assert Handle.objects.count() == 1 and Asset.objects.count() == 0 and callbacks == []
    assert not batch.rows.filter(handle__isnull=False).exists()


def test_apply_only_follows_a_dry_run(grinnell_prefix):
    batch = services.import_batch_create(file_name="t.csv", content=b"Handle URL,MMS ID\n11084/1,m1\n")
    with pytest.raises(core.HandleServiceError, match="apply follows a finished dry run"):
        services.import_batch_start_apply(batch=batch)
    assert services.import_batch_apply(batch.pk).step == ImportBatch.Step.UPLOAD
    assert not Handle.objects.exists()


def test_push_mode_creates_the_missing_and_updates_the_mismatched(run_queue, grinnell_live, site):
    pages = [primo_page(site, m, m) for m in ("111", "222", "333")]
    server_put(grinnell_live, "11084/1", pages[0])  # right already
    server_put(grinnell_live, "11084/2", site.base_url + "/another-object")  # wrong; 11084/3 is missing
    content = "Handle URL,MMS ID\n11084/1,111\n11084/2,222\n11084/3,333\n"
    batch = dry_run(content, grinnell_live, mode=ImportMode.PUSH)
    batch = run_queue(services.import_batch_apply, batch.pk)
    batch.refresh_from_db()
    assert batch.applied and not batch.error
    ops = dict(HandleRequest.objects.values_list("full_handle", "op"))
    assert ops == {"11084/1": "verify", "11084/2": "update", "11084/3": "create"}
    assert set(HandleRequest.objects.values_list("status", flat=True)) == {"success"}
    assert [server_url(grinnell_live, f"11084/{n}") for n in (1, 2, 3)] == pages
    assert set(Handle.objects.values_list("status", flat=True)) == {"active"}
    assert all(h.in_sync for h in Handle.objects.all())


def test_push_mode_when_the_server_does_not_answer_then_continues(run_queue, grinnell_live, grinnell_server, site):
    page = primo_page(site, "444", "Four")
    batch = dry_run("Handle URL,MMS ID\n11084/4,444\n", grinnell_live, mode=ImportMode.PUSH)
    grinnell_server.set_fault("503")
    batch = run_queue(services.import_batch_apply, batch.pk)
    batch.refresh_from_db()
    # Nothing could be pushed: the import is incomplete, and says how to go on.
    assert batch.state == "incomplete" and batch.verification["unpushed"] == 1
    assert "1 of 1 handle was not verified" in batch.error and "Continue pushing" in batch.error
    assert Handle.objects.get().status == "pending" and not HandleRequest.objects.exists()
    grinnell_server.clear_faults()
    run_queue(services.import_batch_continue_push, batch=batch)
    batch.refresh_from_db()
    assert batch.applied and batch.verification["success"] == 1
    assert not batch.error and HandleRequest.objects.get().status == "success"
    assert server_url(grinnell_live, "11084/4") == page and Handle.objects.get().status == "active"


def test_command_dry_run_apply_presets_and_report(grinnell_prefix, tmp_path, capsys,
                                                   django_capture_on_commit_callbacks):
    path = tmp_path / "legacy.csv"
    path.write_text("Identifier;Object\nhdl:11084/10;m10\nhdl:11084/11;m11\n", encoding="cp1252")
    report = tmp_path / "report.csv"
    call_command("import_handles", str(path), "--handle-column", "Identifier", "--external-id-column", "Object",
                 "--source-system", "alma", "--encoding", "cp1252", "--save-preset", "semicolons",
                 "--report", str(report))
    out = capsys.readouterr().out
    assert "2 lines: 2 new" in out and "Dry run: nothing was recorded" in out
    assert not Handle.objects.exists()
    assert report.read_text(encoding="utf-8-sig").splitlines()[1].startswith("2,11084/10,new,")
    assert ImportPreset.objects.get(name="semicolons").handle_column == "Identifier"
    with django_capture_on_commit_callbacks(execute=False):
        call_command("import_handles", str(path), "--preset", "semicolons", "--apply")
    assert "Applied: 2 handles recorded" in capsys.readouterr().out
    assert Handle.objects.count() == 2


@pytest.mark.parametrize("first_line", [
    "11084/99,https://primo.example.edu/99",
    "hdl:11084/99,Letter",
    "https://hdl.handle.net/11084/99;991011585443104641",
    "991011585443104641,http://hdl.handle.net/11084/99",
])
def test_a_file_without_a_header_line_is_refused_instead_of_losing_its_first_handle(grinnell_prefix, first_line):
    content = f"{first_line}\n{first_line.replace('99', '100')}\n".encode()
    with pytest.raises(ImportFileError, match=r"The first line holds data, not column names: column \d is") as refused:
        services.import_batch_create(file_name="no-header.csv", content=content, via="test")
    assert "add such a line at the top" in str(refused.value)
    assert not ImportBatch.objects.exists()


def test_column_names_that_mention_handles_and_urls_are_still_names(grinnell_prefix):
    batch = dry_run("Handle/URL,Target URL,MMS ID\n11084/99,https://primo.example.edu/99,99\n", grinnell_prefix,
                    mapping={"handle": "Handle/URL", "target_url": "Target URL", "external_id": "MMS ID"})
    assert outcomes(batch) == [(2, "11084/99", Outcome.NEW)]


def test_command_refuses_clearly(grinnell_prefix, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"a,a\n1,2\n")
    with pytest.raises(CommandError, match="appears twice in the header"):
        call_command("import_handles", str(bad))
    headless = tmp_path / "headless.csv"
    headless.write_text("11084/1,https://primo.example.edu/1\n11084/2,https://primo.example.edu/2\n")
    with pytest.raises(CommandError, match="The first line holds data, not column names"):
        call_command("import_handles", str(headless))
    with pytest.raises(CommandError, match="No preset named 'nope'"):
        call_command("import_handles", str(bad), "--preset", "nope")
    good = tmp_path / "good.csv"
    good.write_text("h\n11084/1\n")
    with pytest.raises(CommandError, match="not in the file"):
        call_command("import_handles", str(good), "--handle-column", "handle")
