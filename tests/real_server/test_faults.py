"""Faults on the real server, with a real worker: a clean shutdown (SIGTERM) in the middle of 1,000 mints,
and a wrong secret later corrected. Neither may end a request in error: the shutdown's refusals (401)
pause the prefix, its outage is retried, and everything succeeds once the server is back."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from handles import services, tasks
from handles.models import HandleRequest, Prefix
from tests.real_server.conftest import (
    SECRET_ENV,
    WORKER_ENV,
    WRONG_SECRET_ENV,
    assert_server_matches_database,
    make_prefix,
)
from tests.reliability.conftest import all_finished, drive, status_counts
from tests.worker_process import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def no_errors() -> None:
    errors = list(HandleRequest.objects.filter(status="error").values_list("full_handle", "error")[:5])
    assert not errors, errors


def test_sigterm_in_the_middle_of_1000_mints_then_restart(clean_server, clusters, admin_client):
    prefix = make_prefix(clean_server, "secret key")
    clusters("sigterm", **WORKER_ENV)
    stopped_at: dict[str, int] = {}

    def shut_down_mid_batch() -> None:
        try:
            wait_for(lambda: HandleRequest.objects.filter(status="success").count() >= 150, timeout=120,
                     interval=0.05, what="150 mints on the server")
            clean_server.terminate()
            stopped_at.update(status_counts())
        finally:
            connection.close()  # this thread's own database connection

    stopper = threading.Thread(target=shut_down_mid_batch)
    stopper.start()
    for i in range(1000):
        services.handle_mint(prefix=prefix, target_url=f"https://example.org/sigterm/{i}")
    stopper.join()
    assert stopped_at.get("success", 0) < 1000, stopped_at  # the server went away mid-batch
    drive(lambda: HandleRequest.objects.filter(attempts__gte=2).exists() or Prefix.objects.get().auth_failing,
          timeout=60, what="the queue to meet the stopped server", check=no_errors)
    clean_server.start()

    drive(all_finished(), timeout=180, what="the 1,000 mints", check=no_errors, sweep=tasks.sweep_requests)
    assert status_counts() == {"success": 1000}
    assert assert_server_matches_database(admin_client, prefix) == 1000


def test_a_wrong_secret_then_corrected_ends_nothing_in_error(clean_server, clusters, admin_client):
    prefix = make_prefix(clean_server, "secret key", secret_env_var=WRONG_SECRET_ENV)
    clusters("secret", **WORKER_ENV)
    for i in range(50):
        services.handle_mint(prefix=prefix, target_url=f"https://example.org/secret/{i}")

    def paused() -> bool:
        prefix.refresh_from_db()
        return prefix.auth_failing and not HandleRequest.objects.filter(status="running").exists()

    drive(paused, timeout=60, what="the prefix to pause", check=no_errors, sweep=tasks.sweep_requests)
    assert "did not accept our credentials" in prefix.auth_error
    # Probes keep failing, with backoff; the requests wait with their attempts unspent.
    drive(lambda: Prefix.objects.get().auth_probes >= 2, timeout=60, what="two failed probes", check=no_errors,
          sweep=tasks.sweep_requests)
    assert status_counts() == {"queued": 50}
    assert not HandleRequest.objects.filter(attempts__gt=1).exists()

    prefix.secret_env_var = SECRET_ENV  # the operator corrects the prefix's secret
    services.prefix_save(prefix=prefix)
    # No sweep ticks from here on: the worker's scheduler runs the pending probe (a one-off schedule, looked
    # at every 30 s), which resumes the queue by itself.
    finished = all_finished()

    def resumed() -> bool:
        no_errors()
        return finished()

    wait_for(resumed, timeout=150, interval=0.5, what="the probe schedule to resume the 50 mints")
    assert not Prefix.objects.get().auth_failing
    assert status_counts() == {"success": 50}
    assert assert_server_matches_database(admin_client, prefix) == 50
