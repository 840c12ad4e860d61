"""The Handle server down for a while, then slow (timeouts), then answering 503: requests retry with
backoff, none ends in `error` before its attempts are spent, the dashboard's data shows the outage while
it lasts, and everything succeeds after recovery."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db.models import F

from handles import services
from handles.models import HandleRequest, Prefix
from tests.reliability.conftest import (
    all_finished,
    assert_applied_in_order,
    assert_server_matches_database,
    drive,
    heavy,
)

pytestmark = [pytest.mark.django_db(transaction=True), heavy]

BACKOFF_BASE, BACKOFF_MAX, TIMEOUT = 0.2, 1.0, 0.5
WORKER_ENV = {"HANDLES_SERVER_TIMEOUT": TIMEOUT, "HANDLES_BACKOFF_BASE_SECONDS": BACKOFF_BASE,
              "HANDLES_BACKOFF_MAX_SECONDS": BACKOFF_MAX, "HANDLES_LEASE_SECONDS": 5}

# Each phase: the fault, what a failed attempt's error says, and what the request's transcript shows.
PHASES = [
    ("down", {}, "Could not reach", "ConnectionError"),
    ("slow", {"delay": 3 * TIMEOUT}, f"Timed out after {TIMEOUT:g} s", "-> timeout"),
    ("503", {}, "HTTP 503", "-> 503"),
]


def no_early_errors() -> None:
    early = HandleRequest.objects.filter(status="error", attempts__lt=F("max_attempts"))
    assert not early.exists(), f"ended in error before their attempts were spent: {[(r, r.error) for r in early]}"


def assert_backoff(requests) -> None:
    """A failed attempt schedules the next one min(base * 2^(attempts-1), max) seconds later."""
    checked = 0
    for request in requests.filter(status="queued", next_attempt_at__isnull=False, attempts__gte=1):
        expected = min(BACKOFF_BASE * 2 ** (request.attempts - 1), BACKOFF_MAX)
        # next_attempt_at is computed from the same clock reading, a moment before updated_at is stamped
        assert abs((request.next_attempt_at - request.updated_at) - timedelta(seconds=expected)) < timedelta(
            seconds=0.1), (request.attempts, request.next_attempt_at, request.updated_at)
        checked += 1
    assert checked


def test_down_then_slow_then_503_then_recovery(prefix, sim, clusters, settings, stem):
    settings.HANDLES_MAX_ATTEMPTS = 200  # more than the outage can use up
    clusters("outage", **WORKER_ENV)
    mints = [services.handle_mint(prefix=prefix, suffix=f"{stem}-{i}", target_url=f"https://example.org/{i}")
             for i in range(9)]
    *mints, spare = mints
    drive(all_finished(), timeout=30, what="the mints")
    prefix.refresh_from_db()
    assert prefix.last_contact_ok is True and prefix.last_contact_error == ""

    sim.set_fault("down")
    redirects = [services.handle_redirect(handle=m.handle, target_url=f"https://example.org/{i}/moved")
                 for i, m in enumerate(mints)]
    settings.HANDLES_MAX_ATTEMPTS = 3
    doomed = services.handle_tombstone(handle=spare.handle, reason="withdrawn")  # only 3 attempts
    waiting = HandleRequest.objects.filter(pk__in=[r.pk for r in redirects])

    for mode, options, error, _ in PHASES:
        sim.set_fault(mode, **options)

        def outage_shown(error=error) -> bool:
            prefix.refresh_from_db()
            retried = waiting.filter(status__in=["queued", "running"], attempts__gte=2, error__contains=error).count()
            return retried == len(redirects) and prefix.last_contact_ok is False and error in prefix.last_contact_error

        drive(outage_shown, timeout=40, sweep_every=0.5, check=no_early_errors, what=f"the '{mode}' outage")
        assert not waiting.filter(status__in=["success", "error"]).exists()
        assert_backoff(waiting)

    doomed.refresh_from_db()
    assert doomed.status == "error" and doomed.attempts == doomed.max_attempts == 3
    assert doomed.error.startswith("Gave up after 3 attempts")

    sim.clear_faults()
    drive(all_finished(), timeout=40, sweep_every=0.5, check=no_early_errors, what="recovery")
    services.request_retry(request=doomed)  # staff press "retry now" once the server is back
    drive(all_finished(), timeout=30, what="the retried tombstone")

    for request in waiting:
        assert request.status == "success"
        for _, _, _, transcript in PHASES:  # every request met every phase of the outage and retried
            assert transcript in request.server_output, (transcript, request.server_output)
    doomed.refresh_from_db()
    assert doomed.status == "success"
    prefix.refresh_from_db()
    assert prefix.last_contact_ok is True and prefix.last_contact_error == ""
    handle_ids = [m.handle_id for m in [*mints, spare]]
    assert_applied_in_order(handle_ids)
    assert_server_matches_database(sim, prefix, handle_ids)
    assert Prefix.objects.get(pk=prefix.pk).last_contact_at is not None
