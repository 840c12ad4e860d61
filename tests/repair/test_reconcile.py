"""Reconciliation against the simulator: every class of drift, repairs by class and by row, the command."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_q.models import Schedule

from handles.models import Handle, HandleRequest
from handles.repair import reconcile, selectors, services
from handles.repair.models import JobState, ReconciliationRow, ReconciliationRun
from tests.factories import HandleFactory
from tests.repair.conftest import server_put, server_url

Kind = ReconciliationRow.Kind


@pytest.fixture
def drifted(grinnell_live):
    """One handle of each class; our suffixes lower-case, the server lists them upper-cased."""
    p = grinnell_live
    made = {
        "in_sync": HandleFactory(prefix=p, suffix="insync", target_url="https://ex.org/1"),
        "missing": HandleFactory(prefix=p, suffix="missing", target_url="https://ex.org/2"),
        "differs": HandleFactory(prefix=p, suffix="differs", target_url="https://ex.org/3"),
        "deleted": HandleFactory(prefix=p, suffix="deleted", target_url="https://ex.org/4", status=Handle.Status.DELETED),
        "gone": HandleFactory(prefix=p, suffix="gone", target_url="https://ex.org/5", status=Handle.Status.DELETED),
        "tomb": HandleFactory(prefix=p, suffix="tomb", target_url="https://ex.org/6", status=Handle.Status.TOMBSTONED),
        "tomb_ok": HandleFactory(prefix=p, suffix="tombok", target_url="https://ex.org/7",
                                 status=Handle.Status.TOMBSTONED),
    }
    server_put(p, "11084/insync", "https://ex.org/1")
    server_put(p, "11084/differs", "https://ex.org/other")
    server_put(p, "11084/deleted", "https://ex.org/4")
    server_put(p, "11084/tomb", "https://ex.org/6")
    server_put(p, "11084/tombok", made["tomb_ok"].tombstone_url)
    server_put(p, "11084/1742400039", "https://ex.org/vendor")
    return made


def reconcile_now(run_queue, prefix) -> ReconciliationRun:
    run = run_queue(services.reconciliation_start, prefix=prefix)
    run.refresh_from_db()
    assert run.state == JobState.DONE, run.error
    return run


def test_every_class_is_found_and_only_drift_is_stored(run_queue, grinnell_live, drifted):
    run = reconcile_now(run_queue, grinnell_live)
    rows = {r.full_handle: r for r in run.rows.all()}
    assert {name: r.kind for name, r in rows.items()} == {
        "11084/missing": Kind.MISSING, "11084/differs": Kind.URL_DIFFERS, "11084/deleted": Kind.DELETED_ON_SERVER,
        "11084/tomb": Kind.TOMBSTONE_DRIFT, "11084/1742400039": Kind.ORPHAN}
    assert run.counts["in_sync"] == 3  # insync, tombok, and "gone" (deleted here and absent there)
    assert run.counts["listed"] == 6 and run.counts["admin"] == 1  # 11084/ADMIN is never ours to judge
    assert run.counts["vendor"] == 1 and rows["11084/1742400039"].vendor
    assert (rows["11084/differs"].server_url, rows["11084/differs"].our_url) == ("https://ex.org/other",
                                                                                 "https://ex.org/3")
    assert rows["11084/tomb"].our_url == drifted["tomb"].tombstone_url
    assert run.progress_done == run.progress_total > 0


def test_repair_every_class_through_the_queue(run_queue, grinnell_live, drifted):
    run = reconcile_now(run_queue, grinnell_live)
    plan = selectors.repair_plan(run, kinds=Kind.values)
    assert plan.total == 5 and not HandleRequest.objects.exists()
    job = run_queue(services.repair_start, run=run, kinds=Kind.values)
    job.refresh_from_db()
    assert job.counts == {"create": 1, "update": 2, "delete": 1, "adopt": 1}
    assert selectors.repair_verification(run) == {"success": 5}
    assert server_url(grinnell_live, "11084/missing") == "https://ex.org/2"
    assert server_url(grinnell_live, "11084/differs") == "https://ex.org/3"
    assert server_url(grinnell_live, "11084/deleted") is None
    assert server_url(grinnell_live, "11084/tomb") == drifted["tomb"].tombstone_url
    adopted = Handle.objects.get(suffix_key="1742400039")
    assert (adopted.status, adopted.target_url, adopted.in_sync) == ("active", "https://ex.org/vendor", True)
    assert reconcile_now(run_queue, grinnell_live).drift == 0
    # Repaired rows are not repaired twice.
    assert selectors.repair_plan(run, kinds=Kind.values).total == 0


def test_repair_by_row_and_a_row_whose_handle_changed_meanwhile(run_queue, grinnell_live, drifted):
    from handles import services as core

    run = reconcile_now(run_queue, grinnell_live)
    missing = run.rows.get(kind=Kind.MISSING)
    differs = run.rows.get(kind=Kind.URL_DIFFERS)
    run_queue(core.handle_delete, handle=drifted["differs"])  # staff deleted it since the reconciliation
    job = run_queue(services.repair_start, run=run, row_ids=[missing.pk, differs.pk])
    job.refresh_from_db()
    assert job.counts == {"create": 1, "skipped": 1}
    differs.refresh_from_db()
    assert differs.repair_request is None and "its status is now deleted" in differs.note
    assert run.rows.get(kind=Kind.ORPHAN).repaired_at is None  # not chosen, not touched


def test_unknown_prefix_on_the_server_fails_the_run_clearly(run_queue, grinnell_live):
    grinnell_live.prefix = "20.500.99999"
    grinnell_live.save()
    run = run_queue(services.reconciliation_start, prefix=grinnell_live)
    run.refresh_from_db()
    assert run.state == JobState.FAILED and "could not be read" in run.error


def test_a_second_delivery_of_the_task_does_nothing(run_queue, grinnell_live, drifted):
    run = reconcile_now(run_queue, grinnell_live)
    counts = run.counts
    again = reconcile.run(run.pk)
    assert again.counts == counts and again.state == JobState.DONE


def test_latest_result_for_the_dashboard_and_the_nightly_schedule(run_queue, grinnell_live, drifted):
    assert Schedule.objects.get(func="handles.repair.tasks.reconcile_all_prefixes").schedule_type == Schedule.DAILY
    older = ReconciliationRun.objects.create(prefix=grinnell_live, state=JobState.DONE, finished_at=timezone.now(),
                                             counts={"in_sync": 1})
    run = reconcile_now(run_queue, grinnell_live)
    [latest] = selectors.latest_reconciliations()
    assert latest.run_id == run.pk != older.pk
    assert (latest.prefix, latest.in_sync, latest.drift) == ("11084", 3, 5)


def test_the_scheduled_task_reconciles_every_prefix(run_queue, grinnell_live, drifted):
    from handles.repair import tasks

    result = run_queue(tasks.reconcile_all_prefixes)
    assert result == "started 1 reconciliation"
    assert ReconciliationRun.objects.get().state == JobState.DONE


def test_reconcile_command_with_dry_run_and_apply(grinnell_live, drifted, capsys, run_queue):
    call_command("reconcile", "11084", "--repair", "missing")
    out = capsys.readouterr().out
    assert "6 listed on the server, 3 in sync" in out and "Missing on the server: 1" in out
    assert "11084/1742400039 [vendor]" in out
    assert "Repair missing on the server: create it on the server with our url (1)" in out
    assert "Dry run: nothing was queued" in out and not HandleRequest.objects.exists()
    run_queue(call_command, "reconcile", "11084", "--repair", "missing", "--apply")
    assert "Repair #" in capsys.readouterr().out
    assert server_url(grinnell_live, "11084/missing") == "https://ex.org/2"
    with pytest.raises(CommandError, match="not configured here"):
        call_command("reconcile", "99999")
