"""Resolution health: following handles end to end, politely and safely, and what each outcome means."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from handles.repair import health, http_check, services
from handles.repair.http_check import HostRateLimiter, PageFetcher, refusal
from handles.repair.models import HandleCheck, HealthOutcome, HealthRun
from handles.repair.titles import titles_match
from tests.factories import AssetFactory, HandleFactory
from tests.repair.conftest import primo_page, server_put


def fetcher(**overrides) -> PageFetcher:
    options = {"timeout": 0.5, "retries": 1, "max_redirects": 5, "host_interval": 0, "allow_private": True,
               "user_agent": "test", "retry_pause": 0}
    return PageFetcher(**{**options, **overrides})


@pytest.fixture
def allow_loopback(settings):
    settings.HANDLES_HEALTH_ALLOW_PRIVATE = True
    settings.HANDLES_HEALTH_HOST_INTERVAL = 0
    settings.HANDLES_HEALTH_TIMEOUT = 0.5
    settings.HANDLES_HEALTH_TIMEOUT_RETRIES = 1


def test_redirects_are_followed_and_recorded(site):
    site.routes["/a"] = (301, {"Location": "/b"}, "")
    site.routes["/b"] = (302, {"Location": site.base_url + "/c"}, "")
    site.routes["/c"] = (200, {}, "<html><head><title> Letter &amp; envelope </title></head></html>")
    result = fetcher().follow(site.base_url + "/a", read_title=True)
    assert (result.status, result.hops, result.final_url, result.title) == (200, 2, site.base_url + "/c",
                                                                            "Letter & envelope")


def test_a_timeout_is_retried_then_reported_apart_from_a_failure(site):
    result = fetcher(retries=1).follow(site.base_url + "/slow")
    assert result.timed_out and result.attempts == 2 and not result.error
    assert site.hits.count("/slow") == 2
    broken = fetcher().follow("http://127.0.0.1:9/nothing-listens")
    assert not broken.timed_out and "Could not connect" in broken.error


def test_too_many_redirects_is_broken(site):
    site.routes["/loop"] = (302, {"Location": "/loop"}, "")
    assert fetcher(max_redirects=3).follow(site.base_url + "/loop").error == "More than 3 redirects."


@pytest.mark.parametrize(("url", "reason"), [
    ("ftp://example.org/x", "Only http(s) URLs"),
    ("javascript:alert(1)", "Only http(s) URLs"),
    ("http://127.0.0.1/", "private or local address"),
    ("http://localhost:8000/", "private or local address"),
    ("http://10.1.2.3/", "private or local address"),
    ("http://169.254.169.254/latest/meta-data", "private or local address"),
    ("http://[::1]/", "private or local address"),
])
def test_unsafe_targets_are_refused_without_a_request(url, reason):
    assert reason in refusal(url, allow_private=False)


def test_a_public_page_cannot_redirect_us_into_the_intranet(site):
    site.routes["/out"] = (302, {"Location": "http://10.0.0.7/admin"}, "")
    strict = fetcher(allow_private=False)
    # The first hop is refused too here (the site is on loopback); the check runs before every hop.
    assert "private or local address" in strict.follow(site.base_url + "/out").error
    assert site.hits == []


def test_rate_limit_spaces_requests_to_one_host(monkeypatch):
    now = [100.0]
    sleeps: list[float] = []
    monkeypatch.setattr(http_check.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(http_check.time, "sleep", sleeps.append)
    limiter = HostRateLimiter(0.5)
    for _ in range(3):
        limiter.wait("a.example")
    limiter.wait("b.example")
    assert sleeps == [0.5, 1.0]  # the 2nd and 3rd request to a.example wait their turn; b.example does not


def test_titles_match_like_a_person_would_judge():
    assert titles_match("Correspondence to Isabella, 1898, Letter Five | Grinnell College",
                        "Correspondence to Isabella, 1898, Letter Five")
    assert not titles_match("Correspondence to Ruth, Letter Three | Grinnell College",
                            "Correspondence to Isabella, 1898, Letter Five")


def test_each_outcome_end_to_end(run_queue, grinnell_live, site, allow_loopback):
    p = grinnell_live
    good = primo_page(site, "991011589491704641", "Plate 3")
    wrong = primo_page(site, "991011591572104641", "Another plate")
    site.routes["/alias"] = (301, {"Location": good}, "")
    cases = {  # suffix: (what the server holds, the asset's id, our target)
        "correct": (good, "991011589491704641", good),
        "redirected": (site.base_url + "/alias", "alias-1", site.base_url + "/alias"),
        "wrong": (wrong, "991011591572804641", site.base_url + "/discovery/fulldisplay/alma991011591572804641/x"),
        "broken": (site.base_url + "/gone", "1", site.base_url + "/gone"),
        "slow": (site.base_url + "/slow", "2", site.base_url + "/slow"),
        "notonserver": (None, "3", good),
    }
    for suffix, (on_server, external_id, ours) in cases.items():
        asset = AssetFactory(source_system="alma", external_id=external_id, url=ours, title="Plate 3")
        HandleFactory(prefix=p, suffix=suffix, target_url=ours, asset=asset)
        if on_server:
            server_put(p, f"11084/{suffix}", on_server)
    run = run_queue(services.health_start, filters={"prefix_ids": [p.pk]})
    run.refresh_from_db()
    checks = {c.handle.suffix: c for c in HandleCheck.objects.filter(run=run).select_related("handle")}
    assert {s: c.outcome for s, c in checks.items()} == {
        "correct": "correct", "redirected": "correct", "wrong": "wrong_object", "broken": "broken",
        "slow": "timeout", "notonserver": "broken"}
    assert run.counts == {"correct": 2, "wrong_object": 1, "broken": 2, "timeout": 1}
    assert checks["redirected"].hops == 1 and checks["redirected"].final_url == good
    assert checks["redirected"].detail.startswith("The site redirected from")  # the handle points where we intend
    assert checks["broken"].http_status == 404 and checks["slow"].attempts == 2
    assert "Lands on" in checks["wrong"].detail and "991011591572804641" in checks["wrong"].detail
    assert checks["notonserver"].detail == "The handle is not on the Handle server."
    # Each run keeps its own results: a second, smaller run adds its own rows and leaves the first's alone.
    second = run_queue(services.health_start, filters={"prefix_ids": [p.pk], "limit": 2})
    assert HandleCheck.objects.filter(run=run).count() == 6 and HandleCheck.objects.filter(run=second).count() == 2
    assert HealthRun.objects.count() == 2


def test_the_title_check_catches_a_right_looking_url_with_another_object(run_queue, grinnell_live, site,
                                                                         allow_loopback):
    url = primo_page(site, "991011687635104641", "Correspondence to Ruth, Letter Three")
    asset = AssetFactory(source_system="alma", external_id="991011687635104641", url=url,
                         title="Correspondence to Isabella, 1898, Letter Five")
    handle = HandleFactory(prefix=grinnell_live, suffix="35233", target_url=url, asset=asset)
    server_put(grinnell_live, "11084/35233", url)
    first = run_queue(services.health_start, filters={"handle_ids": [handle.pk]})
    assert HandleCheck.objects.get(run=first).outcome == HealthOutcome.CORRECT  # without the title check
    second = run_queue(services.health_start, filters={"handle_ids": [handle.pk], "title_check": True})
    check = HandleCheck.objects.get(run=second)
    assert check.outcome == HealthOutcome.WRONG_OBJECT and "Ruth" in check.detail
    assert HandleCheck.objects.get(run=first).outcome == HealthOutcome.CORRECT  # the earlier run's result stays


def test_through_the_proxy_resolver(run_queue, grinnell_live, grinnell_server, site, allow_loopback, settings):
    settings.HANDLES_HEALTH_PROXY_BASE = grinnell_server.http_url  # the simulator answers /api/handles over http
    url = primo_page(site, "5", "Five")
    HandleFactory(prefix=grinnell_live, suffix="5", target_url=url, asset=AssetFactory(external_id="5", url=url))
    HandleFactory(prefix=grinnell_live, suffix="6", target_url=url)
    server_put(grinnell_live, "11084/5", url)
    run = run_queue(services.health_start, filters={"via_proxy": True})
    run.refresh_from_db()
    assert run.counts == {"correct": 1, "broken": 1}
    assert HandleCheck.objects.get(handle__suffix="6").detail == "The proxy resolver does not know this handle."


def test_a_second_delivery_of_the_task_does_nothing(run_queue, grinnell_live, allow_loopback):
    run = run_queue(services.health_start, filters={})
    assert health.run(run.pk).state == "done"
    assert HealthRun.objects.get().counts == {}


def test_shares_by_prefix_source_and_status(grinnell_prefix):
    from django.utils import timezone

    from handles.repair import selectors

    run = HealthRun.objects.create(state="done", progress_total=4, counts={"correct": 2, "broken": 1,
                                                                          "wrong_object": 1})
    for n, outcome in enumerate(["correct", "correct", "broken", "wrong_object"]):
        handle = HandleFactory(prefix=grinnell_prefix, suffix=f"s{n}",
                               asset=AssetFactory(source_system="alma" if n < 2 else "dams"))
        HandleCheck.objects.create(handle=handle, run=run, checked_at=timezone.now(), outcome=outcome)
    shares = selectors.health_shares(run)
    assert shares["prefix"] == [{"group": "11084", "checked": 4, "correct": 2, "broken": 1, "wrong": 1, "timeout": 0,
                                 "not_checked": 0}]
    assert [(g["group"], g["correct"], g["checked"]) for g in shares["source system"]] == [("alma", 2, 2),
                                                                                         ("dams", 0, 2)]
    summary = selectors.latest_health()
    assert (summary.checked, summary.correct, summary.share_correct) == (4, 2, 0.5)


def test_check_health_command(grinnell_live, site, allow_loopback, capsys, tmp_path):
    url = primo_page(site, "7", "Seven")
    HandleFactory(prefix=grinnell_live, suffix="7", target_url=url, asset=AssetFactory(external_id="7", url=url))
    HandleFactory(prefix=grinnell_live, suffix="8", target_url=site.base_url + "/missing-page")
    server_put(grinnell_live, "11084/7", url)
    server_put(grinnell_live, "11084/8", site.base_url + "/missing-page")
    out_csv = tmp_path / "failing.csv"
    call_command("check_health", "--prefix", "11084", "--csv", str(out_csv))
    out = capsys.readouterr().out
    assert "2 checked, 1 resolve correctly (50.0%)" in out and "11084/8: broken: HTTP 404" in out
    assert out_csv.read_text(encoding="utf-8-sig").splitlines()[1].startswith("11084/8,broken,404,")
    call_command("check_health", "hdl:11084/7")
    assert "1 checked, 1 resolve correctly" in capsys.readouterr().out
