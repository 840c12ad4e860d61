"""Bulk actions and jobs: each handle changed through its service, chunks, resume, cancel, report."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from handles import services as handle_services
from handles.desk import exports, services, tasks
from handles.desk.models import BulkJob, BulkJobItem, Collection
from handles.exceptions import HandleServiceError
from handles.models import Handle, HandleRequest
from tests.factories import HandleFactory, PrefixFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def offline_prefix():
    return PrefixFactory()


@pytest.fixture
def handles(offline_prefix):
    return [HandleFactory(prefix=offline_prefix, suffix=f"b{i}", target_url=f"http://old.example/{i}")
            for i in range(5)]


def job(kind, selection, **parameters):
    return services.bulk_job_create(kind=kind, selection=selection, parameters=parameters, description="test")


def test_a_job_changes_each_handle_through_its_service(handles):
    created = job("redirect_rule", {"ids": [h.pk for h in handles[:4]]}, find="http://old.example/",
                  replace="https://new.example/")
    assert services.bulk_job_run_slice(created.pk) == "verifying"  # the server has confirmed none of them yet
    created.refresh_from_db()
    assert (created.state, created.progress_total, created.progress_done, created.succeeded) == ("verifying", 4, 4, 4)
    assert created.verification == {"success": 0, "error": 0, "queued": 4, "running": 0, "unpushed": 0}
    assert sorted(Handle.objects.values_list("target_url", flat=True)) == [
        "http://old.example/4", *[f"https://new.example/{i}" for i in range(4)]]
    requests = HandleRequest.objects.filter(requested_via=f"job:{created.pk}")
    assert requests.count() == 4 and {r.handle_version for r in requests} == {2}
    item = created.items.get(key=handles[0].pk)
    assert (item.outcome, item.before, item.after, item.request.action) == (
        "ok", "http://old.example/0", "https://new.example/0", "redirect")


def test_refusals_are_skipped_and_bad_input_fails_without_stopping_the_job(handles):
    handles[0].status = Handle.Status.TOMBSTONED
    handles[0].save()
    created = job("redirect_rule", {"ids": [h.pk for h in handles]}, find="http://", replace="javascript:")
    services.bulk_job_run_slice(created.pk)
    created.refresh_from_db()
    # The tombstoned handle no longer matches the rule (skipped, reported); the others fail validation, unchanged.
    assert (created.progress_done, created.failed, created.skipped, created.succeeded) == (5, 4, 1, 0)
    assert created.items.get(key=handles[0].pk).message.startswith(services.NO_LONGER_MATCHES)
    assert "must start with http:// or https://" in created.items.get(key=handles[1].pk).message
    assert not HandleRequest.objects.exists()
    tomb = job("tombstone", {"ids": [h.pk for h in handles[:2]]}, reason="gone")
    services.bulk_job_run_slice(tomb.pk)
    assert BulkJobItem.objects.filter(job=tomb).outcome_counts() == {"skipped": 1, "ok": 1}


def test_filters_select_like_the_list_and_a_job_works_in_slices(handles, settings):
    settings.HANDLES_DESK_JOB_CHUNK = 2
    settings.HANDLES_DESK_JOB_SLICE_SECONDS = 0
    created = job("verify", {"filters": {"q": "old.example"}})
    outcomes = []
    while (outcome := services.bulk_job_run_slice(created.pk)) != "verifying":
        outcomes.append(outcome)
    created.refresh_from_db()
    assert outcomes == ["continue", "continue", "continue"]
    assert (created.progress_total, created.progress_done, created.state) == (5, 5, "verifying")
    assert sorted(created.items.values_list("key", flat=True)) == sorted(h.pk for h in handles)


def test_the_task_hands_the_rest_of_a_job_to_a_new_task(handles, settings, django_capture_on_commit_callbacks):
    settings.HANDLES_DESK_JOB_CHUNK = 2
    settings.HANDLES_DESK_JOB_SLICE_SECONDS = 0
    with django_capture_on_commit_callbacks(execute=True):
        created = job("verify", {"ids": [h.pk for h in handles]})
    created.refresh_from_db()
    # three tasks ran, each queued by the previous; the offline server confirmed none of the requests
    assert (created.state, created.progress_done) == ("verifying", 5)


def test_a_job_resumed_after_its_worker_died_neither_repeats_nor_skips(handles):
    created = job("verify", {"ids": [h.pk for h in handles]})
    now = timezone.now()
    token = services._claim(created.pk, now)
    created.refresh_from_db()
    for handle in handles[:2]:  # the dead worker's committed work
        services._process(created, handle)
    assert services.bulk_job_run_slice(created.pk, now=now) == "busy"  # its lease still holds
    later = now + timedelta(seconds=services._lease_seconds() + 1)
    assert services.bulk_jobs_stalled(now=later) == [created.pk]
    assert services.bulk_job_run_slice(created.pk, now=later) == "verifying"
    created.refresh_from_db()
    assert (created.progress_done, created.succeeded) == (5, 5)
    assert HandleRequest.objects.filter(op="verify").count() == 5
    assert token is not None


def test_stalled_jobs_are_resumed_by_the_schedule(handles, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        created = job("verify", {"ids": [h.pk for h in handles]})  # its enqueue never happened
    BulkJob.objects.filter(pk=created.pk).update(enqueued_at=None)
    assert tasks.resume_bulk_jobs() == "resumed 1"
    created.refresh_from_db()
    assert created.state == "verifying"


def test_cancel_stops_a_job_between_chunks(handles, settings):
    settings.HANDLES_DESK_JOB_CHUNK = 2
    settings.HANDLES_DESK_JOB_SLICE_SECONDS = 0
    created = job("verify", {"ids": [h.pk for h in handles]})
    assert services.bulk_job_run_slice(created.pk) == "continue"
    services.bulk_job_cancel(job=created)
    assert services.bulk_job_run_slice(created.pk) == "cancelled"
    created.refresh_from_db()
    assert (created.state, created.progress_done) == ("cancelled", 2)
    with pytest.raises(HandleServiceError, match="already cancelled"):
        services.bulk_job_cancel(job=created)


def test_a_queued_job_is_cancelled_at_once(handles, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        created = job("verify", {"ids": [h.pk for h in handles]})
    assert services.bulk_job_cancel(job=created).state == "cancelled"
    assert services.bulk_job_run_slice(created.pk) == "busy"


def test_a_crash_inside_a_job_fails_it_visibly(handles, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(handle_services, "handle_verify", broken)
    created = job("verify", {"ids": [h.pk for h in handles]})
    assert services.bulk_job_run_slice(created.pk) == "failed"
    created.refresh_from_db()
    assert (created.state, created.error) == ("failed", "RuntimeError: database went away")


@pytest.mark.parametrize("kind, parameters, code", [
    ("tombstone", {"reason": " "}, "reason_required"),
    ("redirect_rule", {"find": ""}, "find_required"),
    ("explode", {}, "invalid_kind"),
])
def test_a_job_with_bad_parameters_is_refused(kind, parameters, code):
    with pytest.raises(HandleServiceError) as caught:
        job(kind, {"ids": [1]}, **parameters)
    assert caught.value.code == code
    assert not BulkJob.objects.exists()


def test_retry_jobs_select_failed_requests_by_error_group(offline_prefix):
    failed = []
    for i in range(3):
        handle = HandleFactory(prefix=offline_prefix, suffix=f"r{i}")
        failed.append(HandleRequest.objects.create(
            handle=handle, op="update", action="redirect", full_handle=handle.full_handle, handle_version=1,
            status="error", error="Server busy" if i < 2 else "Permission denied", finished_at=timezone.now()))
    created = job("retry", {"filters": {"signature": "Server busy"}})
    services.bulk_job_run_slice(created.pk)
    assert sorted(HandleRequest.objects.values_list("status", flat=True)) == ["error", "queued", "queued"]
    assert created.items.first().full_handle == "20.500.12345/r0"


def test_job_report_has_a_line_per_handle_with_its_request(handles):
    created = job("verify", {"ids": [h.pk for h in handles[:2]]})
    services.bulk_job_run_slice(created.pk)
    rows = list(exports.job_report_rows(created))
    assert rows[0] == exports.JOB_COLUMNS
    assert [(r[0], r[1], r[6]) for r in rows[1:]] == [("20.500.12345/b0", "ok", "queued"),
                                                      ("20.500.12345/b1", "ok", "queued")]


def test_collections_are_saved_validated_and_deleted_through_the_service():
    with pytest.raises(Exception, match="Lower-case"):
        services.collection_save(collection=Collection(name="Bad", source_system="DAMS!"))
    collection = services.collection_save(collection=Collection(name="Maps", source_system="dams"))
    services.collection_delete(collection=collection)
    assert not Collection.objects.exists()


# --- A job acts on exactly the handles its selection held when it was confirmed ------------------------------
def test_a_job_acts_on_its_frozen_selection_and_reports_handles_that_stopped_matching(handles, offline_prefix):
    from handles.desk.admin import job_status

    chosen = handles[:4]
    created = job("verify", {"ids": [h.pk for h in chosen], "filters": {"q": "b", "status": "active"},
                             "preview_count": 4})
    Handle.objects.filter(pk=chosen[0].pk).update(status=Handle.Status.TOMBSTONED)  # stops matching
    late = HandleFactory(prefix=offline_prefix, suffix="b-late")  # matches now, was not previewed
    services.bulk_job_run_slice(created.pk)
    created.refresh_from_db()
    assert (created.progress_total, created.progress_done, created.succeeded, created.skipped) == (4, 4, 3, 1)
    assert not created.items.filter(key=late.pk).exists() and handles[4].pk not in created.items.values_list(
        "key", flat=True)
    assert created.items.get(key=chosen[0].pk).message.startswith(services.NO_LONGER_MATCHES)
    assert job_status(created)["selection"] == (
        "Acts on the 4 handles the selection held when the job was confirmed (its preview showed 4); 1 of "
        "them no longer matched when the job reached it and was left unchanged.")


def test_a_job_over_an_invalid_filter_is_refused(handles):
    with pytest.raises(HandleServiceError, match="There is no collection with id '999'"):
        job("verify", {"filters": {"collection": "999"}})
    with pytest.raises(HandleServiceError, match="Unknown status 'bogus'"):
        job("retry", {"filters": {"handle_filters": {"status": "bogus"}}})
    assert not BulkJob.objects.exists()
