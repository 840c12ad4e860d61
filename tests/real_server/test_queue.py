"""The queue end to end with a real worker (manage.py qcluster) against the real server, logged in by
secret key and by client certificate: every kind of change, verified on the server."""

from __future__ import annotations

import pytest

from handles import services, tasks
from handles.handle_server.client import HandleServerClient
from handles.models import HandleRequest
from tests.real_server.conftest import WORKER_ENV, assert_server_matches_database
from tests.reliability.conftest import all_finished, drive, status_counts

pytestmark = pytest.mark.django_db(transaction=True)


def test_every_change_reaches_the_server_through_a_real_worker(real_prefix, clusters,
                                                               admin_client: HandleServerClient):
    clusters("real", **WORKER_ENV)
    mints = [services.handle_mint(prefix=real_prefix, target_url=f"https://example.org/q/{i}") for i in range(20)]
    handles = [m.handle for m in mints]
    for i, handle in enumerate(handles[:6]):
        services.handle_redirect(handle=handle, target_url=f"https://example.org/q/{i}/moved")
    for handle in handles[6:10]:
        services.handle_tombstone(handle=handle, reason="withdrawn")
    services.handle_restore(handle=handles[6])
    for handle in handles[10:12]:
        services.handle_delete(handle=handle, reason="minted by mistake")
    services.handle_verify(handle=handles[0])
    drive(all_finished(), timeout=120, what="the changes", sweep=tasks.sweep_requests)
    assert status_counts() == {"success": HandleRequest.objects.count()}
    assert assert_server_matches_database(admin_client, real_prefix) == 18
