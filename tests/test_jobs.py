"""Verifying jobs settle when the queue runs dry (the end of a push task) and in the minute sweep; a failed
job's requests are retried in bulk with the same meaning as one retry."""

from __future__ import annotations

import logging

import pytest

from handles import jobs, services, tasks
from handles.desk import services as desk_services
from handles.jobs import JobState
from handles.models import HandleRequest
from handles.outbox import drain

pytestmark = pytest.mark.django_db


@pytest.fixture
def verifying_job(prefix, run_queue, unique_suffix, django_capture_on_commit_callbacks):
    """A bulk job that verifies three handles on the simulator; its requests are queued, none pushed."""
    handles = [run_queue(services.handle_mint, prefix=prefix, suffix=unique_suffix("v"),
                         target_url=f"https://example.org/v{n}").handle for n in range(3)]
    with django_capture_on_commit_callbacks():  # nothing is handed to the queue
        job = desk_services.bulk_job_create(kind="verify", selection={"ids": [h.pk for h in handles]})
        assert desk_services.bulk_job_run_slice(job.pk) == "verifying"
    requests = list(HandleRequest.objects.filter(requested_via=f"job:{job.pk}").order_by("pk"))
    assert [r.status for r in requests] == ["queued"] * 3
    return job, requests


def test_settling_costs_one_query_per_app_when_no_job_is_verifying(django_assert_num_queries):
    with django_assert_num_queries(2):  # handles.repair (imports and repairs, one UNION) and handles.desk
        assert jobs.settle_all() == 0


def test_a_job_settles_at_the_end_of_the_drain_that_pushed_its_last_request(verifying_job, settings):
    settings.HANDLES_DRAIN_SECONDS = 30
    job, requests = verifying_job
    assert tasks.push_request(requests[0].pk) == "success; drained 2; settled 1 job"
    job.refresh_from_db()
    assert (job.state, job.verification["success"]) == (JobState.DONE, 3)


def test_a_job_settles_after_its_last_request_when_each_task_pushes_one(verifying_job, settings):
    settings.HANDLES_DRAIN_SECONDS = 0
    job, requests = verifying_job
    assert tasks.push_request(requests[0].pk) == "success"  # others are due: no settling yet
    assert tasks.push_request(requests[1].pk) == "success"
    job.refresh_from_db()
    assert job.state == JobState.VERIFYING
    assert tasks.push_request(requests[2].pk) == "success; settled 1 job"
    job.refresh_from_db()
    assert (job.state, job.verification["success"]) == (JobState.DONE, 3)


@pytest.mark.parametrize(("drain_seconds", "tally_moved"), [(20, True), (0, False)])
def test_a_long_drain_moves_a_busy_jobs_tally(verifying_job, settings, monkeypatch, drain_seconds, tally_moved):
    """A drain that ran its whole time settles even though requests are still due, so "verified x of y" moves
    while a big job runs; one request per task (no drain) does not count the job's requests after each."""
    settings.HANDLES_DRAIN_SECONDS = drain_seconds
    job, requests = verifying_job
    monkeypatch.setattr(drain, "_drain", lambda deadline, task_ends: (0, "time"))  # its time ran out, others due
    assert tasks.push_request(requests[0].pk) == "success"
    job.refresh_from_db()
    assert job.state == JobState.VERIFYING
    assert job.verification == ({**job.verification, "success": 1, "queued": 2} if tally_moved else
                                {**job.verification, "success": 0, "queued": 3})


def test_the_minute_sweep_settles_a_job_whose_settle_was_missed(verifying_job, monkeypatch):
    job, requests = verifying_job
    with monkeypatch.context() as patch:
        patch.setattr(jobs, "_settlers", [])  # the worker stopped after recording, before settling
        for request in requests:
            tasks.push_request(request.pk)
    job.refresh_from_db()
    assert job.state == JobState.VERIFYING
    assert set(HandleRequest.objects.filter(pk__in=[r.pk for r in requests]).values_list("status", flat=True)) == {
        "success"}
    assert tasks.sweep_requests() == "reclaimed 0, enqueued 0, settled 1 job"
    job.refresh_from_db()
    assert job.state == JobState.DONE


def test_a_failing_settler_is_logged_and_never_breaks_a_push(verifying_job, monkeypatch, caplog):
    job, requests = verifying_job

    def broken() -> int:
        raise RuntimeError("settler bug")

    monkeypatch.setattr(jobs, "_settlers", [broken, desk_services.bulk_jobs_settle])
    with caplog.at_level(logging.ERROR, logger="handles.jobs"):
        results = [tasks.push_request(request.pk) for request in requests]
    assert results[-1] == "success; settled 1 job"  # the other app's jobs still settle
    assert "settling verifying jobs failed in test_a_failing_settler_is_logged" in caplog.text
    assert "settler bug" in caplog.text


def test_retrying_many_failed_requests_gives_each_fresh_attempts(prefix, sim, run_queue, unique_suffix, settings,
                                                                 staff_user, django_capture_on_commit_callbacks):
    settings.HANDLES_MAX_ATTEMPTS = 1
    sim.set_fault("503")
    failed = [run_queue(services.handle_mint, prefix=prefix, suffix=unique_suffix("r"), target_url="https://ex.org/r")
              for _ in range(2)]
    sim.clear_faults()
    done = run_queue(services.handle_mint, prefix=prefix, suffix=unique_suffix("r"), target_url="https://ex.org/r")
    assert [r.status for r in failed] == ["error", "error"] and done.status == "success"
    settings.HANDLES_MAX_ATTEMPTS = 4
    with django_capture_on_commit_callbacks() as hand_overs:
        retried = services.requests_retry_bulk(request_ids=[*(r.pk for r in failed), done.pk], actor=staff_user)
    assert retried == 2 and len(hand_overs) == 1  # one background hand-over for the chunk
    for request in failed:
        request.refresh_from_db()
        assert (request.status, request.max_attempts, request.finished_at) == ("queued", 1 + 4, None)
        assert request.server_output.endswith("retried by staff")
    done.refresh_from_db()
    assert done.status == "success" and "retried" not in done.server_output
    run_queue(lambda: [hand_over() for hand_over in hand_overs])
    assert set(HandleRequest.objects.filter(pk__in=[r.pk for r in failed]).values_list("status", "attempts")) == {
        ("success", 2)}
