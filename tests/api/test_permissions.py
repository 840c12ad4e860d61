"""Who may do what: every kind of caller against reads and writes, and nothing changes when refused."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.db import connection
from django.middleware.csrf import _get_new_csrf_string
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from handles import services
from handles.api.models import ApiToken
from handles.models import Handle, HandleRequest, Prefix
from tests.api.conftest import Api, issue_token
from tests.factories import AssetFactory, HandleFactory, PrefixFactory, UserFactory

URL = "https://dams.example.edu/node/4711"
READS = {
    "get handle": lambda api: api.get("/handles/20.500.12345/x7kq2m"),
    "list": lambda api: api.get("/handles", {"prefix": "20.500.12345"}),
    "lookup handle": lambda api: api.get("/lookup/handle", {"handle": "20.500.12345/x7kq2m"}),
    "lookup asset": lambda api: api.get("/lookup/asset", {"source_system": "dams", "external_id": "4711"}),
    "iiif": lambda api: api.get("/iiif/metadata", {"source_system": "dams", "external_id": "4711"}),
}
WRITES = {
    "create": lambda api: api.post("/handles", {"handle": "new", "url": "https://example.org/n"}),
    "update": lambda api: api.post("/handles/20.500.12345/x7kq2m", {"url": "https://example.org/moved"}),
    "delete": lambda api: api.delete("/handles/20.500.12345/x7kq2m"),
    "publish": lambda api: api.post("/assets/publish", {"source_system": "dams", "external_id": "4711",
                                                        "url": "https://example.org/moved"}),
}


@pytest.fixture
def handle(home):
    asset = AssetFactory(source_system="dams", external_id="4711", url=URL)
    return HandleFactory(prefix=home, suffix="x7kq2m", target_url=URL, asset=asset)


def session_api(user) -> Api:
    """A browser session that sends Django's CSRF cookie and header, as the docs page's JS would."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    secret = _get_new_csrf_string()
    client.cookies["csrftoken"] = secret
    api = Api(client)
    api.headers = {"X-CSRFToken": secret}
    return api


def callers(client, kind: str, other_prefix) -> Api:
    if kind == "anonymous":
        return Api(client)
    if kind == "read token":
        return Api(client, issue_token("read"))
    if kind == "write token":
        return Api(client, issue_token("write"))
    if kind == "other prefix token":
        return Api(client, issue_token("write", [other_prefix]))
    if kind == "revoked token":
        return Api(client, issue_token("write", revoked=True))
    if kind == "staff session":
        return session_api(UserFactory(username="staff", groups=["Handle staff"]))
    if kind == "manager session":
        return session_api(UserFactory(username="manager", groups=["Collection managers"]))
    if kind == "non-staff session":
        return session_api(UserFactory(username="visitor", is_staff=False))
    raise AssertionError(kind)


# caller kind -> (read answer, write answer): status and error code (None for success)
MATRIX = {
    "anonymous": ((401, "authentication_required"), (401, "authentication_required")),
    "revoked token": ((401, "token_revoked"), (401, "token_revoked")),
    "read token": ((200, None), (403, "insufficient_scope")),
    "write token": ((200, None), (202, None)),
    "other prefix token": ((403, "prefix_forbidden"), (403, "prefix_forbidden")),
    "staff session": ((200, None), (202, None)),
    "manager session": ((200, None), (403, "permission_denied")),
    "non-staff session": ((403, "permission_denied"), (403, "permission_denied")),
}


def outcome(response) -> tuple[int, str | None]:
    status = response.status_code
    return status, response.json()["error"]["code"] if status >= 400 else None


@pytest.mark.parametrize("kind", MATRIX)
@pytest.mark.parametrize("operation", READS)
def test_reads(client, handle, other_prefix, kind, operation):
    api = callers(client, kind, other_prefix)
    expected = MATRIX[kind][0]
    if kind == "other prefix token" and operation in ("list", "lookup asset", "iiif"):
        expected = {"list": (403, "prefix_forbidden"), "lookup asset": (200, None), "iiif": (200, None)}[operation]
    assert outcome(READS[operation](api)) == expected


@pytest.mark.parametrize("kind", MATRIX)
@pytest.mark.parametrize("operation", WRITES)
def test_writes(client, handle, other_prefix, kind, operation):
    api = callers(client, kind, other_prefix)
    before = list(Handle.objects.values_list("suffix", "target_url", "status", "version"))
    status, code = outcome(WRITES[operation](api))
    assert (status, code) == MATRIX[kind][1]
    if status >= 400:
        assert list(Handle.objects.values_list("suffix", "target_url", "status", "version")) == before
        assert not HandleRequest.objects.exists()


def test_a_restricted_token_sees_only_its_prefixes(client, handle, other_prefix):
    HandleFactory(prefix=other_prefix, suffix="geo", target_url=URL, asset=handle.asset)
    api = Api(client, issue_token("read", [other_prefix]))
    assert [h["handle"] for h in api.get("/handles").json()["results"]] == ["20.500.99999/geo"]
    assert [h["handle"] for h in api.get("/lookup/url", {"url": URL}).json()["handles"]] == ["20.500.99999/geo"]
    body = api.get("/lookup/asset", {"source_system": "dams", "external_id": "4711"}).json()
    assert [h["handle"] for h in body["handles"]] == ["20.500.99999/geo"]


def test_a_session_write_without_the_csrf_header_is_refused(handle):
    api = session_api(UserFactory(username="staff", groups=["Handle staff"]))
    api.headers = {}
    response = api.post("/handles/20.500.12345/x7kq2m", {"url": "https://example.org/moved"})
    assert outcome(response) == (403, "csrf_failed")
    handle.refresh_from_db()
    assert handle.target_url == URL


@pytest.mark.parametrize("header", ["Bearer nonsense", "Bearer hdl_aaaaaaaaaa_" + "b" * 43, "Basic dXNlcjpwdw==",
                                    "Bearer", "Token abc"])
def test_invalid_credentials(client, home, header):
    response = client.get("/api/v1/handles", headers={"Authorization": header})
    assert outcome(response) == (401, "invalid_token")
    assert response["WWW-Authenticate"] == 'Bearer realm="handles"'


def test_a_token_with_the_right_lookup_but_a_wrong_secret_is_refused(client, home):
    token = issue_token("read")
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    response = client.get("/api/v1/handles", headers={"Authorization": f"Bearer {forged}"})
    assert outcome(response) == (401, "invalid_token")
    assert client.get("/api/v1/handles", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_a_revocation_elsewhere_takes_effect_within_the_token_cache_time(client, home, settings, monkeypatch):
    """Each process remembers a verified token for HANDLES_API_TOKEN_CACHE_SECONDS: a revocation made by
    another process (here: straight in the database) is seen once that time has passed."""
    settings.HANDLES_API_TOKEN_CACHE_SECONDS = 10
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr("handles.api.token_cache.time", SimpleNamespace(monotonic=lambda: clock.now))
    api = Api(client, issue_token("read"))
    assert api.get("/handles").status_code == 200
    ApiToken.objects.update(revoked_at=timezone.now())
    assert api.get("/handles").status_code == 200
    clock.now += 11
    assert outcome(api.get("/handles")) == (401, "token_revoked")


def test_without_a_token_cache_a_revocation_is_seen_at_once(client, home, settings):
    settings.HANDLES_API_TOKEN_CACHE_SECONDS = 0
    api = Api(client, issue_token("read"))
    assert api.get("/handles").status_code == 200
    ApiToken.objects.update(revoked_at=timezone.now())
    assert outcome(api.get("/handles")) == (401, "token_revoked")


@pytest.mark.django_db(transaction=True)
def test_each_process_remembers_the_default_prefix_as_it_remembers_tokens(client, settings, monkeypatch):
    """A served create that names no prefix finds the default one in the process's memory, not with a
    query; saving a prefix in this process forgets it at once, a change made elsewhere (here: straight in
    the database) is seen within HANDLES_API_TOKEN_CACHE_SECONDS."""
    settings.HANDLES_API_TOKEN_CACHE_SECONDS = 10
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr("handles.api.token_cache.time", SimpleNamespace(monotonic=lambda: clock.now))
    first = PrefixFactory(prefix="20.500.12345", is_default=True)
    api = Api(client, issue_token("write"))

    def created_under() -> str:
        response = api.post("/handles", {"url": "https://example.org/a"})
        assert response.status_code == 202, response.content
        return response.json()["full_handle"].split("/")[0]

    assert created_under() == "20.500.12345"
    with CaptureQueriesContext(connection) as queries:
        assert created_under() == "20.500.12345"
    assert not [q for q in queries.captured_queries if 'WHERE "handles_prefix"."is_default"' in q["sql"]]

    first.is_default = False
    services.prefix_save(prefix=first)
    services.prefix_save(prefix=PrefixFactory.build(prefix="20.500.99999", is_default=True))
    assert created_under() == "20.500.99999"

    Prefix.objects.exclude(pk=first.pk).update(is_default=False)  # as another process would
    Prefix.objects.filter(pk=first.pk).update(is_default=True)
    assert created_under() == "20.500.99999"
    clock.now += 11
    assert created_under() == "20.500.12345"

