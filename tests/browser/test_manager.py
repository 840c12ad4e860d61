"""A collection manager in a real browser: browses, filters, exports, and cannot change anything."""

from __future__ import annotations

from playwright.sync_api import expect

from handles.desk.models import Collection
from handles.models import Handle, HandleRequest
from tests.browser.conftest import BROWSER, log_in
from tests.factories import AssetFactory, HandleFactory, PrefixFactory

pytestmark = BROWSER


def test_manager_browses_filters_exports_and_cannot_change_anything(page, shot, manager_user):
    prefix = PrefixFactory()
    for i in range(3):
        HandleFactory(prefix=prefix, suffix=f"map-{i}", synced_version=1,
                      asset=AssetFactory(source_system="dams", external_id=f"maps-{i}", title=f"Map of Iowa {i}"))
    letter = HandleFactory(prefix=prefix, suffix="letter", status=Handle.Status.TOMBSTONED, synced_version=1,
                           tombstone_reason="Duplicate", asset=AssetFactory(source_system="archivesspace",
                                                                            title="=cmd|' /C calc'!A0"))
    Collection.objects.create(name="Maps", source_system="dams", external_id_prefix="maps-")
    log_in(page, "manager")
    expect(page.locator("#hd-dashboard")).to_be_visible()

    page.goto("/browse/")
    expect(page.locator("#browse-count")).to_have_text("4 handles")
    shot(page, "10-browse")
    page.select_option("#id_collection", label="Maps")
    page.click("#browse-filters button[type=submit]")
    expect(page.locator("#browse-count")).to_have_text("3 handles")
    page.select_option("#id_collection", "")
    page.select_option("#id_status", "tombstoned")
    page.click("#browse-filters button[type=submit]")
    expect(page.locator("#browse-table tbody tr")).to_have_count(1)
    expect(page.locator("#browse-table")).to_contain_text("20.500.12345/letter")
    shot(page, "11-browse-filtered")

    with page.expect_download() as download:
        page.click("#browse-export")
    rows = download.value.path().read_text(encoding="utf-8-sig").splitlines()
    assert rows[0].startswith("handle,resolver_url,target_url,status,sync")
    assert len(rows) == 2 and rows[1].startswith("20.500.12345/letter,") and ",'=cmd|" in rows[1]

    page.click("#browse-table a:text('20.500.12345/letter')")
    expect(page.locator("h1")).to_have_text("hdl:20.500.12345/letter")
    expect(page.locator("dl.facts")).to_contain_text("Duplicate")
    shot(page, "12-browse-detail")

    # The admin is read-only for them: no tools, no actions, and the write pages refuse.
    page.goto(f"/admin/handles/handle/{letter.pk}/change/")
    expect(page.locator(".object-tools")).not_to_contain_text("Restore")
    page.goto("/admin/handles/handle/")
    expect(page.locator("select[name=action]")).to_have_count(0)
    expect(page.locator("text=Mint a handle")).to_have_count(0)
    assert page.goto(f"/admin/handles/handle/{letter.pk}/restore/").status == 403
    assert page.goto("/admin/handles/handle/add/").status == 403
    status = page.evaluate("""async (url) => {
        const token = document.cookie.split('; ').find(c => c.startsWith('csrftoken=')).split('=')[1];
        const body = new URLSearchParams({reason: 'manager tried'});
        const response = await fetch(url, {method: 'POST', body, headers: {'X-CSRFToken': token}});
        return response.status;
    }""", f"/admin/handles/handle/{letter.pk}/restore/")
    assert status == 403
    letter.refresh_from_db()
    assert letter.status == Handle.Status.TOMBSTONED and not HandleRequest.objects.exists()
