"""API test fixtures: tokens of every kind, a JSON client, and throttle counters reset per test."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client

from handles.api import services as api_services
from handles.api import token_cache
from handles.api.auth import forget_counts
from handles.api.models import ApiToken
from handles.models import Prefix
from tests.factories import PrefixFactory

ROOT = "/api/v1"


@pytest.fixture(autouse=True)
def fresh_process_state():
    """Throttle counters (Django's cache) and remembered tokens live in the process: each test starts
    with none."""
    cache.clear()
    forget_counts()
    token_cache.forget()
    yield
    cache.clear()
    forget_counts()
    token_cache.forget()


@pytest.fixture
def home(db) -> Prefix:
    """The default prefix, for tests that never reach a Handle server (nothing listens on its port)."""
    return PrefixFactory(prefix="20.500.12345", is_default=True, server_url="https://127.0.0.1:9")


@pytest.fixture
def other_prefix(db) -> Prefix:
    return PrefixFactory(prefix="20.500.99999", site_name="GeoData Portal", server_url="https://127.0.0.1:9")


def issue_token(scope: str, prefixes: Iterable[Prefix] = (), *, revoked: bool = False, name: str = "") -> str:
    token = ApiToken(name=name or f"{scope} token", scope=scope)
    plain = api_services.token_create(token=token, prefixes=list(prefixes), created_by=None)
    if revoked:
        api_services.token_revoke(token=token)
    return plain


class Api:
    """A JSON client for /api/v1 with an optional bearer token."""

    def __init__(self, client: Client, token: str | None = None) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        return {**self.headers, **(extra or {})}

    def get(self, path: str, params: dict[str, Any] | None = None, headers: dict[str, str] | None = None):
        return self.client.get(ROOT + path, params or {}, headers=self._headers(headers))

    def post(self, path: str, body: Any = None, headers: dict[str, str] | None = None, method: str = "post"):
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return getattr(self.client, method)(ROOT + path, data=data, content_type="application/json",
                                            headers=self._headers(headers))

    def patch(self, path: str, body: Any, headers: dict[str, str] | None = None):
        return self.post(path, body, headers, method="patch")

    def delete(self, path: str, headers: dict[str, str] | None = None):
        return self.client.delete(ROOT + path, headers=self._headers(headers))


@pytest.fixture
def read_token(db) -> str:
    return issue_token(ApiToken.Scope.READ)


@pytest.fixture
def write_token(db) -> str:
    return issue_token(ApiToken.Scope.WRITE)


@pytest.fixture
def reader(client, read_token) -> Api:
    return Api(client, read_token)


@pytest.fixture
def writer(client, write_token) -> Api:
    return Api(client, write_token)


@pytest.fixture
def anonymous(client) -> Api:
    return Api(client)
