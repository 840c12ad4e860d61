"""The staff desk in the admin: list, search, filters, pages, actions, request log, dashboard."""

from __future__ import annotations

import datetime
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from handles import services
from handles.desk.models import BulkJob, Collection
from handles.models import Handle, HandleRequest
from tests.factories import AssetFactory, HandleFactory, PrefixFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:handles_handle_changelist"


@pytest.fixture
def offline_prefix():
    return PrefixFactory()


def listed(response) -> list[str]:
    """The full handles shown in a changelist response."""
    return [h.full_handle for h in response.context["cl"].result_list]


def action(client, name, handles, extra=None, query=""):
    data = {"action": name, "_selected_action": [h.pk for h in handles], **(extra or {})}
    return client.post(reverse(CHANGELIST) + query, data)


# --- The list ---------------------------------------------------------------------------------------
def test_changelist_shows_health_at_a_glance(staff_client, offline_prefix):
    ok = HandleFactory(prefix=offline_prefix, suffix="ok1", version=2, synced_version=2)
    failing = HandleFactory(prefix=offline_prefix, suffix="bad1", version=2, synced_version=1)
    HandleRequest.objects.create(handle=failing, op="update", action="redirect", full_handle=failing.full_handle,
                                 handle_version=2, status="error", error="Permission denied by the server")
    response = staff_client.get(reverse(CHANGELIST))
    html = response.content.decode()
    assert response.status_code == 200
    assert set(listed(response)) == {ok.full_handle, failing.full_handle}
    assert 'class="hd-badge hd-in_sync"' in html and 'class="hd-badge hd-error" title="Permission denied' in html


def test_changelist_query_count_does_not_grow_with_rows(staff_client, offline_prefix, django_assert_max_num_queries):
    for i in range(40):
        handle = HandleFactory(prefix=offline_prefix, suffix=f"n{i}", asset=AssetFactory())
        HandleRequest.objects.create(handle=handle, op="create", action="mint", full_handle=handle.full_handle,
                                     handle_version=1, status="success")
    with django_assert_max_num_queries(14):
        assert staff_client.get(reverse(CHANGELIST)).status_code == 200


@pytest.mark.parametrize("term", ["20.500.12345/MiXeD-7", "hdl:20.500.12345/mixed-7",
                                  "https://hdl.handle.net/20.500.12345/MIXED-7", "xed-", "EXAMPLE.ORG/special",
                                  "Letter from Isabella", "node-4711", "dams:node-4711"])
def test_search_finds_a_handle_by_every_kind_of_name(staff_client, offline_prefix, term):
    asset = AssetFactory(external_id="node-4711", title="Letter from Isabella, 1898")
    HandleFactory(prefix=offline_prefix, suffix="MiXeD-7", target_url="https://example.org/Special/7", asset=asset)
    HandleFactory(prefix=offline_prefix, suffix="other", target_url="https://example.org/plain")
    response = staff_client.get(reverse(CHANGELIST), {"q": term})
    assert listed(response) == ["20.500.12345/MiXeD-7"]


def test_search_for_the_start_of_a_full_handle_lists_matching_suffixes(staff_client, offline_prefix):
    for suffix in ("abc1", "abc2", "xyz"):
        HandleFactory(prefix=offline_prefix, suffix=suffix)
    response = staff_client.get(reverse(CHANGELIST), {"q": "20.500.12345/ABC"})
    assert sorted(listed(response)) == ["20.500.12345/abc1", "20.500.12345/abc2"]


def test_filters_by_prefix_status_source_and_collection(staff_client, offline_prefix):
    other_prefix = PrefixFactory(prefix="11084", auth_identity="300:11084/ADMIN", hs_admin_handle="11084/ADMIN")
    maps = AssetFactory(source_system="dams", external_id="maps-1")
    letter = AssetFactory(source_system="archivesspace", external_id="do-9")
    a = HandleFactory(prefix=offline_prefix, suffix="a", asset=maps)
    b = HandleFactory(prefix=other_prefix, suffix="b", asset=letter, status=Handle.Status.TOMBSTONED)
    collection = Collection.objects.create(name="Maps", source_system="dams", external_id_prefix="maps-")
    url = reverse(CHANGELIST)
    assert listed(staff_client.get(url, {"prefix": other_prefix.pk})) == [b.full_handle]
    assert listed(staff_client.get(url, {"status": "tombstoned"})) == [b.full_handle]
    assert listed(staff_client.get(url, {"source": "dams"})) == [a.full_handle]
    assert listed(staff_client.get(url, {"collection": collection.pk})) == [a.full_handle]
    html = staff_client.get(url).content.decode()
    assert "By sync with the server" in html and "archivesspace" in html


def test_a_long_list_is_not_counted_past_the_limit(staff_client, offline_prefix, settings):
    settings.HANDLES_DESK_COUNT_LIMIT = 5
    for i in range(8):
        HandleFactory(prefix=offline_prefix, suffix=f"c{i}")
    html = staff_client.get(reverse(CHANGELIST), {"q": "c"}).content.decode()
    assert "More than 5 handles" in html and "more than 5 results" in html


# --- The handle page ------------------------------------------------------------------------------------
def test_handle_page_shows_history_before_and_after_and_restore_links(staff_client, offline_prefix):
    handle = services.handle_mint(prefix=offline_prefix, suffix="hist", target_url="https://a.example/1").handle
    handle.refresh_from_db()
    services.handle_redirect(handle=handle, target_url="https://b.example/2")
    request = HandleRequest.objects.filter(handle=handle).latest("pk")
    HandleRequest.objects.filter(pk=request.pk).update(status="success", server_output="PUT ... 200 responseCode 1")
    html = staff_client.get(reverse("admin:handles_handle_change", args=[handle.pk])).content.decode()
    history = html[html.index('id="hd-history"'):]
    assert re.search(r"<span>https://a\.example/1</span>.*?hd-arrow.*?<span>https://b\.example/2</span>", history, re.S)
    assert "PUT ... 200 responseCode 1" in html
    restore = reverse("admin:handles_handle_redirect", args=[handle.pk]) + "?target_url=https%3A//a.example/1"
    assert restore in html
    assert "restore this earlier URL" in html
    prefilled = staff_client.get(restore).content.decode()
    assert 'value="https://a.example/1"' in prefilled


def test_restoring_an_earlier_url_queues_a_redirect(staff_client, offline_prefix):
    handle = HandleFactory(prefix=offline_prefix, suffix="r1", target_url="https://new.example/x")
    response = staff_client.post(reverse("admin:handles_handle_redirect", args=[handle.pk]),
                                 {"target_url": "https://old.example/x"})
    assert response.status_code == 302
    request = HandleRequest.objects.get(handle=handle)
    assert (request.action, request.from_url, request.url) == ("redirect", "https://new.example/x",
                                                                "https://old.example/x")


def test_single_handle_pages_refuse_what_the_status_does_not_allow(staff_client, offline_prefix):
    handle = HandleFactory(prefix=offline_prefix, suffix="ts", status=Handle.Status.TOMBSTONED)
    response = staff_client.post(reverse("admin:handles_handle_redirect", args=[handle.pk]),
                                 {"target_url": "https://x.example/"})
    assert response.status_code == 200
    assert "is tombstoned; restore it before redirecting it" in response.content.decode()


def test_tombstone_then_restore_from_the_handle_page(staff_client, offline_prefix):
    handle = HandleFactory(prefix=offline_prefix, suffix="tr", synced_version=1)
    staff_client.post(reverse("admin:handles_handle_tombstone", args=[handle.pk]),
                      {"reason": "Duplicate record", "successor_url": "https://example.org/new"})
    handle.refresh_from_db()
    assert (handle.status, handle.tombstone_reason, handle.successor_url) == (
        "tombstoned", "Duplicate record", "https://example.org/new")
    staff_client.post(reverse("admin:handles_handle_restore", args=[handle.pk]), {"reason": ""})
    handle.refresh_from_db()
    assert handle.status == "active"
    assert list(HandleRequest.objects.filter(handle=handle).order_by("pk").values_list("action", flat=True)) == [
        "tombstone", "restore"]


def test_retry_page_retries_the_open_failure(staff_client, offline_prefix):
    handle = HandleFactory(prefix=offline_prefix, suffix="rt", version=2, synced_version=1)
    failed = HandleRequest.objects.create(handle=handle, op="update", action="redirect",
                                          full_handle=handle.full_handle, handle_version=2, status="error",
                                          error="boom", attempts=10)
    html = staff_client.get(reverse("admin:handles_handle_change", args=[handle.pk])).content.decode()
    assert reverse("admin:handles_handle_retry", args=[handle.pk]) in html
    staff_client.post(reverse("admin:handles_handle_retry", args=[handle.pk]), {"reason": ""})
    failed.refresh_from_db()
    assert failed.status == "queued"


# --- Minting -------------------------------------------------------------------------------------------
def test_mint_previews_the_exact_handle_then_mints_it(staff_client, offline_prefix):
    url = reverse("admin:handles_handle_add")
    data = {"prefix": offline_prefix.pk, "suffix": "", "target_url": "https://example.org/new", "asset": ""}
    preview = staff_client.post(url, {**data, "_preview": "Preview"})
    chosen = preview.context["preview"]["suffix"]
    html = preview.content.decode()
    assert f"hdl:20.500.12345/{chosen}" in html and not Handle.objects.exists()
    assert f'name="suffix" value="{chosen}"' in html
    response = staff_client.post(url, {**data, "suffix": chosen, "_mint": "Mint"})
    handle = Handle.objects.get()
    assert response.status_code == 302 and handle.suffix == chosen
    assert handle.requests.get().action == "mint"


def test_mint_refuses_a_deleted_suffix_with_a_clear_message(staff_client, offline_prefix):
    HandleFactory(prefix=offline_prefix, suffix="gone", status=Handle.Status.DELETED,
                  deleted_at=timezone.make_aware(datetime.datetime(2024, 3, 1)))
    response = staff_client.post(reverse("admin:handles_handle_add"), {
        "prefix": offline_prefix.pk, "suffix": "GONE", "target_url": "https://example.org/x", "_preview": "1"})
    html = response.content.decode()
    assert "20.500.12345/gone was deleted (2024-03-01). A handle is never reused" in html
    assert Handle.objects.count() == 1


# --- Actions on a selection ----------------------------------------------------------------------------------
def test_redirect_rule_previews_old_and_new_then_applies(staff_client, offline_prefix):
    a = HandleFactory(prefix=offline_prefix, suffix="a", target_url="http://old.example.edu/node/1")
    b = HandleFactory(prefix=offline_prefix, suffix="b", target_url="http://old.example.edu/node/2")
    untouched = HandleFactory(prefix=offline_prefix, suffix="c", target_url="https://elsewhere.org/3")
    rule = {"find": "http://old.example.edu/", "replace": "https://dams.example.edu/"}
    form = action(staff_client, "redirect_rule_selected", [a, b, untouched])
    assert "Rewrite the target URLs of the 3 selected handles" in form.content.decode()
    preview = action(staff_client, "redirect_rule_selected", [a, b, untouched], {**rule, "_preview": "1"})
    html = preview.content.decode()
    assert "http://old.example.edu/node/1" in html and "https://dams.example.edu/node/1" in html
    assert '<strong id="hd-rule-count">2</strong> of the 3 selected handles' in html
    assert not HandleRequest.objects.exists()
    action(staff_client, "redirect_rule_selected", [a, b, untouched], {**rule, "confirm": "Apply"})
    assert sorted(Handle.objects.values_list("target_url", flat=True)) == [
        "https://dams.example.edu/node/1", "https://dams.example.edu/node/2", "https://elsewhere.org/3"]
    assert HandleRequest.objects.filter(action="redirect").count() == 2


def test_redirect_rule_reports_a_rewrite_that_is_not_a_url(staff_client, offline_prefix):
    a = HandleFactory(prefix=offline_prefix, suffix="a", target_url="https://x.example/1")
    preview = action(staff_client, "redirect_rule_selected", [a], {"find": "https://", "replace": "ftp://",
                                                                   "_preview": "1"})
    assert "Will be refused: The URL must start with http:// or https://." in preview.content.decode()
    response = action(staff_client, "redirect_rule_selected", [a], {"find": "https://", "replace": "ftp://",
                                                                    "confirm": "1"}, )
    assert response.status_code == 302
    a.refresh_from_db()
    assert a.target_url == "https://x.example/1"
    messages = [str(m) for m in response.wsgi_request._messages]
    assert any("1 failed" in m for m in messages)


def test_delete_confirmation_names_how_many_and_which(staff_client, offline_prefix):
    handles = [HandleFactory(prefix=offline_prefix, suffix=f"d{i}") for i in range(3)]
    page = action(staff_client, "delete_selected_handles", handles).content.decode()
    assert '<p id="hd-confirm-count">Delete these <strong>3</strong> handles' in page
    assert all(h.full_handle in page for h in handles)
    assert "Yes, delete 3 handles" in page
    assert not HandleRequest.objects.exists()
    action(staff_client, "delete_selected_handles", handles, {"confirm": "yes", "reason": "asset deleted"})
    assert set(Handle.objects.values_list("status", flat=True)) == {"deleted"}
    assert set(HandleRequest.objects.values_list("reason", flat=True)) == {"asset deleted"}


def test_tombstone_selection_needs_a_reason_and_takes_a_successor(staff_client, offline_prefix):
    handles = [HandleFactory(prefix=offline_prefix, suffix=f"t{i}") for i in range(2)]
    refused = action(staff_client, "tombstone_selected", handles, {"confirm": "yes", "reason": " "})
    assert "This field is required" in refused.content.decode()
    assert not HandleRequest.objects.exists()
    action(staff_client, "tombstone_selected", handles,
           {"confirm": "yes", "reason": "Withdrawn at the donor's request", "successor_url": "https://x.org/y"})
    assert set(Handle.objects.values_list("status", "successor_url")) == {("tombstoned", "https://x.org/y")}


def test_verify_restore_and_retry_on_a_selection(staff_client, offline_prefix):
    live = HandleFactory(prefix=offline_prefix, suffix="v")
    stone = HandleFactory(prefix=offline_prefix, suffix="s", status=Handle.Status.TOMBSTONED, synced_version=1)
    failed = HandleRequest.objects.create(handle=live, op="update", action="redirect", full_handle=live.full_handle,
                                          handle_version=1, status="error", error="x")
    action(staff_client, "retry_selected", [live, stone])
    failed.refresh_from_db()
    assert failed.status == "queued"
    action(staff_client, "verify_selected", [live, stone])
    assert HandleRequest.objects.filter(op="verify").count() == 2
    response = action(staff_client, "restore_selected", [live, stone])
    stone.refresh_from_db()
    assert stone.status == "active"
    assert any("is not tombstoned" in str(m) for m in response.wsgi_request._messages)


def test_a_large_selection_becomes_a_background_job(staff_client, offline_prefix, settings,
                                                    django_capture_on_commit_callbacks):
    settings.HANDLES_DESK_INLINE_LIMIT = 2
    handles = [HandleFactory(prefix=offline_prefix, suffix=f"j{i}") for i in range(5)]
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(reverse(CHANGELIST) + "?q=j", {
            "action": "verify_selected", "select_across": "1", "_selected_action": [handles[0].pk]})
    job = BulkJob.objects.get()
    assert response.status_code == 302 and response["Location"] == job.get_absolute_url()
    job.refresh_from_db()
    # Every verify is queued, but the offline server confirms none: the job waits for them, not "done".
    # The handles selected when the action ran, fixed for the job, with the list's filter they were chosen by.
    assert (job.kind, job.selection, job.state) == (
        "verify", {"ids": sorted(h.pk for h in handles), "filters": {"q": "j"}}, "verifying")
    assert (job.progress_total, job.progress_done, job.succeeded) == (5, 5, 5)
    assert HandleRequest.objects.filter(op="verify", requested_via=f"job:{job.pk}").count() == 5
    page = staff_client.get(job.get_absolute_url()).content.decode()
    assert 'id="hd-job-progress" max="100" value="0"' in page and "Verifying on the server" in page


def test_large_redirect_rule_and_retry_selections_run_as_jobs(staff_client, offline_prefix, settings,
                                                               django_capture_on_commit_callbacks):
    settings.HANDLES_DESK_INLINE_LIMIT = 1
    handles = [HandleFactory(prefix=offline_prefix, suffix=f"big{i}", target_url=f"http://old.example/{i}")
               for i in range(3)]
    for handle in handles[:2]:
        _failed(handle, "Server busy")
    every = {"select_across": "1", "_selected_action": [handles[0].pk]}
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(reverse(CHANGELIST) + "?q=big", {"action": "retry_selected", **every})
        staff_client.post(reverse(CHANGELIST) + "?q=big", {
            "action": "redirect_rule_selected", "find": "http://old.example/", "replace": "https://new.example/",
            "confirm": "1", **every})
    retry, rule = BulkJob.objects.order_by("pk")
    # Queued for the offline server, which confirms nothing: both jobs wait for it.
    assert (rule.kind, rule.state, rule.succeeded, rule.parameters["find"]) == ("redirect_rule", "verifying", 3,
                                                                                 "http://old.example/")
    assert (retry.kind, retry.state, retry.succeeded) == ("retry", "verifying", 2)
    assert sorted(Handle.objects.values_list("target_url", flat=True)) == [f"https://new.example/{i}" for i in range(3)]
    assert not HandleRequest.objects.filter(status="error").exists()


def test_actions_are_not_offered_to_collection_managers(client, manager_user, offline_prefix):
    HandleFactory(prefix=offline_prefix, suffix="m")
    client.force_login(manager_user)
    response = client.get(reverse(CHANGELIST))
    assert response.status_code == 200 and response.context["action_form"] is None
    assert "Mint a handle" not in response.content.decode()


# --- The request log ---------------------------------------------------------------------------------
def _failed(handle, error, when=None):
    return HandleRequest.objects.create(handle=handle, op="update", action="redirect", full_handle=handle.full_handle,
                                        handle_version=1, status="error", error=error,
                                        finished_at=when or timezone.now())


def test_request_log_filters_by_status_op_prefix_and_date(staff_client, offline_prefix):
    other = PrefixFactory(prefix="11084", auth_identity="300:11084/ADMIN", hs_admin_handle="11084/ADMIN")
    h1 = HandleFactory(prefix=offline_prefix, suffix="p1")
    h2 = HandleFactory(prefix=other, suffix="p2")
    old = _failed(h1, "old failure")
    HandleRequest.objects.filter(pk=old.pk).update(created_at=timezone.now() - datetime.timedelta(days=40))
    new = HandleRequest.objects.create(handle=h2, op="verify", action="verify", full_handle=h2.full_handle,
                                       handle_version=1, status="success")
    url = reverse("admin:handles_handlerequest_changelist")

    def ids(params):
        return [r.pk for r in staff_client.get(url, params).context["cl"].result_list]

    assert ids({"status__exact": "error"}) == [old.pk]
    assert ids({"op__exact": "verify"}) == [new.pk]
    assert ids({"prefix": other.pk}) == [new.pk]
    assert ids({"since": (timezone.localdate() - datetime.timedelta(days=7)).isoformat()}) == [new.pk]
    assert ids({"q": "11084/P2"}) == [new.pk]


def test_failures_are_grouped_by_error_and_a_group_is_retried_at_once(staff_client, offline_prefix):
    handles = [HandleFactory(prefix=offline_prefix, suffix=f"o{i}") for i in range(3)]
    for h in handles:
        _failed(h, f"Gave up after 10 attempts. Last error: Could not reach https://hs.example:8000/api/handles/"
                   f"{h.full_handle}: Connection refused")
    lone = _failed(HandleFactory(prefix=offline_prefix, suffix="z"), "Permission denied (responseCode 401)")
    page = staff_client.get(reverse("admin:handles_handlerequest_failures"))
    groups = page.context["groups"]
    assert [g["count"] for g in groups] == [3, 1]
    outage = groups[0]["signature"]
    assert "Connection refused" in outage and "o0" not in outage
    staff_client.post(reverse("admin:handles_handlerequest_retry_group"), {"signature": outage})
    assert HandleRequest.objects.filter(status="queued").count() == 3
    lone.refresh_from_db()
    assert lone.status == "error"


def test_a_large_failure_group_is_retried_by_a_job(staff_client, offline_prefix, settings,
                                                   django_capture_on_commit_callbacks):
    settings.HANDLES_DESK_INLINE_LIMIT = 1
    for i in range(3):
        _failed(HandleFactory(prefix=offline_prefix, suffix=f"g{i}"), "Server busy (responseCode 3)")
    with django_capture_on_commit_callbacks(execute=False):
        staff_client.post(reverse("admin:handles_handlerequest_retry_group"),
                          {"signature": "Server busy (responseCode 3)"})
    job = BulkJob.objects.get()
    assert (job.kind, job.selection["filters"]["signature"]) == ("retry", "Server busy (responseCode 3)")
    from handles.desk import services as desk_services

    assert desk_services.bulk_job_run_slice(job.pk) == "verifying"
    assert HandleRequest.objects.filter(status="queued").count() == 3


# --- Dashboard -------------------------------------------------------------------------------------------
def test_dashboard_shows_counts_queue_failures_worker_and_prefix_contact(staff_client, offline_prefix):
    HandleFactory(prefix=offline_prefix, suffix="d1")
    HandleFactory(prefix=offline_prefix, suffix="d2", status=Handle.Status.TOMBSTONED)
    h = HandleFactory(prefix=offline_prefix, suffix="d3")
    # Failed an hour ago: a request a worker finished in the last two minutes would show it as running.
    _failed(h, "boom", when=timezone.now() - datetime.timedelta(hours=1))
    HandleRequest.objects.create(handle=h, op="verify", action="verify", full_handle=h.full_handle,
                                 handle_version=1, status="queued")
    services.prefix_record_contact(prefix_id=offline_prefix.pk, ok=False, error="Connection refused")
    response = staff_client.get(reverse("admin:index"))
    html = response.content.decode()
    dash = response.context["d"]
    assert dash["total"] == 3 and ("tombstoned", "Tombstoned", 1) in dash["statuses"]
    assert (dash["queued"], dash["failures_day"]) == (1, 1)
    assert not dash["worker"].alive and "qcluster" in dash["worker"].detail
    assert "unreachable" in html and "Connection refused" in html


# --- End to end, through the simulator -----------------------------------------------------------------
def test_staff_mint_redirect_and_tombstone_reach_the_server(staff_client, prefix, sim,
                                                             django_capture_on_commit_callbacks):
    from handles.handle_server.client import client_for

    data = {"prefix": prefix.pk, "suffix": "e2e-1", "target_url": "https://dams.example.edu/node/1", "asset": ""}
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(reverse("admin:handles_handle_add"), {**data, "_mint": "1"})
    handle = Handle.objects.get(suffix="e2e-1")
    with django_capture_on_commit_callbacks(execute=True):
        action(staff_client, "redirect_rule_selected", [handle],
               {"find": "dams.example.edu", "replace": "collections.example.edu", "confirm": "1"})
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(reverse("admin:handles_handle_tombstone", args=[handle.pk]), {"reason": "Superseded"})
    handle.refresh_from_db()
    assert list(handle.requests.order_by("pk").values_list("action", "status")) == [
        ("mint", "success"), ("redirect", "success"), ("tombstone", "success")]
    url, _ = client_for(prefix.server_config()).get_url(handle.full_handle)
    assert url == handle.tombstone_url
    html = staff_client.get(reverse("admin:handles_handle_change", args=[handle.pk])).content.decode()
    assert "https://collections.example.edu/node/1" in html and "Verified: the server resolves to" in html


def test_a_confirmation_acts_only_on_the_selection_its_preview_showed(staff_client, offline_prefix, settings,
                                                                      django_capture_on_commit_callbacks):
    settings.HANDLES_DESK_INLINE_LIMIT = 1
    handles = [HandleFactory(prefix=offline_prefix, suffix=f"w{i}") for i in range(3)]
    every = {"select_across": "1", "_selected_action": [handles[0].pk]}
    preview = action(staff_client, "tombstone_selected", handles[:1], extra=every, query="?q=w")
    digest, count = preview.context["preview_digest"], preview.context["preview_count"]
    assert count == 3
    HandleFactory(prefix=offline_prefix, suffix="w-late")  # the selection changes before the confirmation
    confirm = {**every, "confirm": "yes", "reason": "Withdrawn", "preview_digest": digest, "preview_count": count}
    refused = action(staff_client, "tombstone_selected", handles[:1], extra=confirm, query="?q=w")
    assert refused.status_code == 200 and not BulkJob.objects.exists()
    assert "held 3 then and holds 4 handles now. Nothing was done" in refused.content.decode()
    assert Handle.objects.filter(status="tombstoned").count() == 0

    again = {**confirm, "preview_digest": refused.context["preview_digest"], "preview_count": 4}
    with django_capture_on_commit_callbacks(execute=True):
        response = action(staff_client, "tombstone_selected", handles[:1], extra=again, query="?q=w")
    job = BulkJob.objects.get()
    assert response.status_code == 302
    assert (len(job.selection["ids"]), job.selection["preview_count"], job.progress_total) == (4, 4, 4)
    page = staff_client.get(job.get_absolute_url()).content.decode()
    assert "Acts on the 4 handles the selection held when the job was confirmed (its preview showed 4)" in page
