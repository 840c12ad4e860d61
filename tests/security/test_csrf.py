"""Every form and every session write refuses a POST without the CSRF token (403), and changes nothing.

The URLs come from the same resolver walk as the permission matrix, so a new page is checked too. The
caller is a superuser, who may do everything: only the missing token stands in the way.
"""

from __future__ import annotations

import json

import pytest
from django.contrib import admin
from django.test import Client

from handles.desk.models import BulkJob
from handles.models import Handle, HandleRequest
from handles.repair.models import HealthRun, ImportBatch, ReconciliationRun
from tests.security.test_permission_matrix import HOSTILE_FORM, HOSTILE_JSON, concrete, routes, snapshot

# Routes a POST cannot reach a view through: the API's catch-all (csrf-exempt JSON 404, no writes).
NO_VIEW = {"api/v1/^(?P<path>[\\s\\S]*)$"}


def jobs() -> dict:
    return {"bulk": BulkJob.objects.count(), "imports": ImportBatch.objects.count(),
            "reconciliations": ReconciliationRun.objects.count(), "health": HealthRun.objects.count()}


@pytest.fixture
def browser(superuser) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(superuser)
    return client


def test_every_post_without_the_token_is_refused(browser, world):
    before, before_jobs = snapshot(), jobs()
    answers = {}
    for route in sorted(set(routes())):
        if route.startswith("bench/") or route in NO_VIEW:
            continue
        url = concrete(route, world)
        if route in HOSTILE_JSON:
            for method in ("post", "patch", "delete") if "<suffix:suffix>" in route else ("post",):
                response = getattr(browser, method)(url, json.dumps(HOSTILE_JSON[route]),
                                                    content_type="application/json")
                answers[f"{method.upper()} {url}"] = response.status_code
                assert response.json()["error"]["code"] == "csrf_failed"
        else:
            answers[f"POST {url}"] = browser.post(url, HOSTILE_FORM).status_code
            if route.startswith("api/v1/") and answers[f"POST {url}"] == 405:
                answers[f"POST {url}"] = "read-only endpoint"  # the API routes no POST to it at all
    assert len(answers) > 100
    not_refused = {k: v for k, v in answers.items() if v not in (403, "read-only endpoint")}
    assert not not_refused, f"answered without a CSRF token: {not_refused}"
    assert snapshot() == before and jobs() == before_jobs


def test_every_admin_action_without_the_token_is_refused(browser, superuser, world):
    """The admin actions, including those that start desk bulk jobs (redirect rule, tombstone, verify, retry)."""
    request = type("R", (), {"user": superuser, "GET": {}, "POST": {}, "method": "GET"})()
    before, before_jobs = snapshot(), jobs()
    checked = 0
    for model in (Handle, HandleRequest, *admin.site._registry):
        model_admin = admin.site._registry[model]
        url = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        selected = list(model._default_manager.values_list("pk", flat=True)[:5])
        for action in model_admin.get_actions(request):
            response = browser.post(url, {**HOSTILE_FORM, "action": action, "_selected_action": selected,
                                          "select_across": "1", "index": "0"})
            assert response.status_code == 403, (url, action, response.status_code)
            checked += 1
    assert checked >= 8
    assert snapshot() == before and jobs() == before_jobs


def test_with_the_token_the_same_browser_gets_through(browser, world):
    """The refusals above are the CSRF check's, not something else's."""
    browser.get("/admin/handles/handle/")
    token = browser.cookies["csrftoken"].value
    url = f"/admin/handles/handle/{world['spare'].pk}/redirect/"
    response = browser.post(url, {"target_url": "https://example.org/moved", "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert Handle.objects.get(pk=world["spare"].pk).target_url == "https://example.org/moved"
