"""Reconciliation against the real server: drift planted on the server and in our records is found,
class by class, and the repair brings both back together."""

from __future__ import annotations

import pytest

from handles import services as handle_services
from handles.handle_server import records
from handles.models import Handle
from handles.repair import selectors, services
from handles.repair.models import JobState, ReconciliationRow, ReconciliationRun
from tests.factories import HandleFactory
from tests.real_server.conftest import assert_server_matches_database

Kind = ReconciliationRow.Kind
pytestmark = pytest.mark.django_db


def reconcile_now(run_queue, prefix) -> ReconciliationRun:
    run = run_queue(services.reconciliation_start, prefix=prefix)
    run.refresh_from_db()
    assert run.state == JobState.DONE, run.error
    return run


def test_planted_drift_is_found_and_repaired(real_prefix, run_queue, admin_client):
    prefix = real_prefix.prefix

    def mint(suffix: str, url: str) -> Handle:
        request = run_queue(handle_services.handle_mint, prefix=real_prefix, suffix=suffix, target_url=url)
        assert request.status == "success", request.error
        return request.handle

    def server_put(suffix: str, url: str) -> None:
        admin_client.create_handle(f"{prefix}/{suffix}", records.new_record(
            url, admin_handle=f"{prefix}/ADMIN", admin_index=300, permissions="111111111111"))

    mint("insync", "https://example.org/r/1")
    mint("differs", "https://example.org/r/2")
    mint("missing", "https://example.org/r/3")
    tomb = mint("tomb", "https://example.org/r/4")
    run_queue(handle_services.handle_tombstone, handle=tomb, reason="withdrawn")
    # Drift: someone changed the server behind our back, and records of ours the server never saw.
    admin_client.update_values(f"{prefix}/differs", [records.url_value("https://example.org/elsewhere")])
    admin_client.delete_handle(f"{prefix}/missing")
    admin_client.update_values(f"{prefix}/tomb", [records.url_value("https://example.org/r/4")])
    HandleFactory(prefix=real_prefix, suffix="deleted", target_url="https://example.org/r/5",
                  status=Handle.Status.DELETED)
    server_put("deleted", "https://example.org/r/5")
    server_put("1742400039", "https://example.org/vendor")

    run = reconcile_now(run_queue, real_prefix)
    found = {row.full_handle.upper(): row.kind for row in run.rows.all()}
    assert found == {f"{prefix}/DIFFERS": Kind.URL_DIFFERS, f"{prefix}/MISSING": Kind.MISSING,
                     f"{prefix}/TOMB": Kind.TOMBSTONE_DRIFT, f"{prefix}/DELETED": Kind.DELETED_ON_SERVER,
                     f"{prefix}/1742400039": Kind.ORPHAN}
    assert run.counts["in_sync"] == 1 and run.counts["admin"] == 1

    job = run_queue(services.repair_start, run=run, kinds=Kind.values)
    job.refresh_from_db()
    assert job.counts == {"create": 1, "update": 2, "delete": 1, "adopt": 1}
    assert selectors.repair_verification(run) == {"success": 5}
    assert reconcile_now(run_queue, real_prefix).drift == 0
    assert assert_server_matches_database(admin_client, real_prefix) == 5
