"""The client's error table, checked against a live server: the simulator (tests/handle_server) and the
real HANDLE.NET server (tests/real_server) must answer each case alike."""

from __future__ import annotations

import uuid

import pytest

from handles.handle_server import client as hs
from handles.handle_server.client import HandleServerClient, ServerConfig


def url_value(url: str, index: int = 1) -> dict:
    return {"index": index, "type": "URL", "data": {"format": "string", "value": url}}


def url_record(prefix: str, url: str) -> list[dict]:
    return [{"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
        "handle": f"{prefix}/ADMIN", "index": 300, "permissions": "111111111111"}}}, url_value(url)]


def check_error_table(client: HandleServerClient, prefix: str) -> None:
    """Each failing call raises the expected error class with the expected HTTP status and responseCode."""
    handle = f"{prefix}/et-{uuid.uuid4().hex[:8]}"
    client.create_handle(handle, url_record(prefix, "https://example.org/a"))
    cases = [
        (hs.HandleAlreadyExists, 409, 101, lambda: client.create_handle(handle, url_record(prefix, "https://x.org"))),
        (hs.HandleNotFound, 404, 100, lambda: client.update_values(f"{handle}-none", [url_value("https://x.org")])),
        (hs.HandleNotFound, 404, 100, lambda: client.get_handle(f"{handle}-none")),
        (hs.HandleNotFound, 404, 100, lambda: client.delete_handle(f"{handle}-none")),
        (hs.InvalidRequest, 400, 301, lambda: client.create_handle("99.999/elsewhere", url_record(prefix, "https://x.org"))),
        (hs.InvalidRequest, 400, 301, lambda: client.count_handles("99.999")),
        (hs.InvalidRequest, 400, 202, lambda: client.update_values(handle, [url_value("https://x.org", index=0)])),
        (hs.InvalidRequest, 400, 4, lambda: client.update_values(handle, [{
            "index": 2, "type": "URL", "data": {"format": "nonsense", "value": "x"}}])),
    ]
    for error, status, rc, call in cases:
        with pytest.raises(error) as raised:
            call()
        assert (raised.value.status, raised.value.response_code) == (status, rc), raised.value.exchange
    config = client.config
    anonymous = HandleServerClient(ServerConfig(base_url=config.base_url, pinned_certificate=config.pinned_certificate))
    with pytest.raises(hs.AuthenticationFailed) as refused:
        anonymous.count_handles(prefix)
    assert (refused.value.status, refused.value.response_code) == (401, 402)
    with pytest.raises(hs.AuthenticationFailed):
        anonymous.authenticate()  # 200 {"authenticated": false}
    wrong = HandleServerClient(ServerConfig(base_url=config.base_url, pinned_certificate=config.pinned_certificate,
                                            auth_identity=f"300:{prefix}/ADMIN", secret="not-the-secret"))
    with pytest.raises(hs.AuthenticationFailed) as refused:
        wrong.create_handle(f"{handle}-wrong", url_record(prefix, "https://x.org"))
    assert (refused.value.status, refused.value.body) == (401, "")
    with pytest.raises(hs.AuthenticationFailed, match="Identity not verified"):
        wrong.authenticate()
    client.delete_handle(handle)
