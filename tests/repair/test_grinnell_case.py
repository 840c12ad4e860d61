"""The case of shared/context/000: three objects; one legacy handle works; the two others were given vendor
handles (11084/1742400039, 11084/1742400245) and their legacy handles (11084/99, 11084/32100) do not
resolve. After importing the legacy list, reconciling and repairing, every legacy handle resolves to its
object and the vendor handles still resolve: checked on the simulator and by following each handle."""

from __future__ import annotations

import pytest

from handles.models import Handle, HandleRequest
from handles.repair import selectors, services
from handles.repair.models import HealthOutcome, ImportRow, JobState, ReconciliationRow
from tests.repair.conftest import primo_page, server_put, server_url

Kind = ReconciliationRow.Kind
OBJECTS = {  # legacy suffix: (MMS ID, title, vendor suffix or None)
    "88": ("991011589491704641", "Collembola drawings, plate 3", None),
    "99": ("991011507293904641", "Collembola drawings, plate 4", "1742400039"),
    "32100": ("991011507142104641", "Collembola drawings, plate 5", "1742400245"),
}
LEGACY_LIST = "MMS ID,Handle URL,dc:title\n" + "".join(
    f"{mms},http://hdl.handle.net/11084/{suffix},\"{title}\"\n" for suffix, (mms, title, _) in OBJECTS.items())


@pytest.fixture
def vendor_state(grinnell_live, site):
    """The server as the vendor left it: 11084/88 works, 99 and 32100 only under vendor numbers."""
    urls = {}
    for suffix, (mms, title, vendor) in OBJECTS.items():
        urls[suffix] = primo_page(site, mms, title)
        server_put(grinnell_live, f"11084/{vendor or suffix}", urls[suffix])
    assert server_url(grinnell_live, "11084/99") is None and server_url(grinnell_live, "11084/32100") is None
    return urls


def _import(run_queue, prefix):
    batch = services.import_batch_create(file_name="legacy.csv", content=LEGACY_LIST.encode(), via="test")
    batch = services.import_batch_configure(batch=batch, mapping=batch.mapping, prefix=prefix, source_system="alma")
    batch = services.import_batch_analyse(batch.pk)
    assert batch.counts.get(ImportRow.Outcome.NEW) == 3, (batch.error, batch.counts, list(batch.rows.values_list("reason", flat=True)))
    return run_queue(services.import_batch_apply, batch.pk)


def _reconcile(run_queue, prefix):
    run = run_queue(services.reconciliation_start, prefix=prefix)
    run.refresh_from_db()
    assert run.state == JobState.DONE, run.error
    return run


def test_import_reconcile_repair_makes_every_legacy_handle_resolve(run_queue, grinnell_live, vendor_state, settings):
    settings.HANDLES_HEALTH_ALLOW_PRIVATE = True  # the simulator and the catalogue stand-in are on 127.0.0.1
    settings.HANDLES_HEALTH_HOST_INTERVAL = 0

    # 1. Import the legacy list (adopt: they are supposed to resolve already). Verification tells the truth.
    batch = _import(run_queue, grinnell_live)
    batch.refresh_from_db()
    verified = dict(HandleRequest.objects.filter(op=HandleRequest.Op.VERIFY).values_list("full_handle", "status"))
    assert verified == {"11084/88": "success", "11084/99": "error", "11084/32100": "error"}
    assert "missing on the Handle server" in HandleRequest.objects.get(full_handle="11084/99").error
    # Recorded, but not "applied": two of its handles do not resolve, and the import says so.
    assert batch.state == "incomplete"
    assert batch.verification == {"success": 1, "error": 2, "queued": 0, "running": 0, "unpushed": 0}
    assert batch.error.startswith("2 of 3 handles were not verified on the server. 2 failed; the commonest error "
                                  "(2×), for example: 11084/")
    assert "is missing on the Handle server." in batch.error

    # 2. Reconcile: the two legacy handles are missing; the vendor handles are orphans of known objects.
    run = _reconcile(run_queue, grinnell_live)
    assert {k: run.counts.get(k, 0) for k in ("in_sync", Kind.MISSING, Kind.ORPHAN, Kind.URL_DIFFERS)} == {
        "in_sync": 1, Kind.MISSING: 2, Kind.ORPHAN: 2, Kind.URL_DIFFERS: 0}
    orphans = {r.full_handle: r for r in run.rows.filter(kind=Kind.ORPHAN).select_related("asset")}
    assert set(orphans) == {"11084/1742400039", "11084/1742400245"}
    assert all(r.vendor for r in orphans.values())
    assert orphans["11084/1742400039"].asset.external_id == OBJECTS["99"][0]
    assert set(run.rows.filter(kind=Kind.MISSING).values_list("full_handle", flat=True)) == {"11084/99", "11084/32100"}

    # 3. The repair's dry run says what would happen; then the repair goes through the request queue.
    plan = selectors.repair_plan(run, kinds=[Kind.MISSING, Kind.ORPHAN])
    assert plan.counts == {Kind.MISSING: 2, Kind.ORPHAN: 2}
    assert HandleRequest.objects.filter(action=HandleRequest.Action.REPAIR).count() == 0
    job = run_queue(services.repair_start, run=run, kinds=[Kind.MISSING, Kind.ORPHAN])
    job.refresh_from_db()
    assert job.state == JobState.DONE and job.counts == {"create": 2, "adopt": 2}
    assert job.verification == {"success": 4, "error": 0, "queued": 0, "running": 0, "unpushed": 0}
    assert selectors.repair_verification(run) == {"success": 4}

    # 4. On the server: every legacy handle resolves to its object, and the vendor handles still do.
    for suffix, (_, _, vendor) in OBJECTS.items():
        assert server_url(grinnell_live, f"11084/{suffix}") == vendor_state[suffix]
        if vendor:
            assert server_url(grinnell_live, f"11084/{vendor}") == vendor_state[suffix]

    # 5. Each object with two handles shows them, the legacy one primary, the vendor one flagged.
    asset = Handle.objects.get(suffix="99").asset
    siblings = selectors.asset_handles(asset)
    assert [(s.handle.suffix, s.handle.is_primary, s.vendor) for s in siblings] == [
        ("99", True, False), ("1742400039", False, True)]
    assert set(selectors.assets_with_several_handles().values_list("external_id", flat=True)) == {
        OBJECTS["99"][0], OBJECTS["32100"][0]}

    # 6. Reconciling again finds nothing out of sync; following every handle lands on its object.
    again = _reconcile(run_queue, grinnell_live)
    assert again.drift == 0 and again.counts["in_sync"] == 5
    health = run_queue(services.health_start, filters={"prefix_ids": [grinnell_live.pk], "title_check": True})
    health.refresh_from_db()
    assert health.counts == {HealthOutcome.CORRECT: 5}, list(health.filters)


def test_staff_choose_the_primary_and_the_other_keeps_resolving(run_queue, grinnell_live, vendor_state):
    _import(run_queue, grinnell_live)
    run = _reconcile(run_queue, grinnell_live)
    run_queue(services.repair_start, run=run, kinds=[Kind.MISSING, Kind.ORPHAN])
    from handles import services as core

    vendor = Handle.objects.get(suffix="1742400039")
    legacy = Handle.objects.get(suffix="99")
    redirects = run_queue(core.handle_make_primary, handle=vendor)
    assert redirects == []  # both already lead to the same object: nothing to push
    vendor.refresh_from_db()
    legacy.refresh_from_db()
    assert vendor.is_primary and not legacy.is_primary
    assert server_url(grinnell_live, "11084/99") == server_url(grinnell_live, "11084/1742400039") == vendor_state["99"]
