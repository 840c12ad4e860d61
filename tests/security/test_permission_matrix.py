"""Every URL of the project × every kind of caller: who may read, who may write, and nothing changes when refused.

The URLs are found by walking the resolver, so a new view without a line in EXPECTED fails this test
until someone decides who may use it. "Denied" is a redirect to the login page, 401, 403, 404 or 405,
with no change to handles, requests, assets, prefixes or tokens. Writes are POSTed: callers who may
write send an empty body (a form error is an answer, not a refusal); callers who may not send a
complete, hostile body, so that a missing check would show as a change.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from django.contrib import admin
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from handles.api.models import ApiToken
from handles.models import Asset, Handle, HandleRequest, Prefix
from tests.api.conftest import issue_token
from tests.factories import HandleFactory, UserFactory
from tests.security.conftest import HOME

ANON, MANAGER, STAFF, SUPER = "anonymous", "manager", "staff", "superuser"
READ_TOKEN, WRITE_TOKEN, OTHER_TOKEN = "read token", "write token", "other-prefix token"
ROLES = [ANON, MANAGER, STAFF, SUPER, READ_TOKEN, WRITE_TOKEN, OTHER_TOKEN]
EVERYONE = frozenset(ROLES)
NOBODY = frozenset()
DESK = frozenset({MANAGER, STAFF, SUPER})  # logged-in users of the admin desk
EDITORS = frozenset({STAFF, SUPER})
ROOT = frozenset({SUPER})
API_READERS = frozenset({MANAGER, STAFF, SUPER, READ_TOKEN, WRITE_TOKEN})
API_WRITERS = frozenset({STAFF, SUPER, WRITE_TOKEN})

# Admin model pages: app_label.model -> roles that may (view, add, change, delete).
ADMIN_MODELS = {
    "handles.prefix": (DESK, ROOT, ROOT, NOBODY),  # a prefix with handles is never deleted
    "handles.asset": (DESK, EDITORS, EDITORS, NOBODY),
    "handles.handle": (DESK, EDITORS, EDITORS, NOBODY),
    "handles.handlerequest": (DESK, NOBODY, NOBODY, NOBODY),
    "handles_repair.importpreset": (EDITORS, EDITORS, EDITORS, EDITORS),
    "handles_repair.importbatch": (DESK, EDITORS, NOBODY, NOBODY),
    "handles_repair.reconciliationrun": (DESK, EDITORS, NOBODY, NOBODY),
    "handles_repair.healthrun": (DESK, EDITORS, NOBODY, NOBODY),
    "handles_repair.handlecheck": (DESK, NOBODY, NOBODY, NOBODY),
    "handles_repair.assetwithseveralhandles": (DESK, NOBODY, EDITORS, NOBODY),
    "handles_api.apitoken": (ROOT, ROOT, ROOT, NOBODY),  # tokens are revoked, not deleted
    "handles_desk.bulkjob": (DESK, NOBODY, EDITORS, NOBODY),
    "handles_desk.collection": (DESK, EDITORS, EDITORS, ROOT),
    "auth.user": (ROOT, ROOT, ROOT, ROOT),
    "auth.group": (ROOT, ROOT, ROOT, ROOT),
    "django_q.schedule": (ROOT, ROOT, ROOT, ROOT),
    "django_q.success": (ROOT, NOBODY, ROOT, ROOT),
    "django_q.failure": (ROOT, NOBODY, ROOT, ROOT),
    "django_q.ormq": (ROOT, NOBODY, ROOT, ROOT),
    # Each user sees and changes only their own subscriptions: another's is "no such subscription" (a
    # redirect to the index, nothing changed; tests/notify/test_admin.py). Endpoints hold secrets: superusers.
    "handles_notify.subscription": (DESK, DESK, DESK, DESK),
    "handles_notify.webhookendpoint": (ROOT, ROOT, ROOT, ROOT),
    "handles_notify.notification": (EDITORS, NOBODY, NOBODY, NOBODY),
    "handles_notify.delivery": (EDITORS, NOBODY, NOBODY, NOBODY),
    "handles_notify.watchdogrun": (DESK, NOBODY, NOBODY, NOBODY),
}
# Model pages that are something else: (label, page) -> (roles that may GET, roles that may POST or None).
ADMIN_PAGES = {
    ("handles_repair.healthrun", "add"): (DESK, None),  # a redirect to the list, where runs are started
    ("handles_repair.healthrun", "change"): (DESK, None),  # a report: a POST only shows it again
    ("handles_repair.reconciliationrun", "change"): (DESK, None),
    ("handles_repair.importbatch", "change"): (DESK, EDITORS),  # step 2 of an import: map the columns
}
MODEL_PAGES = {"changelist": 0, "history": 0, "": 0, "add": 1, "change": 2, "delete": 3}

# Every other URL, by its route: (roles that may GET, roles that may POST, or None where POST is no write).
EXPECTED: dict[str, tuple[frozenset, frozenset | None]] = {
    "": (EVERYONE, None),
    "admin/": (DESK, None),
    "admin/login/": (EVERYONE, None),
    # A session's GET is refused (405), others are sent to the admin; POST would end the session under test.
    "admin/logout/": (EVERYONE - DESK, None),
    "admin/password_change/": (DESK, None),
    "admin/password_change/done/": (DESK, None),
    "admin/autocomplete/": (NOBODY, None),  # answers only with a field to complete
    "admin/jsi18n/": (DESK, None),
    "admin/r/<path:content_type_id>/<path:object_id>/": (NOBODY, None),  # no model has a page on the site
    "admin/^(?P<app_label>auth|django_q|handles|handles_repair|handles_api|handles_desk|handles_notify)/$": (DESK,
                                                                                                         None),
    "admin/(?P<url>.*)$": (NOBODY, None),
    "admin/auth/user/<id>/password/": (ROOT, ROOT),
    "admin/handles/handle/<int:pk>/redirect/": (EDITORS, EDITORS),
    "admin/handles/handle/<int:pk>/tombstone/": (EDITORS, EDITORS),
    "admin/handles/handle/<int:pk>/restore/": (EDITORS, EDITORS),
    "admin/handles/handle/<int:pk>/delete-handle/": (EDITORS, EDITORS),
    "admin/handles/handle/<int:pk>/verify/": (EDITORS, EDITORS),
    "admin/handles/handle/<int:pk>/retry/": (EDITORS, EDITORS),
    "admin/handles/prefix/<int:pk>/check-connection/": (EDITORS, EDITORS),  # writes a scratch handle on the server
    "admin/handles/handlerequest/failures/": (DESK, None),
    "admin/handles/handlerequest/failures/retry/": (NOBODY, EDITORS),
    "admin/handles_repair/importbatch/<int:pk>/status.json": (DESK, None),
    "admin/handles_repair/importbatch/<int:pk>/report.csv": (DESK, None),
    "admin/handles_repair/importbatch/<int:pk>/apply/": (EDITORS, EDITORS),  # GET goes back to the batch
    "admin/handles_repair/importbatch/<int:pk>/continue-push/": (EDITORS, EDITORS),
    "admin/handles_repair/importbatch/<int:pk>/retry-failed/": (EDITORS, EDITORS),  # GET goes back to the batch
    "admin/handles_repair/importbatch/<int:pk>/cancel/": (EDITORS, EDITORS),  # GET goes back to the batch
    "admin/handles_repair/reconciliationrun/<int:pk>/cancel/": (EDITORS, EDITORS),
    "admin/handles_repair/reconciliationrun/repair-cancel/<int:pk>/": (EDITORS, EDITORS),
    "admin/handles_repair/healthrun/<int:pk>/cancel/": (EDITORS, EDITORS),
    "admin/handles_repair/importbatch/<int:pk>/conflicts/": (DESK, EDITORS),
    "admin/handles_repair/reconciliationrun/<int:pk>/status.json": (DESK, None),
    "admin/handles_repair/reconciliationrun/<int:pk>/repair/": (EDITORS, EDITORS),
    "admin/handles_repair/reconciliationrun/<int:pk>/rows.csv": (DESK, None),
    "admin/handles_repair/reconciliationrun/repair-status/<int:pk>.json": (DESK, None),
    "admin/handles_repair/reconciliationrun/repair-retry/<int:pk>/": (EDITORS, EDITORS),  # GET: back to the run
    "admin/handles_repair/healthrun/<int:pk>/status.json": (DESK, None),
    "admin/handles_repair/healthrun/failing.csv": (DESK, None),
    "admin/handles_api/apitoken/<int:pk>/created/": (ROOT, None),  # shows a new token once (from the session)
    "admin/handles_desk/bulkjob/<int:pk>/status/": (DESK, None),
    "admin/handles_desk/bulkjob/<int:pk>/report.csv": (DESK, None),
    "admin/handles_desk/bulkjob/<int:pk>/cancel/": (NOBODY, EDITORS),
    "admin/handles_desk/bulkjob/<int:pk>/retry-failed/": (NOBODY, EDITORS),
    "admin/handles_notify/subscription/settings/": (DESK, DESK),  # POST sends the caller a test message
    "admin/handles_notify/watchdogrun/run/": (DESK, EDITORS),  # GET goes back to the list
    "api/v1/": (EVERYONE, None),
    "api/v1/handles": (API_READERS | {OTHER_TOKEN}, API_WRITERS),  # the other token lists only its own prefix
    "api/v1/handles/<str:prefix>/<suffix:suffix>": (API_READERS, API_WRITERS),
    "api/v1/requests/<int:id>": (API_READERS, None),
    "api/v1/resolve/<str:prefix>/<suffix:suffix>": (API_READERS, None),
    "api/v1/prefixes/<str:prefix>/remote-handles": (API_READERS, None),
    "api/v1/assets/publish": (NOBODY, API_WRITERS),
    "api/v1/assets/unpublish": (NOBODY, API_WRITERS),
    "api/v1/assets/change-url": (NOBODY, API_WRITERS),
    "api/v1/assets/delete": (NOBODY, API_WRITERS),
    "api/v1/lookup/asset": (API_READERS | {OTHER_TOKEN}, None),  # filtered to the other prefix: see below
    "api/v1/lookup/handle": (API_READERS, None),
    "api/v1/lookup/url": (API_READERS | {OTHER_TOKEN}, None),
    "api/v1/iiif/metadata": (API_READERS | {OTHER_TOKEN}, None),
    "api/v1/openapi.json": (EVERYONE, None),
    "api/v1/docs": (EVERYONE, None),
    "api/v1/^(?P<path>[\\s\\S]*)$": (NOBODY, None),
    "browse/": (DESK, None),
    "browse/export.csv": (DESK, None),
    "browse/<int:pk>/": (DESK, None),
    "tombstone/<str:prefix>/<path:suffix>": (EVERYONE, None),
    "handles/<str:prefix>/<path:suffix>": (EVERYONE, None),
}

QUERIES = {
    "api/v1/lookup/asset": "?source_system=dams&external_id=4711",
    "api/v1/lookup/handle": f"?handle={HOME}/live",
    "api/v1/lookup/url": "?url=https%3A%2F%2Fdams.example.edu%2F4711",
    "api/v1/iiif/metadata": "?source_system=dams&external_id=4711",
}
LITERAL_URLS = {
    "admin/^(?P<app_label>auth|django_q|handles|handles_repair|handles_api|handles_desk|handles_notify)/$":
        "/admin/handles/",
    "admin/(?P<url>.*)$": "/admin/no-such-page/",
    "api/v1/^(?P<path>[\\s\\S]*)$": "/api/v1/no-such-endpoint",
}
# A write that would change something if it were let through: every form of ours finds what it needs.
HOSTILE_FORM = {
    "target_url": "https://evil.example/x", "reason": "because", "successor_url": "https://evil.example/s",
    "confirm": "yes", "post": "yes", "_mint": "1", "suffix": "evil", "prefix": "1", "source_system": "dams",
    "external_id": "evil", "title": "t", "url": "https://evil.example", "state": "published", "name": "Stolen",
    "site_name": "x", "server_url": "https://evil.example", "secret_env_var": "X", "scope": "write",
    "kinds": ["missing", "differs"], "username": "mallory", "password1": "Zz-1234567!x", "password2": "Zz-1234567!x",
}
ASSET = {"source_system": "dams", "external_id": "4711"}
HOSTILE_JSON = {
    "api/v1/handles": {"handle": "evil", "prefix": HOME, "url": "https://evil.example/x"},
    "api/v1/handles/<str:prefix>/<suffix:suffix>": {"url": "https://evil.example/x"},
    "api/v1/assets/publish": {**ASSET, "prefix": HOME, "url": "https://evil.example/x"},
    "api/v1/assets/unpublish": ASSET,
    "api/v1/assets/change-url": {**ASSET, "url": "https://evil.example/x"},
    "api/v1/assets/delete": {**ASSET, "reason": "because"},
}
DENIED = {401, 403, 404, 405}


def routes(resolver: URLResolver | None = None, prefix: str = "") -> Iterator[str]:
    for pattern in (resolver or get_resolver()).url_patterns:
        if isinstance(pattern, URLResolver):
            yield from routes(pattern, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern)


def admin_model(route: str) -> tuple[type, str] | None:
    """The model an admin model page is about, and which page it is ("" is the redirect to the change page)."""
    match = re.fullmatch(r"admin/(\w+)/(\w+)/(?:<path:object_id>/)?(\w*)/?", route)
    if not match:
        return None
    for model in admin.site._registry:
        if (model._meta.app_label, model._meta.model_name) == match.group(1, 2):
            page = match.group(3) or ("" if "<path:object_id>" in route else "changelist")
            return (model, page) if page in MODEL_PAGES else None
    return None


def expectation(route: str) -> tuple[frozenset, frozenset | None]:
    found = admin_model(route)
    if found is None:
        assert route in EXPECTED, f"no expectation for the URL {route!r}: add it to EXPECTED"
        return EXPECTED[route]
    model, page = found
    label = f"{model._meta.app_label}.{model._meta.model_name}"
    if (label, page) in ADMIN_PAGES:
        return ADMIN_PAGES[label, page]
    assert label in ADMIN_MODELS, f"no expectation for the admin of {label}: add it to ADMIN_MODELS"
    if page == "":
        return DESK, None  # a bare redirect to the change page, which answers for itself
    view, *_ = ADMIN_MODELS[label]
    allowed = ADMIN_MODELS[label][MODEL_PAGES[page]]
    if page in ("changelist", "history"):
        return view, None  # the changelist's actions: tests/desk/test_permissions.py and test_csrf.py
    return (view if page == "change" else allowed), allowed  # a change page shows itself read-only to viewers


def concrete(route: str, world: dict) -> str:
    if route in LITERAL_URLS:
        return LITERAL_URLS[route]
    found = admin_model(route)
    obj = None
    if found:
        model = found[0]
        obj = world["objects"].get(model) or model._default_manager.order_by("pk").first()
        assert obj is not None or "<" not in route, f"the world has no {model.__name__} for {route}"
    handle = world["stone"] if route.startswith("tombstone/") else world["handle"]
    values = {
        "prefix": HOME, "suffix": handle.suffix,
        "content_type_id": world["handle_type"].pk, "id": world["user"].pk,
        "object_id": obj.pk if obj is not None else world["handle"].pk,
    }
    if route.startswith("api/v1/requests/"):
        values["id"] = world["request"].pk
    if route.startswith("browse/"):
        values["pk"] = world["handle"].pk
    elif route.startswith("admin/handles/handle/<int:pk>"):
        values["pk"] = world["spare"].pk  # writers really redirect, tombstone and delete it
    elif "<int:pk>" in route:
        model_name = route.split("/")[2]
        by_name = {m._meta.model_name: o for m, o in world["objects"].items()}
        values["pk"] = by_name["repairjob" if "/repair-" in route else model_name].pk
    url = "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(values[m.group(1)]), route)
    return url + QUERIES.get(route, "")


def snapshot() -> dict:
    return {
        "handles": sorted(Handle.objects.values_list("pk", "status", "target_url", "version", "asset_id")),
        "requests": HandleRequest.objects.count(),
        "assets": sorted(Asset.objects.values_list("pk", "title", "url", "state")),
        "prefixes": sorted(Prefix.objects.values_list("pk", "prefix", "server_url", "site_name")),
        "tokens": sorted(ApiToken.objects.values_list("pk", "scope", "revoked_at")),
    }


def client_for(role: str, world: dict) -> Client:
    if role in (READ_TOKEN, WRITE_TOKEN, OTHER_TOKEN):
        token = issue_token("read" if role == READ_TOKEN else "write",
                            [world["other"]] if role == OTHER_TOKEN else [])
        return Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    client = Client()
    if role != ANON:
        groups = {MANAGER: ["Collection managers"], STAFF: ["Handle staff"]}.get(role, [])
        client.force_login(UserFactory(username=role, groups=groups, is_superuser=role == SUPER))
    return client


def denied(response) -> bool:
    if 300 <= response.status_code < 400:
        return "/admin/login/" in response.get("Location", "")
    return response.status_code in DENIED


def answered(response) -> bool:
    """Let through: not refused, and no crash (a Handle server that cannot be reached is an answer)."""
    return not denied(response) and (response.status_code < 500 or response.status_code in (502, 503, 504))


def post(client: Client, route: str, url: str, allowed: bool, world: dict):
    if route in HOSTILE_JSON:
        return client.post(url, json.dumps({} if allowed else HOSTILE_JSON[route]), content_type="application/json")
    if not allowed:
        return client.post(url, HOSTILE_FORM)
    # An allowed caller sends an incomplete form (an empty one to a delete page, which would otherwise delete);
    # "primary" names the handle the asset-duplicates page wants.
    return client.post(url, {} if url.endswith("/delete/") else {"primary": world["handle"].pk})


@pytest.mark.parametrize("role", ROLES)
def test_every_url_for_every_role(world, role):
    client = client_for(role, world)
    all_routes = sorted(set(routes()))
    assert len(all_routes) > 100  # the walk reached every app's admin, the API, the desk and the public pages
    wrong = []
    for route in all_routes:
        if route.startswith("bench/"):
            continue
        readers, writers = expectation(route)
        url = concrete(route, world)
        before = snapshot()
        response = client.get(url)
        ok = answered(response) if role in readers else denied(response)
        if not ok:
            wrong.append(f"GET {url}: {response.status_code} {response.get('Location', '')}")
        if role not in readers:
            assert snapshot() == before, f"a refused GET {url} by {role} changed something"
        if role == OTHER_TOKEN and role in readers:
            assert f"{HOME}/live".encode() not in response.content, f"{url} showed another prefix's handle"
        if writers is None:
            continue
        before = snapshot()
        response = post(client, route, url, role in writers, world)
        ok = answered(response) if role in writers else denied(response)
        if not ok:
            wrong.append(f"POST {url}: {response.status_code} {response.get('Location', '')}")
        if role not in writers:
            assert snapshot() == before, f"a refused POST {url} by {role} changed something"
    assert not wrong, f"{role}:\n" + "\n".join(wrong)


def test_a_shared_asset_stays_open_to_each_of_its_prefixes(world):
    """Another prefix's token may not change an asset that has handles only here, but once it has a handle
    of its own for the asset, it may unpublish it or move it (the handles here that follow still refuse)."""
    client = client_for(OTHER_TOKEN, world)
    body = json.dumps({"source_system": "dams", "external_id": "4711"})
    refused = client.post("/api/v1/assets/unpublish", body, content_type="application/json")
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "prefix_forbidden")
    assert Asset.objects.get(pk=world["asset"].pk).state == "published"
    HandleFactory(prefix=world["other"], suffix="geo", asset=world["asset"], target_url="https://geo.example/1")
    assert client.post("/api/v1/assets/unpublish", body, content_type="application/json").status_code == 200
    assert Asset.objects.get(pk=world["asset"].pk).state == "unpublished"
