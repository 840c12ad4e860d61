"""Reads of the desk: sync state (display and filter agree), search, capped counts, error groups, worker."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import Schedule

from handles import selectors as core
from handles.desk import selectors
from handles.desk.filters import DESK, InvalidFilter
from handles.desk.selectors import SyncState
from handles.models import Handle, HandleRequest
from handles.repair.models import JobState, ReconciliationRow, ReconciliationRun
from tests.factories import AssetFactory, HandleFactory, PrefixFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def offline_prefix():
    return PrefixFactory()


def req(handle, status, op="update", error="", version=None):
    return HandleRequest.objects.create(handle=handle, op=op, action={"update": "redirect"}.get(op, op),
                                        full_handle=handle.full_handle, handle_version=version or handle.version,
                                        status=status, error=error)


@pytest.fixture
def states(offline_prefix):
    """One handle in each sync state, and the state each must show."""
    expected = {}

    def make(suffix, state, version=1, synced=1):
        handle = HandleFactory(prefix=offline_prefix, suffix=suffix, version=version, synced_version=synced)
        expected[suffix] = state
        return handle

    req(make("synced", SyncState.IN_SYNC), "success")
    make("never-asked", SyncState.IN_SYNC)
    req(make("queued", SyncState.PENDING, version=2), "queued")
    req(make("running", SyncState.PENDING, version=2), "running")
    make("unconfirmed", SyncState.PENDING, version=3, synced=2)
    req(make("failed", SyncState.ERROR, version=2), "error", error="Permission denied")
    retried = make("retried", SyncState.PENDING, version=2)
    req(retried, "error", error="x")
    req(retried, "queued")
    healed = make("healed", SyncState.IN_SYNC)
    req(healed, "error", error="old failure")
    req(healed, "success")
    req(make("drift", SyncState.DRIFT), "error", op="verify", error="Drift: the server resolves to 'a'; we intend 'b'.")
    req(make("missing", SyncState.DRIFT), "error", op="verify",
        error="20.500.12345/missing is missing on the Handle server.")
    req(make("verify-outage", SyncState.ERROR), "error", op="verify", error="Gave up after 10 attempts. Last error: x")
    return expected


def test_health_of_each_handle_matches_its_state(states):
    shown = {h.suffix: selectors.health_of(h).state for h in selectors.with_health(Handle.objects.all())}
    assert shown == states


@pytest.mark.parametrize("state", [s for s, _ in SyncState.CHOICES])
def test_the_sync_filter_selects_exactly_the_handles_shown_in_that_state(states, state):
    filtered = set(selectors.filter_sync_state(Handle.objects.all(), state).values_list("suffix", flat=True))
    assert filtered == {suffix for suffix, s in states.items() if s == state}


def test_health_without_annotations_reads_the_same(states):
    handle = Handle.objects.get(suffix="failed")
    assert selectors.health_of(handle) == selectors.Health(SyncState.ERROR, "Permission denied")


def test_latest_reconciliation_reports_drift_until_the_handle_is_pushed_again(offline_prefix):
    handle = HandleFactory(prefix=offline_prefix, suffix="rec", synced_version=1,
                           synced_at=timezone.now() - timedelta(days=1))
    old_run = ReconciliationRun.objects.create(prefix=offline_prefix, state=JobState.DONE,
                                               finished_at=timezone.now() - timedelta(days=2))
    run = ReconciliationRun.objects.create(prefix=offline_prefix, state=JobState.DONE, finished_at=timezone.now())
    ReconciliationRow.objects.create(run=old_run, kind="missing", full_handle=handle.full_handle, handle=handle)
    assert list(selectors.filter_sync_state(Handle.objects.all(), SyncState.DRIFT)) == []
    ReconciliationRow.objects.create(run=run, kind="url_differs", full_handle=handle.full_handle, handle=handle)
    assert list(selectors.filter_sync_state(Handle.objects.all(), SyncState.DRIFT)) == [handle]
    assert selectors.health_of(handle).state == SyncState.DRIFT
    Handle.objects.filter(pk=handle.pk).update(synced_at=timezone.now() + timedelta(seconds=1))
    assert selectors.health_of(Handle.objects.get(pk=handle.pk)).state == SyncState.IN_SYNC
    assert list(selectors.filter_sync_state(Handle.objects.all(), SyncState.IN_SYNC)) == [handle]


def test_search_by_asset_ids_or_by_join_when_the_term_is_common(offline_prefix, monkeypatch):
    for i in range(4):
        HandleFactory(prefix=offline_prefix, suffix=f"s{i}", asset=AssetFactory(title=f"Map of Iowa {i}"))
    HandleFactory(prefix=offline_prefix, suffix="other", asset=AssetFactory(title="Letter"))
    by_ids = core.handle_search(Handle.objects.all(), "map of iowa")
    assert "handles_asset" not in str(by_ids.query)  # the ids were found first, through the assets' index
    monkeypatch.setattr(core, "SEARCH_ASSET_IDS", 2)
    by_join = core.handle_search(Handle.objects.all(), "map of iowa")
    assert "JOIN \"handles_asset\"" in str(by_join.query)
    for found in (by_ids, by_join):
        assert sorted(found.values_list("suffix", flat=True)) == ["s0", "s1", "s2", "s3"]


def test_search_term_with_a_slash_that_is_not_one_of_our_handles_searches_urls(offline_prefix):
    HandleFactory(prefix=offline_prefix, suffix="u", target_url="https://example.org/objects/123")
    assert core.handle_search(Handle.objects.all(), "objects/123").get().suffix == "u"


def test_capped_count_and_paginator(offline_prefix):
    for i in range(7):
        HandleFactory(prefix=offline_prefix, suffix=f"c{i}")
    assert core.capped_count(Handle.objects.all(), 5) == (5, True)
    assert core.capped_count(Handle.objects.all(), 10) == (7, False)


def test_paginator_serves_pages_past_the_cap(offline_prefix, settings):
    settings.HANDLES_DESK_COUNT_LIMIT = 3
    for i in range(7):
        HandleFactory(prefix=offline_prefix, suffix=f"p{i}")
    paginator = core.CappedCountPaginator(Handle.objects.order_by("pk"), 2)
    assert (paginator.count, paginator.count_capped, paginator.count_limit) == (4, True, 3)
    assert [h.suffix for h in paginator.page(4).object_list] == ["p6"]


def test_handle_filter_refuses_malformed_values_and_describes_itself(offline_prefix):
    HandleFactory(prefix=offline_prefix, suffix="f")
    with pytest.raises(InvalidFilter) as refused:
        DESK.parse({"prefix": "x", "status": "bogus", "sync": "nope", "source": "nowhere", "collection": "999",
                    "q": ["a", "f"], "stauts": "active"})
    assert set(refused.value.problems) == {"prefix", "status", "sync", "source", "collection", "stauts"}
    assert "Unknown status 'bogus'" in str(refused.value)
    assert refused.value.details["stauts"].code == "unknown_field"
    assert DESK.parse({"q": ["a", "f"]}).queryset().get().suffix == "f"
    assert DESK.parse({"status": "active", "q": "map"}).describe() == 'all handles matching "map", status active'


def test_error_signature_groups_one_outage(offline_prefix):
    for i, attempts in enumerate((10, 12)):
        handle = HandleFactory(prefix=offline_prefix, suffix=f"e{i}")
        req(handle, "error", error=f"Gave up after {attempts} attempts. Last error: HTTPSConnectionPool(host='hs', "
                                   f"port=8000): Max retries exceeded with url: /api/handles/{handle.full_handle}")
    groups = core.failure_groups(core.failed_requests())
    assert len(groups) == 1 and groups[0]["count"] == 2
    assert "after N attempts" in groups[0]["signature"] and "e0" not in groups[0]["signature"]
    assert core.with_signature(core.failed_requests(), groups[0]["signature"]).count() == 2


def test_worker_state_follows_the_sweep_schedule():
    schedule = Schedule.objects.get(func="handles.tasks.sweep_requests")
    now = timezone.now()
    assert not selectors.worker_state(now).alive
    Schedule.objects.filter(pk=schedule.pk).update(task="abc", next_run=now + timedelta(seconds=30))
    assert selectors.worker_state(now).alive
    Schedule.objects.filter(pk=schedule.pk).update(next_run=now - timedelta(minutes=10))
    state = selectors.worker_state(now)
    assert not state.alive and "since" in state.detail


def test_a_worker_that_just_pushed_a_request_shows_as_running_before_its_first_sweep():
    """Right after `make run` the worker pushes the demo's requests at once; its first sweep comes later."""
    now = timezone.now()
    assert not Schedule.objects.get(func="handles.tasks.sweep_requests").task
    handle = HandleFactory(prefix=PrefixFactory())
    request = HandleRequest.objects.create(handle=handle, op="create", action="mint", full_handle=handle.full_handle,
                                           handle_version=1)
    assert not selectors.worker_state(now).alive  # queued, nobody worked on it
    HandleRequest.objects.filter(pk=request.pk).update(status="success", finished_at=now - timedelta(seconds=5))
    state = selectors.worker_state(now)
    assert state.alive and "finished a request" in state.detail
    assert not selectors.worker_state(now + timedelta(minutes=10)).alive  # ...and not forever


def test_source_systems_lists_each_once():
    for source in ("dams", "dams", "archivesspace", "alma"):
        AssetFactory(source_system=source)
    assert core.source_systems() == ["alma", "archivesspace", "dams"]
