"""The health page's filters and the repair it leads to, the handle list's filter by latest health
outcome, a handle's check history, and the dashboard's share resolving correctly."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from handles.models import HandleRequest
from handles.repair.models import NOT_ON_SERVER, HandleCheck, HealthOutcome, HealthRun
from tests.factories import AssetFactory, HandleFactory
from tests.repair.conftest import primo_page, server_put, server_url

HEALTH = "admin:handles_repair_healthrun_changelist"


def _run(results: dict, **fields) -> HealthRun:
    """A finished run with these results: {handle: (outcome, detail)}."""
    counts: dict[str, int] = {}
    for outcome, _ in results.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    run = HealthRun.objects.create(state="done", progress_total=len(results), counts=counts,
                                   finished_at=timezone.now(), **fields)
    for handle, (outcome, detail) in results.items():
        HandleCheck.objects.create(run=run, handle=handle, checked_at=timezone.now(), outcome=outcome, detail=detail)
    return run


@pytest.fixture
def checked(grinnell_prefix):
    """Legacy and vendor handles from two source systems, checked twice (the later run is the current)."""
    h = {
        "legacy_alma": HandleFactory(prefix=grinnell_prefix, suffix="99", asset=AssetFactory(source_system="alma")),
        "vendor_alma": HandleFactory(prefix=grinnell_prefix, suffix="1742400039",
                                     asset=AssetFactory(source_system="alma")),
        "legacy_dams": HandleFactory(prefix=grinnell_prefix, suffix="100", asset=AssetFactory(source_system="dams")),
        "fine": HandleFactory(prefix=grinnell_prefix, suffix="101", asset=AssetFactory(source_system="dams")),
    }
    _run({handle: (HealthOutcome.CORRECT, "") for handle in h.values()})
    latest = _run({h["legacy_alma"]: (HealthOutcome.BROKEN, NOT_ON_SERVER),
                   h["vendor_alma"]: (HealthOutcome.WRONG_OBJECT, "Lands on another object"),
                   h["legacy_dams"]: (HealthOutcome.NOT_CHECKED, "a private or local address"),
                   h["fine"]: (HealthOutcome.CORRECT, "")})
    return h, latest


def _listed(response, handles: dict) -> set[str]:
    text = response.content.decode()
    return {name for name, handle in handles.items() if f">{handle.full_handle}<" in text}


def test_the_health_page_filters_by_outcome_prefix_source_and_vendor(staff_client, checked, grinnell_prefix):
    handles, run = checked
    get = lambda **params: staff_client.get(reverse(HEALTH), params)  # noqa: E731
    assert _listed(get(), handles) == {"legacy_alma", "vendor_alma", "legacy_dams"}  # all not correct
    assert _listed(get(outcome="broken"), handles) == {"legacy_alma"}
    assert _listed(get(outcome="not_checked"), handles) == {"legacy_dams"}
    assert _listed(get(source="alma"), handles) == {"legacy_alma", "vendor_alma"}
    assert _listed(get(origin="vendor"), handles) == {"vendor_alma"}
    assert _listed(get(origin="legacy", source="dams"), handles) == {"legacy_dams"}
    assert _listed(get(prefix=grinnell_prefix.pk, outcome="wrong_object"), handles) == {"vendor_alma"}
    first = HealthRun.objects.order_by("pk").first()
    assert _listed(get(run=first.pk), handles) == set()  # the earlier run's list is what it was: nothing failing
    csv = b"".join(staff_client.get(reverse("admin:handles_repair_healthrun_failing"), {"origin": "vendor"})
                   .streaming_content).decode("utf-8-sig")
    assert "11084/1742400039,wrong_object" in csv and "11084/99," not in csv


@pytest.mark.parametrize("params", [{"outcome": "borken"}, {"origin": "both"}, {"prefix": "999999"},
                                    {"run": "abc"}, {"run": "424242"}, {"page": "-1"}])
def test_a_bad_filter_is_a_400_never_the_whole_list(staff_client, checked, params):
    response = staff_client.get(reverse(HEALTH), params)
    assert response.status_code == 400 and b"Bad filter" in response.content
    assert staff_client.get(reverse("admin:handles_repair_healthrun_failing"), params).status_code == 400


def test_repair_from_the_health_page_goes_through_the_queue(staff_client, grinnell_live, site, run_queue, settings):
    settings.HANDLES_HEALTH_ALLOW_PRIVATE = True
    settings.HANDLES_HEALTH_HOST_INTERVAL = 0
    good = primo_page(site, "1", "One")
    missing = HandleFactory(prefix=grinnell_live, suffix="1", target_url=good)  # not on the server at all
    other = HandleFactory(prefix=grinnell_live, suffix="2", target_url=good)
    server_put(grinnell_live, "11084/2", site.base_url + "/elsewhere")
    from handles.repair import health, services

    run = health.run(services.health_start(filters={}, enqueue=False).pk)
    assert run.counts == {"broken": 2}
    response = run_queue(staff_client.post, reverse(HEALTH) + "?outcome=broken",
                         {"_repair": "1", "action": "repair", "handles": [missing.pk, other.pk]})
    assert response.status_code == 302
    requests = dict(HandleRequest.objects.filter(reason__startswith="repair from health check")
                    .values_list("handle__suffix", "op"))
    assert requests == {"1": "create", "2": "update"}
    assert server_url(grinnell_live, "11084/1") == good and server_url(grinnell_live, "11084/2") == good
    # Verify, for every handle the filters match.
    run_queue(staff_client.post, reverse(HEALTH) + "?outcome=broken",
              {"_repair": "1", "action": "verify", "all_matching": "1"})
    assert HandleRequest.objects.filter(op="verify", status="success").count() == 2
    rechecked = health.run(services.health_start(filters={}, enqueue=False).pk)
    assert rechecked.counts == {"correct": 2}


def test_repair_needs_a_choice_and_the_right_to_write(staff_client, manager_user, checked):
    from django.test import Client

    viewer_client = Client()
    viewer_client.force_login(manager_user)
    response = staff_client.post(reverse(HEALTH), {"_repair": "1", "action": "repair"}, follow=True)
    assert "Choose the handles to act on" in response.content.decode()
    assert not HandleRequest.objects.exists()
    handles, _ = checked
    assert viewer_client.post(reverse(HEALTH), {"_repair": "1", "action": "verify",
                                                "handles": [handles["legacy_alma"].pk]}).status_code == 403


def test_the_handle_list_filters_by_latest_health_outcome(staff_client, checked):
    handles, _ = checked
    url = reverse("admin:handles_handle_changelist")
    assert _listed(staff_client.get(url, {"health": "broken"}), handles) == {"legacy_alma"}
    assert _listed(staff_client.get(url, {"health": "correct"}), handles) == {"fine"}  # latest only
    assert _listed(staff_client.get(url, {"health": "never"}), handles) == set()
    refused = staff_client.get(url, {"health": "borken"})  # the admin's convention for a bad lookup: ?e=1
    assert refused.status_code == 302 and refused.url.endswith("?e=1")
    browse = reverse("desk:browse")
    assert _listed(staff_client.get(browse, {"health": "wrong_object"}), handles) == {"vendor_alma"}
    assert staff_client.get(browse, {"health": "borken"}).status_code == 400


def test_a_handles_page_shows_its_check_history(staff_client, checked):
    handles, _ = checked
    page = staff_client.get(reverse("admin:handles_handle_change", args=[handles["legacy_alma"].pk])).content.decode()
    history = page[page.index('id="hd-checks"'):]
    assert history.index("Broken") < history.index("Resolves correctly")  # latest first, both runs kept


def test_the_dashboard_shows_the_share_resolving_correctly_and_its_trend(staff_client, checked):
    page = staff_client.get(reverse("admin:index")).content.decode()
    card = page[page.index('id="hd-health-card"'):]
    assert "25%" in card[:600] and "1 of 4" in card[:600] and "-75 points since the one before" in card[:600]
    assert "<svg" in page[page.index("Share resolving correctly, per health check"):]
