"""The one client against the real server: every operation and the error table, logged in by secret key
and by client certificate, in pinned and verify TLS modes."""

from __future__ import annotations

import ssl
import uuid

import pytest
import requests

from handles.handle_server import client as hs
from handles.handle_server.client import HandleServerClient
from tests.handle_server.error_table import check_error_table, url_record, url_value
from tests.real_server.conftest import cert_config, secret_config


@pytest.fixture
def client(clean_server, login) -> HandleServerClient:
    config = cert_config(clean_server) if login == "client certificate" else secret_config(clean_server)
    return HandleServerClient(config)


def test_every_operation(clean_server, client, login):
    prefix = clean_server.prefix
    identity = client.config.auth_identity
    assert client.authenticate().body == {"authenticated": True, "id": identity}
    handle = f"{prefix}/rt-{uuid.uuid4().hex[:8]}/with slash"
    assert client.create_handle(handle, url_record(clean_server.prefix, "https://example.org/1")).status == 201
    assert client.get_url(handle)[0] == "https://example.org/1"
    assert client.update_values(handle, [url_value("https://example.org/2")]).status == 200
    assert client.get_url(handle.upper())[0] == "https://example.org/2"  # case-insensitive
    values = client.get_handle(handle, indexes=[100], authenticated=True).body["values"]
    assert values[0]["data"]["value"]["handle"] == f"{prefix}/ADMIN"
    assert client.count_handles(prefix) == 2  # ours and the admin handle
    assert set(client.iter_handles(prefix, page_size=1)) == {handle.upper(), f"{prefix}/ADMIN".upper()}
    assert client.delete_handle(handle).status == 200
    with pytest.raises(hs.HandleNotFound):
        client.get_handle(handle)


def test_error_table(clean_server, client):
    check_error_table(client, clean_server.prefix)


@pytest.mark.parametrize("make_config", [secret_config, cert_config], ids=["secret key", "client certificate"])
def test_verify_mode_refuses_the_self_signed_certificate_clearly(clean_server, make_config):
    """The real server's certificate is self-signed `CN=anonymous` without a SAN: verify mode (system CAs,
    hostname check) refuses it before any credential is sent; pinned mode is the way to trust it."""
    verifying = HandleServerClient(make_config(clean_server, pinned_certificate="", verify=True))
    with pytest.raises(hs.InvalidRequest, match="certificate verify failed"):
        verifying.authenticate()


def test_verify_mode_logs_in_by_certificate_once_the_certificate_is_trusted(clean_server, tmp_path, monkeypatch):
    """Verify mode with the server's certificate made trustworthy (as a site's own CA would make it): the
    client's verifying context, ticket-free like the others, logs in by certificate. Only the hostname
    check is lifted here: the test certificate has no name to match."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text(clean_server.certificate)
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    context = hs.tls_context(verify=True)
    context.check_hostname = False
    assert context.options & ssl.OP_NO_TICKET and context.verify_mode == ssl.CERT_REQUIRED
    verifying = HandleServerClient(cert_config(clean_server, pinned_certificate="", verify=True))
    adapter = hs._TLSAdapter(context, check_hostname=False, pool_maxsize=1)
    verifying._session.mount("https://", adapter)
    assert verifying.authenticate().body["id"] == clean_server.env["HANDLE_SERVER_CLIENT_IDENTITY"]


def test_a_client_offering_a_session_ticket_is_refused_certificate_login(clean_server):
    """The fact the client's OP_NO_TICKET rests on: the same certificate, with Python's default (ticket-
    offering) context, gets 401 / responseCode 402 on a write."""

    class TicketAdapter(requests.adapters.HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            context = ssl.create_default_context(cadata=clean_server.certificate)
            context.check_hostname = False
            kwargs["ssl_context"], kwargs["assert_hostname"] = context, False
            super().init_poolmanager(*args, **kwargs)

        def cert_verify(self, conn, url, verify, cert):
            super().cert_verify(conn, url, False, cert)
            conn.cert_reqs = "CERT_REQUIRED"

    session = requests.Session()
    session.trust_env = False
    session.mount("https://", TicketAdapter())
    session.cert = (clean_server.env["HANDLE_SERVER_CLIENT_CERT"], clean_server.env["HANDLE_SERVER_CLIENT_KEY"])
    response = session.put(f"{clean_server.url}/api/handles/{clean_server.prefix}/rt-ticket",
                           params={"overwrite": "false"}, json={"values": [url_value("https://x.org")]},
                           headers={"Authorization": 'Handle clientCert="true"'}, timeout=10)
    assert (response.status_code, response.json()["responseCode"]) == (401, 402)
