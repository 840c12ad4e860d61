"""Throttling: per token (or staff user) and, without valid credentials, per client IP."""

from __future__ import annotations

from types import SimpleNamespace
from uuid import uuid4

import pytest
from django.core.exceptions import ImproperlyConfigured

from handles.api.auth import forget_counts, parse_rate
from tests.api.conftest import Api, issue_token

NOON = 1_800_000_000.0  # a fixed clock: the counting window never rolls over during a test


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch):
    clock = SimpleNamespace(now=NOON + 15)
    monkeypatch.setattr("handles.api.auth.time", SimpleNamespace(time=lambda: clock.now))
    return clock


def test_a_token_over_its_rate_gets_429(client, home, settings, frozen_clock):
    settings.HANDLES_API_RATE = "3/minute"
    busy, other = Api(client, issue_token("read")), Api(client, issue_token("read"))
    assert [busy.get("/handles").status_code for _ in range(3)] == [200, 200, 200]
    refused = busy.get("/handles")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "throttled"
    assert refused["Retry-After"] == "45"  # the rest of the minute
    assert other.get("/handles").status_code == 200  # counted per token
    frozen_clock.now += 60
    assert busy.get("/handles").status_code == 200  # a new window


def test_failed_authentication_is_counted_per_ip(client, home, settings):
    settings.HANDLES_API_ANON_RATE = "2/minute"
    guesser = Api(client, "hdl_aaaaaaaaaa_" + "b" * 43)
    assert [guesser.get("/handles").status_code for _ in range(3)] == [401, 401, 429]
    other_ip = client.get("/api/v1/handles", REMOTE_ADDR="192.0.2.7")
    assert other_ip.status_code == 401


def test_the_client_ip_can_come_from_a_proxy_header(client, home, settings):
    settings.HANDLES_API_ANON_RATE = "1/minute"
    settings.HANDLES_API_CLIENT_IP_HEADER = "HTTP_X_FORWARDED_FOR"
    first = client.get("/api/v1/handles", headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.5"})
    second = client.get("/api/v1/handles", headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.5"})
    third = client.get("/api/v1/handles", headers={"X-Forwarded-For": "203.0.113.6"})
    assert [first.status_code, second.status_code, third.status_code] == [401, 429, 401]


def test_rates():
    assert parse_rate("1200/minute") == (1200, 60)
    assert parse_rate("10/s") == (10, 1)
    assert parse_rate("5000/day") == (5000, 86400)
    with pytest.raises(ImproperlyConfigured):
        parse_rate("lots")


def test_with_a_shared_cache_every_process_counts_against_one_limit(client, home, settings):
    """HANDLES_CACHE_URL=redis://...: the counters live in Redis, so a second process (here: the in-process
    counts forgotten between calls) continues the same count; the default local-memory cache counts in
    each process, as that cache would."""
    settings.HANDLES_API_RATE = "2/minute"
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": "redis://127.0.0.1:6379/15", "KEY_PREFIX": f"throttle-{uuid4().hex}"}}
    busy = Api(client, issue_token("read"))
    statuses = []
    for _ in range(3):
        statuses.append(busy.get("/handles").status_code)
        forget_counts()  # as if the next call reached another worker process
    assert statuses == [200, 200, 429]


def test_the_in_process_count_is_per_caller_and_window(client, home, settings, frozen_clock):
    settings.HANDLES_API_RATE = "1/minute"
    assert settings.CACHES["default"]["BACKEND"].endswith("LocMemCache")
    first, second = Api(client, issue_token("read")), Api(client, issue_token("read"))
    assert [first.get("/handles").status_code, first.get("/handles").status_code] == [200, 429]
    assert second.get("/handles").status_code == 200
    frozen_clock.now += 60
    assert first.get("/handles").status_code == 200
    forget_counts()
    assert second.get("/handles").status_code == 200
