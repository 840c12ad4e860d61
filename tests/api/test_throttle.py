"""Throttling: per token (or staff user) and, without valid credentials, per client IP."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.core.exceptions import ImproperlyConfigured

from handles.api.auth import parse_rate
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
