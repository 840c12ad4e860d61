"""The simulator's authentication as the real server showed it: client-certificate login (refused when the
client offered a session ticket), the session API the probe uses, and the shutdown window's 401."""

from __future__ import annotations

import base64
import http.client
import socket
import ssl

import pytest

from handles.handle_server import client as hs
from handles.handle_server.client import HandleServerClient, ServerConfig
from handles.simulator.api import MSG_SHUTDOWN_VERIFYING
from handles.simulator.server import offers_session_ticket

PREFIX = "20.500.12345"
SECRET = "test-secret-key-123"
URL_RECORD = [{"index": 1, "type": "URL", "data": {"format": "string", "value": "https://example.org/c"}}]


def cert_client(sim, **overrides) -> HandleServerClient:
    config = dict(base_url=sim.base_url, auth_identity=sim.client_identity, pinned_certificate=sim.cert_path.read_text(),
                  client_cert=str(sim.client_cert_path), client_key=str(sim.client_key_path), timeout=3)
    return HandleServerClient(ServerConfig(**{**config, **overrides}))


def raw_request(sim, context: ssl.SSLContext, method: str, path: str, headers: dict[str, str],
                body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPSConnection("127.0.0.1", sim.port, context=context, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, {k: v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def cert_context(sim, *, tickets: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=sim.cert_path.read_text())
    context.check_hostname = False
    context.load_cert_chain(sim.client_cert_path, sim.client_key_path)
    if not tickets:
        context.options |= ssl.OP_NO_TICKET
    return context


def test_client_certificate_login_writes_reads_lists_and_deletes(sim, unique_suffix):
    client = cert_client(sim)
    assert client.authenticate().body == {"authenticated": True, "id": f"301:{PREFIX}/ADMIN"}
    handle = f"{PREFIX}/{unique_suffix('cert')}"
    assert client.create_handle(handle, URL_RECORD).status == 201
    client.update_values(handle, [{"index": 1, "type": "URL", "data": {"format": "string", "value": "https://e.org/2"}}])
    assert client.get_url(handle)[0] == "https://e.org/2"
    assert handle.upper() in set(client.iter_handles(PREFIX))
    client.delete_handle(handle)
    with pytest.raises(hs.HandleNotFound):
        client.get_handle(handle)


def test_a_client_that_offers_a_session_ticket_is_not_logged_in_by_its_certificate(sim, unique_suffix):
    """As on the real server: 401 with responseCode 402 and only the Handle challenge; the same request
    without a ticket offered succeeds."""
    path = f"/api/handles/{PREFIX}/{unique_suffix('ticket')}?overwrite=false"
    headers = {"Authorization": 'Handle clientCert="true"', "Content-Type": "application/json"}
    body = b'{"values":[{"index":1,"type":"URL","data":"https://example.org/t"}]}'
    status, answer_headers, text = raw_request(sim, cert_context(sim, tickets=True), "PUT", path, headers, body)
    assert (status, text) == (401, f'{{"responseCode":402,"handle":"{path[len("/api/handles/"):-len("?overwrite=false")]}"}}'.encode())
    assert answer_headers["WWW-Authenticate"].startswith("Handle sessionId=")
    status, _, _ = raw_request(sim, cert_context(sim, tickets=False), "PUT", path, headers, body)
    assert status == 201
    # The project's client offers no ticket in any TLS mode, so its certificate login works.
    assert cert_client(sim).authenticate().body["authenticated"] is True


def test_offers_session_ticket_reads_the_client_hello():
    """The ClientHello parser on real handshakes' first bytes: Python offers extension 35 unless told not to."""
    hellos = []
    for tickets in (True, False):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        if not tickets:
            context.options |= ssl.OP_NO_TICKET
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing)
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        record = outgoing.read()
        hellos.append(record[5:])  # the record header, then the handshake message
    assert [offers_session_ticket(h) for h in hellos] == [True, False]
    assert offers_session_ticket(b"\x01\x00") is False  # truncated: no crash


def test_another_certificate_than_the_admins_is_refused(sim, tmp_path):
    """A certificate whose key is not the HS_PUBKEY does not log in (the simulator refuses it at the
    handshake; the real server at the key comparison)."""
    from datetime import UTC, datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.USER_ID, f"301:{PREFIX}/ADMIN")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(7).not_valid_before(datetime(2000, 1, 1, tzinfo=UTC))
            .not_valid_after(datetime(2100, 1, 1, tzinfo=UTC)).sign(key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    stranger = cert_client(sim, client_cert=str(tmp_path / "c.pem"), client_key=str(tmp_path / "k.pem"))
    with pytest.raises(hs.HandleServerError):
        stranger.authenticate()


def test_session_api_answers_as_the_real_server(sim):
    context = cert_context(sim, tickets=False)
    good = "Basic " + base64.b64encode(f"300%3A{PREFIX}/ADMIN:{SECRET}".encode()).decode()
    wrong = "Basic " + base64.b64encode(f"300%3A{PREFIX}/ADMIN:nope".encode()).decode()
    assert raw_request(sim, context, "GET", "/api/sessions/this", {"Authorization": good})[2] == \
        b'{"authenticated":true,"id":"300:20.500.12345/ADMIN"}'
    assert raw_request(sim, context, "GET", "/api/sessions/this", {})[2] == b'{"authenticated":false}'
    status, headers, body = raw_request(sim, context, "GET", "/api/sessions/this", {"Authorization": wrong})
    assert status == 401 and b'"error":"Identity not verified"' in body
    status, headers, _ = raw_request(sim, context, "GET", "/api/sessions", {})
    assert (status, headers["Allow"]) == (405, "POST, TRACE, OPTIONS")
    assert raw_request(sim, context, "DELETE", "/api/sessions/this", {})[0] == 204


def test_shutdown_fault_answers_authenticated_writes_401_with_an_empty_body(sim, unique_suffix):
    """The real server's last seconds after SIGTERM: right credentials refused, with the exception it met
    verifying them named in the challenge; anonymous reads still answered."""
    secret_client = HandleServerClient(ServerConfig(base_url=sim.base_url, auth_identity=sim.admin_identity,
                                                    secret=SECRET, pinned_certificate=sim.cert_path.read_text()))
    sim.set_fault("shutdown")
    handle = f"{PREFIX}/{unique_suffix('shut')}"
    with pytest.raises(hs.AuthenticationFailed) as refused:
        secret_client.create_handle(handle, URL_RECORD)
    assert (refused.value.status, refused.value.body) == (401, "")
    with pytest.raises(hs.AuthenticationFailed):
        secret_client.authenticate()
    context = cert_context(sim, tickets=False)
    good = "Basic " + base64.b64encode(f"300%3A{PREFIX}/ADMIN:{SECRET}".encode()).decode()
    status, headers, body = raw_request(sim, context, "PUT", f"/api/handles/{handle}", {
        "Authorization": good, "Content-Type": "application/json"}, b'{"values":[]}')
    challenges = [v for k, v in _all_headers(sim, context, handle, good) if k == "WWW-Authenticate"]
    assert (status, body) == (401, b"")
    assert challenges[0] == 'Basic realm="handle"'
    assert challenges[1].endswith(f'error="{MSG_SHUTDOWN_VERIFYING}"')
    assert secret_client.get_handle(f"{PREFIX}/ADMIN", indexes=[1]).status == 200  # anonymous read
    sim.clear_faults()
    assert secret_client.authenticate().body["authenticated"] is True
    with pytest.raises(hs.HandleNotFound):
        secret_client.get_handle(handle)  # nothing was written during the window


def _all_headers(sim, context, handle, authorization):
    conn = http.client.HTTPSConnection("127.0.0.1", sim.port, context=context, timeout=5)
    try:
        conn.request("PUT", f"/api/handles/{handle}", body=b'{"values":[]}',
                     headers={"Authorization": authorization, "Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.getheaders()
    finally:
        conn.close()


def test_the_simulator_speaks_tls_1_2_only_like_the_real_server(sim):
    context = ssl.create_default_context(cadata=sim.cert_path.read_text())
    context.check_hostname = False
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    with socket.create_connection(("127.0.0.1", sim.port), timeout=5) as raw, pytest.raises(ssl.SSLError):
        context.wrap_socket(raw)
