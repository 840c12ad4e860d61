"""Staff in a real browser: log in, mint, redirect through the preview rule, tombstone, see it succeed."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from handles import services
from handles.handle_server.client import client_for
from handles.models import Handle
from tests.browser.conftest import BROWSER, log_in

pytestmark = BROWSER


def history_row(page, action: str):
    return page.locator("#hd-history tbody tr", has_text=action)


def test_staff_mint_redirect_by_rule_and_tombstone(page, shot, staff_user, prefix, sim):
    log_in(page, "staff")
    expect(page.locator("#hd-dashboard")).to_contain_text("Worker")
    # The dashboard takes the page's width beside "Recent actions" (the admin's index keeps 600 px).
    assert page.locator("#hd-dashboard").bounding_box()["width"] > 0.6 * page.viewport_size["width"]
    shot(page, "01-dashboard")

    # Mint: the preview names the exact handle before anything exists.
    page.click("text=Mint a handle")
    page.fill("#id_suffix", "Browser-1")
    page.fill("#id_target_url", "https://dams.example.edu/node/501")
    page.click("input[name=_preview]")
    expect(page.locator("#hd-mint-preview")).to_contain_text("hdl:20.500.12345/Browser-1")
    assert not Handle.objects.exists()
    shot(page, "02-mint-preview")
    page.click("input[name=_mint]")
    expect(page.locator(".messagelist")).to_contain_text("Minted 20.500.12345/Browser-1")
    expect(history_row(page, "Mint")).to_contain_text("success")
    handle = Handle.objects.get()

    # Redirect through the find-and-replace rule: preview old → new, then apply.
    page.goto("/admin/handles/handle/?q=browser-1")
    page.check(f"input.action-select[value='{handle.pk}']")
    page.select_option("select[name=action]", "redirect_rule_selected")
    page.click("button[name=index]")
    page.fill("#id_find", "dams.example.edu")
    page.fill("#id_replace", "collections.example.edu")
    page.click("input[name=_preview]")
    preview = page.locator("#hd-rule-preview")
    expect(preview).to_contain_text("https://dams.example.edu/node/501")
    expect(preview).to_contain_text("https://collections.example.edu/node/501")
    shot(page, "03-redirect-rule-preview")
    page.click("input[name=confirm]")
    expect(page.locator(".messagelist")).to_contain_text("1 ok")
    expect(page.locator("#result_list")).to_contain_text("https://collections.example.edu/node/501")
    shot(page, "04-changelist")

    # Tombstone from the handle's page, with a reason and a successor.
    page.click("#result_list a:text('20.500.12345/Browser-1')")
    page.click(".object-tools >> text=Tombstone")
    page.fill("#id_reason", "Replaced by a better scan.")
    page.fill("#id_successor_url", "https://collections.example.edu/node/777")
    page.click("input[name=_submit]")
    expect(page.locator(".messagelist")).to_contain_text("Tombstone of 20.500.12345/Browser-1 queued")

    # The history: each change, its before → after, and the request's success on the server.
    expect(history_row(page, "Tombstone")).to_contain_text("success")
    redirect = history_row(page, "Redirect")
    expect(redirect).to_contain_text("https://dams.example.edu/node/501")
    expect(redirect).to_contain_text("https://collections.example.edu/node/501")
    expect(redirect).to_contain_text("success")
    expect(history_row(page, "Tombstone")).to_contain_text("active→tombstoned")
    shot(page, "05-handle-history")
    handle.refresh_from_db()
    assert client_for(prefix.server_config()).get_url(handle.full_handle)[0] == handle.tombstone_url

    # Server output is one click away.
    history_row(page, "Tombstone").locator("summary").click()
    expect(history_row(page, "Tombstone").locator("pre")).to_contain_text("Verified: the server resolves to")

    page.goto("/admin/handles/handlerequest/")
    expect(page.locator("#result_list")).to_contain_text("20.500.12345/Browser-1")
    shot(page, "06-request-log")


def test_staff_run_a_selection_as_a_background_job(page, shot, staff_user, prefix, settings):
    settings.HANDLES_DESK_INLINE_LIMIT = 2
    for i in range(4):  # on the server too (the queue runs inline as each mint commits)
        services.handle_mint(prefix=prefix, suffix=f"job-{i}", target_url=f"https://dams.example.edu/node/{i}")
    log_in(page, "staff")
    page.goto("/admin/handles/handle/?q=job-")
    page.check("#action-toggle")
    page.select_option("select[name=action]", "verify_selected")
    page.click("button[name=index]")
    page.wait_for_url(re.compile(r"/admin/handles_desk/bulkjob/\d+/change/"))
    # Done means every verify was read back from the server, not merely queued.
    expect(page.locator("#hd-job-status")).to_have_text("Done: verified on the server")
    expect(page.locator("#hd-job-counts")).to_contain_text("4 of 4 done: 4 queued")
    expect(page.locator("#hd-job-verification")).to_contain_text("On the server: 4 of 4 verified, 0 failed")
    shot(page, "07-bulk-job")
    with page.expect_download() as download:
        page.click("#hd-job-report")
    report = download.value.path().read_text(encoding="utf-8-sig").splitlines()
    assert report[0].startswith("handle,outcome,message") and len(report) == 5
