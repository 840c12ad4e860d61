"""Imports and repairs succeed only once the server confirmed each change: verifying, then applied/done or
incomplete (with how many failed and why), and a retry of the failed requests that brings them to done."""

from __future__ import annotations

import importlib

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from handles import jobs
from handles.exceptions import HandleStateError
from handles.models import Handle, HandleRequest
from handles.repair import reconcile, services
from handles.repair.models import ImportBatch, ImportMode, JobState, ReconciliationRow
from tests.factories import HandleFactory
from tests.migrations_at import migrate_to, migrate_to_latest
from tests.repair.conftest import client_of, primo_page, server_put, server_url

Kind = ReconciliationRow.Kind
ALL_VERIFIED = {"success": 0, "error": 0, "queued": 0, "running": 0, "unpushed": 0}


def tally(**counts: int) -> dict[str, int]:
    return {**ALL_VERIFIED, **counts}


def dry_run(content: str, prefix, mode=ImportMode.ADOPT) -> ImportBatch:
    batch = services.import_batch_create(file_name="legacy.csv", content=content.encode(), via="test")
    batch = services.import_batch_configure(batch=batch, mapping=batch.mapping, prefix=prefix, source_system="alma",
                                            mode=mode)
    return services.import_batch_analyse(batch.pk)


def run_all(run_queue, callbacks) -> None:
    """Run captured on-commit callbacks (the queue's hand-overs) and whatever they queue in turn."""
    run_queue(lambda: [callback() for callback in callbacks])


def reconciled(run_queue, prefix):
    run = run_queue(services.reconciliation_start, prefix=prefix)
    run.refresh_from_db()
    assert run.state == JobState.DONE, run.error
    return run


@pytest.fixture
def drift(grinnell_live):
    """One handle missing on the server, one whose URL differs there."""
    missing = HandleFactory(prefix=grinnell_live, suffix="missing", target_url="https://ex.org/m")
    differs = HandleFactory(prefix=grinnell_live, suffix="differs", target_url="https://ex.org/d")
    server_put(grinnell_live, "11084/differs", "https://ex.org/elsewhere")
    return missing, differs


# --- Repairs -----------------------------------------------------------------------------------------------
def test_a_repair_is_verifying_until_the_server_confirmed_each_change(run_queue, grinnell_live, drift,
                                                                       django_capture_on_commit_callbacks, staff_client):
    run = reconciled(run_queue, grinnell_live)
    job = services.repair_start(run=run, kinds=[Kind.MISSING, Kind.URL_DIFFERS], enqueue=False)
    with django_capture_on_commit_callbacks() as pushes:
        job = services.repair_execute(job.pk)
    assert (job.state, job.counts, job.finished) == (JobState.VERIFYING, {"create": 1, "update": 1}, False)
    assert job.verification == tally(queued=2) and (job.progress_done, job.progress_total) == (0, 2)
    assert set(run.rows.values_list("repair_job", flat=True)) == {job.pk}
    status = staff_client.get(reverse("admin:handles_repair_repairjob_status", args=[job.pk])).json()
    assert (status["state"], status["finished"], status["verifying"]) == ("verifying", False, True)

    run_all(run_queue, pushes)
    job.refresh_from_db()
    assert (job.state, job.verification, job.error) == (JobState.DONE, tally(success=2), "")
    assert job.finished_at is not None and job.percent == 100
    assert server_url(grinnell_live, "11084/missing") == "https://ex.org/m"
    assert server_url(grinnell_live, "11084/differs") == "https://ex.org/d"
    page = staff_client.get(reverse("admin:handles_repair_reconciliationrun_change", args=[run.pk])).content.decode()
    assert "Done: verified on the server" in page and "<strong>2</strong> verified" in page


def test_a_repair_whose_change_the_server_refuses_is_incomplete_until_retried(run_queue, grinnell_live, drift,
                                                                              staff_client):
    run = reconciled(run_queue, grinnell_live)
    # Someone else creates the missing handle on the server before the repair gets there: a create must never
    # overwrite a handle it did not make, so the server's 409 ends the request in error.
    server_put(grinnell_live, "11084/missing", "https://ex.org/theirs")
    broken = run_queue(services.repair_start, run=run, kinds=[Kind.MISSING])
    fixed = run_queue(services.repair_start, run=run, kinds=[Kind.URL_DIFFERS])  # a second repair of the run
    broken.refresh_from_db()
    fixed.refresh_from_db()
    assert (fixed.state, fixed.verification) == (JobState.DONE, tally(success=1))  # settled on its own requests
    assert (broken.state, broken.verification) == (JobState.INCOMPLETE, tally(error=1))
    assert broken.error.startswith("1 of 1 repair was not verified on the server. 1 failed; the commonest error "
                                   "(1×), for example: 11084/missing already exists on the Handle server")
    assert broken.finished and broken.get_state_display() == "Incomplete: some changes failed on the server"
    assert server_url(grinnell_live, "11084/missing") == "https://ex.org/theirs"
    page = staff_client.get(reverse("admin:handles_repair_reconciliationrun_change", args=[run.pk])).content.decode()
    assert "Incomplete: some changes failed on the server" in page and 'Retry the 1 failed request"' in page

    client_of(grinnell_live).delete_handle("11084/missing")  # the cause is cleared
    with_retry = reverse("admin:handles_repair_repairjob_retry_failed", args=[broken.pk])
    run_queue(staff_client.post, with_retry)
    broken.refresh_from_db()
    assert (broken.state, broken.verification, broken.error) == (JobState.DONE, tally(success=1), "")
    assert server_url(grinnell_live, "11084/missing") == "https://ex.org/m"
    request = HandleRequest.objects.get(full_handle="11084/missing")
    assert (request.status, request.attempts) == ("success", 2) and "retried by staff" in request.server_output
    response = staff_client.post(with_retry)  # nothing left to retry: refused with a message
    assert "is done: verified on the server; only the failed requests" in str(list(response.wsgi_request._messages))


def test_a_repair_that_queued_nothing_is_done_at_once_and_a_failed_one_stays_failed(run_queue, grinnell_live,
                                                                                     drift, monkeypatch):
    from handles import services as core

    run = reconciled(run_queue, grinnell_live)
    run_queue(core.handle_delete, handle=drift[1])  # deleted here since: its repair is skipped
    job = run_queue(services.repair_start, run=run, kinds=[Kind.URL_DIFFERS])
    job.refresh_from_db()
    assert (job.state, job.counts, job.verification) == (JobState.DONE, {"skipped": 1}, {})
    assert job.message == "Nothing to queue: every chosen row was skipped"

    def broken_chunk(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(services.repairs, "_repair_chunk", broken_chunk)
    failed = run_queue(services.repair_start, run=run, kinds=[Kind.MISSING])
    failed.refresh_from_db()
    assert failed.state == JobState.FAILED and "disk full" in failed.error
    jobs.settle_all()
    failed.refresh_from_db()
    assert failed.state == JobState.FAILED


# --- Imports ------------------------------------------------------------------------------------------------
def test_an_adopt_import_is_applied_only_when_every_handle_is_verified(run_queue, grinnell_live, site,
                                                                       django_capture_on_commit_callbacks, staff_client):
    pages = [primo_page(site, m, m) for m in ("111", "222")]
    server_put(grinnell_live, "11084/1", pages[0])  # 11084/2 is not on the server: adopting it cannot be verified
    batch = dry_run("Handle URL,MMS ID\n11084/1,111\n11084/2,222\n", grinnell_live)
    with django_capture_on_commit_callbacks() as verifications:
        batch = services.import_batch_apply(batch.pk)
    assert (batch.state, batch.verification, batch.finished) == (JobState.VERIFYING, tally(queued=2), False)

    run_all(run_queue, verifications)
    batch.refresh_from_db()
    assert (batch.state, batch.verification) == (JobState.INCOMPLETE, tally(success=1, error=1))
    assert batch.error == ("1 of 2 handles was not verified on the server. 1 failed; the commonest error (1×), for "
                           "example: 11084/2 is missing on the Handle server. Retry the failed requests once the cause is "
                           "fixed.")
    page = staff_client.get(reverse("admin:handles_repair_importbatch_change", args=[batch.pk])).content.decode()
    assert "Applied; some handles failed on the server" in page and 'Retry the 1 failed request"' in page

    server_put(grinnell_live, "11084/2", pages[1])  # the handle is put on the server
    run_queue(staff_client.post, reverse("admin:handles_repair_importbatch_retry_failed", args=[batch.pk]))
    batch.refresh_from_db()
    assert (batch.state, batch.verification, batch.error) == (JobState.DONE, tally(success=2), "")
    assert batch.get_state_display() == "Applied and verified on the server"
    assert all(h.in_sync for h in Handle.objects.all())
    assert [server_url(grinnell_live, f"11084/{n}") for n in (1, 2)] == pages


def test_an_adopt_import_with_nothing_new_is_applied_at_once(grinnell_live, django_capture_on_commit_callbacks):
    content = "Handle URL,MMS ID\n11084/1,111\n"
    with django_capture_on_commit_callbacks():
        first = services.import_batch_apply(dry_run(content, grinnell_live).pk)
    assert first.state == JobState.VERIFYING
    again = dry_run(content, grinnell_live)  # the same file again: every line is already here
    assert again.counts.get("same") == 1
    with django_capture_on_commit_callbacks() as callbacks:
        again = services.import_batch_apply(again.pk)
    assert (again.state, again.verification, callbacks) == (JobState.DONE, {}, [])
    assert HandleRequest.objects.count() == 1  # only the first import's verification


def test_a_push_import_fails_on_a_busy_server_then_is_applied_after_a_retry(run_queue, grinnell_live, grinnell_server,
                                                                            site, settings,
                                                                            django_capture_on_commit_callbacks):
    settings.HANDLES_MAX_ATTEMPTS = 1  # a busy server ends each request at once, instead of after backoff
    pages = [primo_page(site, m, m) for m in ("333", "444")]
    server_put(grinnell_live, "11084/3", site.base_url + "/another-object")  # wrong URL; 11084/4 is missing
    batch = dry_run("Handle URL,MMS ID\n11084/3,333\n11084/4,444\n", grinnell_live, mode=ImportMode.PUSH)
    with django_capture_on_commit_callbacks():
        batch = services.import_batch_apply(batch.pk)
    assert (batch.step, batch.state) == (ImportBatch.Step.PUSH, JobState.RUNNING)  # the server is read next, then the requests are queued
    with django_capture_on_commit_callbacks() as pushes:
        batch = reconcile.push_import(batch.pk)
    assert (batch.state, batch.verification, batch.error) == (JobState.VERIFYING, tally(queued=2), "")
    assert dict(HandleRequest.objects.values_list("full_handle", "op")) == {"11084/3": "update", "11084/4": "create"}

    grinnell_server.set_fault("503")
    run_all(run_queue, pushes)
    batch.refresh_from_db()
    assert (batch.state, batch.verification) == (JobState.INCOMPLETE, tally(error=2))
    assert "2 of 2 handles were not verified" in batch.error
    assert "the commonest error (2×), for example: Gave up after " in batch.error

    grinnell_server.clear_faults()
    assert server_url(grinnell_live, "11084/4") is None
    assert run_queue(services.import_batch_retry_failed, batch=batch) == 2
    batch.refresh_from_db()
    assert (batch.state, batch.verification, batch.error) == (JobState.DONE, tally(success=2), "")
    assert [server_url(grinnell_live, f"11084/{n}") for n in (3, 4)] == pages


def test_continuing_a_push_is_allowed_while_verifying_or_incomplete(run_queue, grinnell_live, grinnell_server, site):
    primo_page(site, "555", "Five")
    batch = dry_run("Handle URL,MMS ID\n11084/5,555\n", grinnell_live, mode=ImportMode.PUSH)
    grinnell_server.set_fault("503")  # the server cannot be read: nothing is pushed
    run_queue(services.import_batch_apply, batch.pk)
    batch.refresh_from_db()
    assert (batch.state, batch.verification) == (JobState.INCOMPLETE, tally(unpushed=1))
    with pytest.raises(HandleStateError, match="has no failed requests"):
        services.import_batch_retry_failed(batch=batch)
    grinnell_server.clear_faults()
    run_queue(services.import_batch_continue_push, batch=batch)
    batch.refresh_from_db()
    assert (batch.state, batch.verification) == (JobState.DONE, tally(success=1))


# --- The commands wait for the verdict ---------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)  # commits, so the (inline) queue runs while the command waits
def test_the_commands_wait_for_the_servers_verdict(grinnell_live, site, tmp_path, capsys):
    page = primo_page(site, "777", "Seven")
    server_put(grinnell_live, "11084/7", page)
    path = tmp_path / "legacy.csv"
    path.write_text("Handle URL,MMS ID\n11084/7,777\n11084/8,888\n")  # 11084/8 is not on the server
    with pytest.raises(CommandError, match=r"Applied; some handles failed on the server\. verified on the server: "
                                           r"1 of 2; failed: 1\. 1 of 2 handles was not verified") as failed:
        call_command("import_handles", str(path), "--source-system", "alma", "--apply", "--wait")
    assert failed.value.returncode == 1

    call_command("reconcile", "11084", "--repair", "missing", "--apply", "--wait")
    out = capsys.readouterr().out
    assert "Repair #" in out and "Done: verified on the server; verified on the server: 1 of 1; failed: 0." in out
    assert server_url(grinnell_live, "11084/8") == Handle.objects.get(suffix="8").target_url

    # The import's failed verification, retried from the command line now that the handle is there.
    batch = ImportBatch.objects.get()
    call_command("retry_failed", "import", str(batch.pk), "--wait")
    out = capsys.readouterr().out
    assert "1 failed request queued again" in out
    assert "Applied and verified on the server; verified on the server: 2 of 2; failed: 0." in out
    with pytest.raises(CommandError, match="only the failed requests of a job that is verifying or incomplete"):
        call_command("retry_failed", "import", str(batch.pk))
    with pytest.raises(CommandError, match="There is no repair #999"):
        call_command("retry_failed", "repair", "999")


def test_a_command_gives_up_waiting_after_its_timeout(grinnell_prefix, tmp_path):
    path = tmp_path / "legacy.csv"
    path.write_text("Handle URL,MMS ID\n11084/9,999\n")
    # Inside the test's transaction nothing is handed to the queue: the import stays verifying.
    with pytest.raises(CommandError, match=r"still applied; waiting for the server to confirm each handle after "
                                           r"0 s: verified on the server: 0 of 1") as timed_out:
        call_command("import_handles", str(path), "--source-system", "alma", "--apply", "--wait", "--timeout", "0")
    assert timed_out.value.returncode == 2
    assert ImportBatch.objects.get().state == JobState.VERIFYING


@pytest.mark.django_db(transaction=True)
def test_imports_and_repairs_marked_done_before_this_release_get_their_verdict(run_queue, grinnell_live, drift, site):
    run = reconciled(run_queue, grinnell_live)
    repair = run_queue(services.repair_start, run=run, kinds=[Kind.MISSING, Kind.URL_DIFFERS])
    server_put(grinnell_live, "11084/1", primo_page(site, "111", "One"))  # 11084/2 is not on the server
    batch = run_queue(services.import_batch_apply, dry_run("Handle URL,MMS ID\n11084/1,111\n11084/2,222\n",
                                                           grinnell_live).pk)
    then = migrate_to(("handles_repair", "0008_health_results_per_run"))  # the states that migration knew
    try:
        # As an earlier release left them: applied/done once queued, no tally, rows not linked to their repair.
        then.get_model("handles_repair", "RepairJob").objects.filter(pk=repair.pk).update(state="done", verification={})
        then.get_model("handles_repair", "ImportBatch").objects.filter(pk=batch.pk).update(
            state="applied", verification={}, error="")
        then.get_model("handles_repair", "ReconciliationRow").objects.update(repair_job=None)
        importlib.import_module("handles.repair.migrations.0006_verify_earlier_jobs").verify_earlier_jobs(then, None)
    finally:
        migrate_to_latest()
    repair.refresh_from_db()
    batch.refresh_from_db()
    assert (repair.state, batch.step, batch.state) == (JobState.VERIFYING, ImportBatch.Step.APPLY, JobState.VERIFYING)
    assert set(run.rows.filter(kind__in=[Kind.MISSING, Kind.URL_DIFFERS]).values_list("repair_job", flat=True)) == {
        repair.pk}
    assert jobs.settle_all() == 2
    repair.refresh_from_db()
    batch.refresh_from_db()
    assert (repair.state, repair.verification) == (JobState.DONE, tally(success=2))
    assert (batch.state, batch.verification) == (JobState.INCOMPLETE, tally(success=1, error=1))


@pytest.mark.django_db(transaction=True)
def test_a_push_that_fails_inside_ends_the_import_and_its_wait_with_the_reason(grinnell_live, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the reads broke")

    monkeypatch.setattr(reconcile, "read_url", broken)
    path = tmp_path / "legacy.csv"
    path.write_text("Handle URL,MMS ID\n11084/21,2121\n11084/22,2222\n")
    with pytest.raises(CommandError, match=r"RuntimeError: the reads broke") as failed:
        call_command("import_handles", str(path), "--source-system", "alma", "--mode", "push", "--apply", "--wait")
    assert failed.value.returncode == 1
    batch = ImportBatch.objects.get()
    # The job runner ends a job whose work raised as failed, with the reason; nothing was pushed.
    assert batch.state == JobState.FAILED and "the reads broke" in batch.error
    assert not HandleRequest.objects.exists()


def test_waiting_ends_when_the_workers_task_for_the_job_failed(grinnell_prefix):
    from django.utils import timezone
    from django_q.models import Task

    from handles.repair.management.commands._wait import wait_until_settled

    batch = dry_run("Handle URL,MMS ID\n11084/31,3131\n", grinnell_prefix, mode=ImportMode.PUSH)
    ImportBatch.objects.filter(pk=batch.pk).update(step=ImportBatch.Step.PUSH, state=JobState.RUNNING)
    batch.refresh_from_db()
    since = timezone.now()
    Task.objects.create(id="t1", name=f"import push {batch.pk}", func="handles.repair.tasks.push_import",
                        started=since, stopped=timezone.now(), success=False,
                        result="Traceback ...\nsqlite3.ProgrammingError: Cannot operate on a closed database.")

    class Out:
        def write(self, text: str) -> None:
            pass

    command = type("Command", (), {"stdout": Out()})()
    with pytest.raises(CommandError, match="Cannot operate on a closed database") as failed:
        wait_until_settled(command, batch, reload=lambda pk: ImportBatch.objects.get(pk=pk),
                           settle=services.import_batch_settle, timeout=60, poll=0.01,
                           task_name=f"import push {batch.pk}", since=since)
    assert failed.value.returncode == 1
