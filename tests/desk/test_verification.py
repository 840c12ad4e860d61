"""A bulk job succeeds only once the server confirmed each change it queued: verifying, then done or
incomplete (with how many failed and why), and a retry of the failed requests that brings it to done."""

from __future__ import annotations

import importlib

import pytest
from django.urls import reverse

from handles import jobs
from handles import services as core
from handles.desk import services
from handles.desk.models import BulkJob
from handles.exceptions import HandleStateError
from handles.handle_server import records
from handles.handle_server.client import HandleNotFound, client_for
from handles.jobs import JobState
from handles.models import Handle, HandleRequest
from tests.factories import HandleFactory, PrefixFactory
from tests.migrations_at import migrate_to, migrate_to_latest

ALL_ZERO = {"success": 0, "error": 0, "queued": 0, "running": 0, "unpushed": 0}


def tally(**counts: int) -> dict[str, int]:
    return {**ALL_ZERO, **counts}


def on_server(prefix, handle: Handle) -> str | None:
    try:
        return client_for(prefix.server_config()).get_url(handle.full_handle)[0]
    except HandleNotFound:
        return None


@pytest.fixture
def minted(prefix, run_queue, unique_suffix):
    """Handles on the simulator, in sync, each at http://old.example/<n>."""

    def mint(count: int) -> list[Handle]:
        return [run_queue(core.handle_mint, prefix=prefix, suffix=unique_suffix("bulk"),
                          target_url=f"http://old.example/{n}").handle for n in range(count)]

    return mint


def redirect_job(handles: list[Handle]) -> BulkJob:
    return services.bulk_job_create(kind="redirect_rule", selection={"ids": [h.pk for h in handles]},
                                    parameters={"find": "http://old.example/", "replace": "https://new.example/"},
                                    description="test")


def test_a_bulk_job_is_verifying_until_the_server_confirmed_each_change(prefix, minted, run_queue, staff_client,
                                                                        django_capture_on_commit_callbacks):
    handles = minted(3)
    with django_capture_on_commit_callbacks():
        job = redirect_job(handles)
    with django_capture_on_commit_callbacks() as pushes:
        assert services.bulk_job_run_slice(job.pk) == "verifying"
    job.refresh_from_db()
    assert (job.state, job.succeeded, job.verification) == (JobState.VERIFYING, 3, tally(queued=3))
    assert (job.finished, job.finished_at, job.percent) == (False, None, 0)
    status = staff_client.get(reverse("admin:handles_desk_bulkjob_status", args=[job.pk])).json()
    assert (status["state"], status["finished"], status["verification"]) == ("verifying", False, tally(queued=3))
    with pytest.raises(HandleStateError, match="nothing left to cancel"):
        services.bulk_job_cancel(job=job)

    run_queue(lambda: [push() for push in pushes])
    job.refresh_from_db()
    assert (job.state, job.verification, job.error, job.percent) == (JobState.DONE, tally(success=3), "", 100)
    assert job.finished_at is not None
    assert [on_server(prefix, h) for h in handles] == [f"https://new.example/{n}" for n in range(3)]
    page = staff_client.get(job.get_absolute_url()).content.decode()
    assert "Done: verified on the server" in page and "<strong>3</strong> of 3 verified" in page


def test_a_bulk_job_whose_changes_fail_on_the_server_is_incomplete_until_retried(prefix, sim, minted, run_queue,
                                                                                 staff_client, settings):
    handles = minted(2)
    settings.HANDLES_MAX_ATTEMPTS = 1  # a busy server ends each request at once, instead of after backoff
    sim.set_fault("503")
    job = run_queue(redirect_job, handles)
    job.refresh_from_db()
    assert (job.state, job.verification, job.finished) == (JobState.INCOMPLETE, tally(error=2), True)
    assert job.error == ("2 of 2 changes were not verified on the server. 2 failed; the commonest error (2×), for "
                         "example: Gave up after 1 attempt. Last error: The Handle server is unavailable (HTTP 503, responseCode 3): "
                         "Server too busy. Retry the failed requests once the cause is fixed.")
    page = staff_client.get(job.get_absolute_url()).content.decode()
    assert "Incomplete: some changes failed on the server" in page and "Retry the 2 failed requests" in page
    sim.clear_faults()
    assert [on_server(prefix, h) for h in handles] == ["http://old.example/0", "http://old.example/1"]

    run_queue(staff_client.post, reverse("admin:handles_desk_bulkjob_retry_failed", args=[job.pk]))
    job.refresh_from_db()
    assert (job.state, job.verification, job.error) == (JobState.DONE, tally(success=2), "")
    assert [on_server(prefix, h) for h in handles] == ["https://new.example/0", "https://new.example/1"]
    assert all("retried by staff" in r.server_output for r in services.selectors.bulk_job_requests(job.pk))


def test_a_verify_job_that_finds_a_handle_missing_reports_it_and_a_retry_verifies_it(prefix, minted, run_queue):
    handles = minted(2)
    client = client_for(prefix.server_config())
    client.delete_handle(handles[1].full_handle)  # removed behind our back
    job = run_queue(services.bulk_job_create, kind="verify", selection={"ids": [h.pk for h in handles]})
    job.refresh_from_db()
    assert (job.state, job.verification) == (JobState.INCOMPLETE, tally(success=1, error=1))
    assert "1 of 2 changes was not verified" in job.error and f"for example: {handles[1].full_handle} is missing on the Handle server" in job.error

    client.create_handle(handles[1].full_handle, records.new_record(
        "http://old.example/1", admin_handle=prefix.hs_admin_handle, admin_index=prefix.hs_admin_index,
        permissions=prefix.hs_admin_permissions))
    assert run_queue(services.bulk_job_retry_failed, job=job) == 1
    job.refresh_from_db()
    assert (job.state, job.verification) == (JobState.DONE, tally(success=2))
    with pytest.raises(HandleStateError, match="only the failed requests of a job that is verifying or incomplete"):
        services.bulk_job_retry_failed(job=job)


def test_a_job_that_queued_nothing_is_done_at_once_and_a_failed_one_stays_failed(db, monkeypatch):
    offline = PrefixFactory()
    stones = [HandleFactory(prefix=offline, suffix=f"s{i}", status=Handle.Status.TOMBSTONED) for i in range(2)]
    job = services.bulk_job_create(kind="tombstone", selection={"ids": [h.pk for h in stones]},
                                   parameters={"reason": "gone"})
    assert services.bulk_job_run_slice(job.pk) == "done"  # every handle skipped: nothing to wait for
    job.refresh_from_db()
    assert (job.state, job.skipped, job.verification) == (JobState.DONE, 2, {})
    assert not HandleRequest.objects.exists()

    def broken(**kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(services, "selection_queryset", broken)
    failing = services.bulk_job_create(kind="verify", selection={"ids": [stones[0].pk]})
    assert services.bulk_job_run_slice(failing.pk) == "failed"
    jobs.settle_all()
    failing.refresh_from_db()
    assert failing.state == JobState.FAILED and "database went away" in failing.error


@pytest.mark.django_db(transaction=True)
def test_bulk_jobs_marked_done_before_this_release_get_their_verdict(prefix, minted, run_queue):
    handles = minted(2)
    client_for(prefix.server_config()).delete_handle(handles[1].full_handle)
    job = run_queue(services.bulk_job_create, kind="verify", selection={"ids": [h.pk for h in handles]})
    then = migrate_to(("handles_desk", "0005_verify_earlier_jobs"))  # the models that migration was written for
    try:
        earlier = then.get_model("handles_desk", "BulkJob").objects.filter(pk=job.pk)
        earlier.update(status="done", verification={}, error="")  # as an earlier release left it
        importlib.import_module("handles.desk.migrations.0005_verify_earlier_jobs").verify_earlier_jobs(then, None)
        assert earlier.get().status == "verifying"
    finally:
        migrate_to_latest()
    job.refresh_from_db()
    assert job.state == JobState.VERIFYING
    assert jobs.settle_all() == 1
    job.refresh_from_db()
    assert (job.state, job.verification) == (JobState.INCOMPLETE, tally(success=1, error=1))
