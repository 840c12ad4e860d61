"""Resolve and the remote listing ask the Handle server: its failures are clear 502/503s, never 500s."""

from __future__ import annotations

import pytest

from handles import services
from handles.models import Handle
from tests.api.conftest import Api


def error(response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def test_a_pending_handle_is_not_on_the_server_yet(reader: Api, prefix, unique_suffix):
    suffix = unique_suffix("pending")
    services.handle_mint(prefix=prefix, suffix=suffix, target_url="https://example.org/p")  # not pushed
    body = reader.get(f"/resolve/20.500.12345/{suffix}").json()
    assert body["server"] == {"found": False, "url": None, "values": []}
    assert body["local"]["status"] == "pending" and body["agrees"] is False


def test_drift_shows_as_disagreement(reader: Api, prefix, run_queue, unique_suffix):
    suffix = unique_suffix("drift")
    minted = run_queue(services.handle_mint, prefix=prefix, suffix=suffix, target_url="https://example.org/a")
    Handle.objects.filter(pk=minted.handle_id).update(target_url="https://example.org/elsewhere")
    body = reader.get(f"/resolve/20.500.12345/{suffix.upper()}").json()
    assert body["server"]["url"] == "https://example.org/a" and body["agrees"] is False


def test_a_handle_unknown_everywhere(reader: Api, prefix):
    assert error(reader.get("/resolve/20.500.12345/never-minted")) == (404, "handle_not_found")


@pytest.mark.parametrize("fault", ["down", "503"])
def test_server_outage_is_a_503(reader: Api, prefix, sim, fault):
    sim.set_fault(fault)
    response = reader.get("/resolve/20.500.12345/anything")
    assert error(response) == (503, "handle_server_unavailable")
    assert response["Retry-After"] == "30"
    assert error(reader.get("/prefixes/20.500.12345/remote-handles")) == (503, "handle_server_unavailable")


def test_an_unreachable_server_is_a_503(reader: Api, home):
    assert error(reader.get("/resolve/20.500.12345/x")) == (503, "handle_server_unavailable")


def test_a_refused_listing_is_a_502(reader: Api, prefix, monkeypatch):
    monkeypatch.setenv("HANDLE_SECRET_WRONG", "not-the-secret")
    prefix.secret_env_var = "HANDLE_SECRET_WRONG"
    services.prefix_save(prefix=prefix)
    response = reader.get("/prefixes/20.500.12345/remote-handles")
    assert error(response) == (502, "handle_server_error")
    assert "credentials" in response.json()["error"]["message"]


def test_remote_paging(reader: Api, prefix, run_queue, unique_suffix):
    for _ in range(2):
        run_queue(services.handle_mint, prefix=prefix, suffix=unique_suffix("page"), target_url="https://e.org/")
    first = reader.get("/prefixes/20.500.12345/remote-handles", {"page_size": 1}).json()
    assert len(first["handles"]) == 1 and first["next_page"] == 1 and first["total"] >= 3  # + the admin handle
    last_page = first["total"] - 1
    last = reader.get("/prefixes/20.500.12345/remote-handles", {"page_size": 1, "page": last_page}).json()
    assert len(last["handles"]) == 1 and last["next_page"] is None
    beyond = reader.get("/prefixes/20.500.12345/remote-handles", {"page_size": 1, "page": last_page + 5}).json()
    assert beyond["handles"] == [] and beyond["next_page"] is None
