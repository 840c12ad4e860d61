"""The one job runner (handles.jobs) on the repair app's jobs: slices, leases, resume after a dead worker,
cancel (service, admin button, `cancel_job`), a job whose slices never finish, and the commands'
--background/--wait. The kill -9 and task-timeout runs with real clusters are in tests/reliability."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from django.utils import timezone

from handles import jobs, tasks
from handles.repair import health, reconcile, services
from handles.repair.models import HandleCheck, HealthRun, ImportRow
from tests.factories import HandleFactory
from tests.repair.conftest import primo_page, server_put

pytestmark = pytest.mark.django_db


@pytest.fixture
def allow_loopback(settings):
    settings.HANDLES_HEALTH_ALLOW_PRIVATE = True
    settings.HANDLES_HEALTH_HOST_INTERVAL = 0
    settings.HANDLES_HEALTH_TIMEOUT = 0.5
    settings.HANDLES_HEALTH_TIMEOUT_RETRIES = 1


@pytest.fixture
def ten_handles(grinnell_live, site, allow_loopback):
    """Ten handles on the simulator, resolving to their pages (every third page is gone)."""
    for n in range(10):
        url = primo_page(site, str(n), f"Object {n}") if n % 3 else site.base_url + f"/gone/{n}"
        HandleFactory(prefix=grinnell_live, suffix=f"obj{n}", target_url=url)
        server_put(grinnell_live, f"11084/obj{n}", url)
    return grinnell_live


def queued_run(**filters) -> HealthRun:
    return services.health_start(filters=filters, via="test", enqueue=False)


def test_a_health_check_runs_in_slices_and_each_slice_goes_on_where_the_last_stopped(ten_handles, settings):
    settings.HANDLES_JOB_SLICE_SECONDS = 0  # a spent budget: each slice starts one round of checks, then stops
    settings.HANDLES_HEALTH_WORKERS = 2
    run = queued_run()
    outcomes, checked = [], []
    while (outcome := jobs.run_slice(health.RUNNER, run.pk)) == jobs.CONTINUE:
        outcomes.append(outcome)
        run.refresh_from_db()
        assert run.state == "running" and run.lease_token is None  # between slices: no task holds it
        checked.append(HandleCheck.objects.filter(run=run).count())
    run.refresh_from_db()
    # Several slices, each going on from where the last stopped: the count of results only grows.
    assert outcome == "done" and len(outcomes) >= 2
    assert checked == sorted(checked) and 0 < checked[0] < 10 and len(set(checked)) == len(checked)
    assert run.counts == {"correct": 6, "broken": 4} and (run.progress_done, run.progress_total) == (10, 10)
    assert HandleCheck.objects.filter(run=run).count() == 10


def test_a_slice_whose_worker_died_is_resumed_by_the_sweep_once_its_lease_ran_out(ten_handles, settings,
                                                                                  django_capture_on_commit_callbacks):
    run = queued_run()
    earlier = timezone.now() - timedelta(seconds=jobs.lease_seconds() + 1)
    assert jobs.claim(health.RUNNER, run.pk, now=earlier)  # the dead worker's claim, its lease now run out
    assert jobs.run_slice(health.RUNNER, run.pk, now=earlier) == jobs.BUSY  # while the lease held, no one else
    assert jobs.stalled(health.RUNNER) == [run.pk]
    assert tasks.resume_stalled_jobs(["health"]) == 1  # the sweep: the task runs inline in the test settings
    run.refresh_from_db()
    assert run.state == "done" and run.counts == {"correct": 6, "broken": 4}


def test_a_queued_job_is_cancelled_at_once_and_no_task_runs_it(ten_handles):
    run = queued_run()
    assert jobs.cancel(health.RUNNER, run.pk).state == "cancelled"
    assert jobs.run_slice(health.RUNNER, run.pk) == jobs.BUSY
    assert not HandleCheck.objects.exists()
    with pytest.raises(jobs.HandleStateError, match="only a job that is waiting for or doing its work"):
        jobs.cancel(health.RUNNER, run.pk)


def test_a_running_job_stops_at_the_next_slice_boundary_and_says_so(ten_handles, settings):
    settings.HANDLES_JOB_SLICE_SECONDS = 0
    settings.HANDLES_HEALTH_WORKERS = 2
    run = queued_run()
    assert jobs.run_slice(health.RUNNER, run.pk) == jobs.CONTINUE
    checked = HandleCheck.objects.filter(run=run).count()
    assert 0 < checked < 10
    cancelling = jobs.cancel(health.RUNNER, run.pk)
    assert (cancelling.state, cancelling.cancel_requested) == ("running", True)
    assert "Cancelling" in cancelling.message
    assert jobs.run_slice(health.RUNNER, run.pk) == jobs.CANCELLED
    run.refresh_from_db()
    assert (run.state, run.message) == ("cancelled", "Cancelled by staff") and run.finished_at
    assert HandleCheck.objects.filter(run=run).count() == checked  # what it checked stays checked, no more


def test_a_job_whose_slices_never_finish_fails_instead_of_looping(ten_handles, settings):
    settings.HANDLES_JOB_MAX_ATTEMPTS = 2
    run = queued_run()
    earlier = timezone.now() - timedelta(seconds=jobs.lease_seconds() + 1)
    for _ in range(2):  # two slices killed before they recorded anything; their leases ran out
        assert jobs.claim(health.RUNNER, run.pk)
        HealthRun.objects.filter(pk=run.pk).update(lease_until=earlier)
    assert jobs.run_slice(health.RUNNER, run.pk) == jobs.FAILED
    run.refresh_from_db()
    assert run.state == "failed" and "2 slices in a row did not finish" in run.error
    assert "HANDLES_TASK_TIMEOUT" in run.error


def test_an_import_dry_run_killed_mid_way_is_done_again_from_the_start(grinnell_prefix, csv_file):
    content = "handle,url\n" + "".join(f"11084/{n},https://example.org/{n}\n" for n in range(30))
    batch = services.import_batch_create(file_name="a.csv", content=content.encode(), via="test")
    batch = services.import_batch_configure(batch=batch, mapping={"handle": "handle", "url": "url"},
                                            prefix=grinnell_prefix)
    services.import_batch_start_analysis(batch=batch)  # queued; its task never ran (captured nowhere)
    earlier = timezone.now() - timedelta(seconds=jobs.lease_seconds() + 1)
    assert jobs.claim(reconcile.IMPORT_RUNNER, batch.pk, now=earlier)
    ImportRow.objects.create(batch=batch, line=2, outcome="new")  # the dead worker's half-written report
    assert jobs.run_slice(reconcile.IMPORT_RUNNER, batch.pk) == "done"
    batch.refresh_from_db()
    assert batch.counts["new"] == 30 and batch.rows.count() == 30


def test_cancel_job_command(ten_handles, settings, capsys):
    run = queued_run()
    call_command("cancel_job", "health", str(run.pk))
    assert "cancelled" in capsys.readouterr().out
    with pytest.raises(CommandError, match="cancelled; only a job"):
        call_command("cancel_job", "health", str(run.pk))
    with pytest.raises(CommandError, match="Unknown kind of job 'nope'"):
        call_command("cancel_job", "nope", "1")
    with pytest.raises(CommandError, match="There is no health check #999"):
        call_command("cancel_job", "health", "999")


def test_the_cancel_button_is_for_staff(ten_handles, client, staff_user, manager_user, settings):
    settings.HANDLES_JOB_SLICE_SECONDS = 0
    settings.HANDLES_HEALTH_WORKERS = 2
    run = queued_run()
    assert jobs.run_slice(health.RUNNER, run.pk) == jobs.CONTINUE
    page = reverse("admin:handles_repair_healthrun_change", args=[run.pk])
    url = reverse("admin:handles_repair_healthrun_cancel", args=[run.pk])
    client.force_login(staff_user)
    assert f'action="{url}"' in client.get(page).content.decode()
    client.force_login(manager_user)
    assert f'action="{url}"' not in client.get(page).content.decode()
    assert client.post(url).status_code == 403
    client.force_login(staff_user)
    response = client.post(url, follow=True)
    assert "stops at the end of the slice under way" in response.content.decode()
    assert jobs.run_slice(health.RUNNER, run.pk) == jobs.CANCELLED


@pytest.mark.django_db(transaction=True)  # the command's hand-over to the queue happens at commit
def test_check_health_in_the_background_waits_and_exits_by_how_it_ended(ten_handles, capsys):
    # The test settings run queued tasks inline: here the queue runs every slice at the hand-over.
    call_command("check_health", "--background", "--wait")
    out = capsys.readouterr().out
    assert "queued; a worker (manage.py qcluster) runs it in slices" in out
    assert "10 checked, 6 resolve correctly (60.0%)" in out
    run = HealthRun.objects.get()
    assert run.requested_via == "command" and run.state == "done"


@pytest.mark.django_db(transaction=True)
def test_waiting_on_a_job_that_failed_exits_non_zero_with_its_error(grinnell_prefix, capsys):
    # grinnell_prefix points at a closed port: the reconciliation fails at once, and --wait must say so.
    with pytest.raises(CommandError, match="Failed.*could not be read") as failure:
        call_command("reconcile", "11084", "--background", "--wait", "--timeout", "60")
    assert failure.value.returncode == 1
