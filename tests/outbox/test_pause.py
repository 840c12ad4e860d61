"""Authentication failures belong to the prefix, not to a request (handles.outbox.pause): a 401/402 pauses the prefix's queue
with attempts unspent, a probe checks the credentials with backoff, and the queue resumes by itself."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from django_q.models import Schedule

from handles import tasks
from handles.models import HandleRequest, Prefix
from handles.outbox import pause
from handles.outbox.claims import request_claim, requests_claim_batch
from handles.services import handles as handle_services
from tests.conftest import SECRET_ENV

pytestmark = pytest.mark.django_db


def mint_three(prefix, run_queue, unique_suffix) -> list[HandleRequest]:
    return [run_queue(handle_services.handle_mint, prefix=prefix, suffix=unique_suffix("auth"),
                      target_url=f"https://example.org/auth/{i}") for i in range(3)]


def refreshed(requests: list[HandleRequest]) -> list[HandleRequest]:
    return list(HandleRequest.objects.filter(pk__in=[r.pk for r in requests]).order_by("pk"))


@pytest.fixture(autouse=True)
def probe_at_once(settings):
    """Each probe is due as soon as the one before has failed (the backoff test sets its own)."""
    settings.HANDLES_AUTH_PROBE_BASE_SECONDS = 0


def test_shutdown_401_pauses_the_prefix_and_the_probe_resumes_it(prefix, sim, run_queue, unique_suffix,
                                                                django_capture_on_commit_callbacks):
    sim.set_fault("shutdown")
    mints = mint_three(prefix, run_queue, unique_suffix)
    prefix.refresh_from_db()
    assert prefix.auth_failing and "credentials" in prefix.auth_error
    first, *others = refreshed(mints)
    for request in refreshed(mints):
        assert (request.status, request.attempts, request.finished_at) == ("queued", 0, None)
    # The first met the 401; the others were not even tried: the prefix was paused by then.
    assert first.error.startswith("Waiting: The Handle server did not accept our credentials (HTTP 401)")
    assert "-> 401" in first.server_output
    assert [(r.error, r.server_output) for r in others] == [("", "")] * 2
    # One probe is scheduled; nothing of the prefix is due, claimable or handed out meanwhile.
    probes = Schedule.objects.filter(func="handles.tasks.probe_prefix_auth", args=repr(prefix.pk))
    assert probes.count() == 1 and probes.get().next_run == prefix.auth_probe_at
    assert not HandleRequest.objects.due().filter(pk__in=[r.pk for r in mints]).exists()
    assert request_claim(mints[0].pk) == "paused"
    assert requests_claim_batch(10) == []
    assert HandleRequest.objects.paused().filter(pk__in=[r.pk for r in mints]).count() == 3

    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.probe_prefix_auth(prefix.pk).startswith("still failing")  # still shutting down
    prefix.refresh_from_db()
    assert prefix.auth_probes == 1 and prefix.auth_failing
    assert Schedule.objects.filter(func="handles.tasks.probe_prefix_auth").count() == 2  # the next probe

    sim.clear_faults()
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.probe_prefix_auth(prefix.pk) == "recovered"
    prefix.refresh_from_db()
    assert not prefix.auth_failing and prefix.auth_error == "" and prefix.auth_probe_at is None
    for request in refreshed(mints):
        assert (request.status, request.attempts, request.error) == ("success", 1, "")
    assert tasks.probe_prefix_auth(prefix.pk) == "not paused"


def test_a_wrong_secret_then_corrected_ends_nothing_in_error(prefix, sim, run_queue, unique_suffix, monkeypatch,
                                                             django_capture_on_commit_callbacks):
    monkeypatch.setenv(SECRET_ENV, "an-operator-typo")
    mints = mint_three(prefix, run_queue, unique_suffix)
    redirect = run_queue(handle_services.handle_redirect, handle=mints[0].handle, target_url="https://example.org/moved")
    assert {r.status for r in refreshed([*mints, redirect])} == {"queued"}
    # The minute sweep neither hands them out nor lets them end; it probes when the probe is due.
    Prefix.objects.filter(pk=prefix.pk).update(auth_probe_at=timezone.now() - timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=True):
        tasks.sweep_requests()
    prefix.refresh_from_db()
    assert prefix.auth_failing and prefix.auth_probes == 1
    assert {r.status for r in refreshed([*mints, redirect])} == {"queued"}

    monkeypatch.setenv(SECRET_ENV, sim.secret)
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.probe_prefix_auth(prefix.pk) == "recovered"
    final = refreshed([*mints, redirect])
    assert [(r.status, r.attempts) for r in final] == [("success", 1)] * 4
    assert not HandleRequest.objects.filter(status="error").exists()


def test_probes_back_off_up_to_the_maximum(prefix, settings):
    settings.HANDLES_AUTH_PROBE_BASE_SECONDS, settings.HANDLES_AUTH_PROBE_MAX_SECONDS = 5, 30
    now = timezone.now()
    assert pause.prefix_auth_failed(prefix_id=prefix.pk, error="refused", now=now) is True
    assert pause.prefix_auth_failed(prefix_id=prefix.pk, error="refused again", now=now) is False  # one pause
    delays = []
    for _ in range(5):
        pause.prefix_auth_probe_failed(prefix_id=prefix.pk, error="refused", now=now)
        prefix.refresh_from_db()
        delays.append((prefix.auth_probe_at - now).total_seconds())
    assert delays == [10, 20, 30, 30, 30]
    assert pause.prefix_auth_recovered(prefix_id=prefix.pk) is True
    assert pause.prefix_auth_recovered(prefix_id=prefix.pk) is False


def test_two_probes_at_once_make_one_probe_and_one_next_schedule(prefix, sim, settings, monkeypatch,
                                                                  django_capture_on_commit_callbacks):
    """The probe's schedule and the minute sweep may both fire: one probes, the other finds it not due."""
    settings.HANDLES_AUTH_PROBE_BASE_SECONDS = 5
    monkeypatch.setenv(SECRET_ENV, "wrong")
    with django_capture_on_commit_callbacks(execute=True):
        pause.prefix_auth_failed(prefix_id=prefix.pk, error="refused", now=timezone.now() - timedelta(seconds=10))
        assert tasks.probe_prefix_auth(prefix.pk).startswith("still failing")
        assert tasks.probe_prefix_auth(prefix.pk) == "not due"
        tasks.sweep_requests()  # the sweep probes only due prefixes
    prefix.refresh_from_db()
    assert prefix.auth_probes == 1
    # The pause's first probe, and the one the failed probe set: none from the probes that were not due.
    assert Schedule.objects.filter(func="handles.tasks.probe_prefix_auth").count() == 2


def test_staff_see_the_pause_and_cancel_the_waiting_requests(prefix, sim, run_queue, unique_suffix, staff_client,
                                                              staff_user, superuser, client):
    sim.set_fault("shutdown")
    mints = mint_three(prefix, run_queue, unique_suffix)
    since = Prefix.objects.get(pk=prefix.pk).auth_failing_since
    dashboard = staff_client.get(reverse("admin:index")).content.decode()
    assert "authentication failing since" in dashboard and "3 requests waiting" in dashboard
    waiting_list = f"{reverse('admin:handles_handlerequest_changelist')}?prefix={prefix.pk}&amp;status__exact=queued"
    assert waiting_list in dashboard
    client.force_login(superuser)
    page = client.get(reverse("admin:handles_prefix_change", args=[prefix.pk])).content.decode()
    assert "authentication failing since" in page and timezone.localtime(since).strftime("%Y-%m-%d %H:%M") in page

    client.force_login(staff_user)
    response = client.post(reverse("admin:handles_handlerequest_changelist"), {
        "action": "cancel_selected", "_selected_action": [mints[0].pk, mints[1].pk]})
    assert response.status_code == 302
    cancelled, _, waiting = refreshed(mints)
    assert cancelled.status == "error" and cancelled.error.startswith(f"Cancelled by {staff_user.username} before it reached the server.")
    assert waiting.status == "queued"
    sim.clear_faults()
