"""The Handle server client: its error table (bodies recorded from a real 9.3.1 server) and real calls."""

from __future__ import annotations

import base64

import pytest
import requests
import responses

from handles.handle_server import client as hs
from handles.handle_server.client import HandleServerClient, ServerConfig

BASE = "https://hs.example.org:8000"
H = "20.500.12345/rec-001"


def make_client(**kwargs) -> HandleServerClient:
    return HandleServerClient(ServerConfig(base_url=BASE, auth_identity="300:20.500.12345/ADMIN",
                                           secret="s3cret", verify=False, timeout=2, **kwargs))


# (HTTP status, body, expected error class or None for success). Bodies as the real server sends them
# (the recorded exchanges and docs/handle-server.md §6).
ERROR_TABLE = [
    (200, {"responseCode": 1, "handle": H}, None),
    (201, {"responseCode": 1, "handle": H}, None),
    (200, {"responseCode": 200, "values": [], "handle": H}, None),
    (404, {"responseCode": 100, "handle": H}, hs.HandleNotFound),
    (409, {"responseCode": 101, "handle": H}, hs.HandleAlreadyExists),
    (409, {"responseCode": 201, "message": "Index conflict for 2", "handle": H}, hs.InvalidRequest),
    (400, {"responseCode": 4, "message": "java.lang.Exception: Mismatched indexes in PUT request"}, hs.InvalidRequest),
    (400, {"responseCode": 102, "message": "Empty handle invalid"}, hs.InvalidRequest),
    (400, {"responseCode": 202, "message": "Value indexes must be positive", "handle": H}, hs.InvalidRequest),
    (400, {"responseCode": 301, "message": "That prefix doesn't live here", "handle": H}, hs.InvalidRequest),
    (400, {"responseCode": 200, "handle": H}, hs.InvalidRequest),
    (401, {"responseCode": 402, "handle": H}, hs.AuthenticationFailed),
    (403, {"responseCode": 402, "handle": H}, hs.AuthenticationFailed),  # credentials over plain http
    (401, None, hs.AuthenticationFailed),  # wrong secret: empty body
    (403, {"responseCode": 400, "handle": H}, hs.PermissionDenied),
    (403, {"responseCode": 401, "handle": H}, hs.PermissionDenied),
    (403, {"responseCode": 403, "handle": H}, hs.AuthenticationFailed),
    (403, {"responseCode": 404, "handle": H}, hs.AuthenticationFailed),
    (403, None, hs.PermissionDenied),
    (500, {"responseCode": 2, "message": "Unexpected"}, hs.TransientHandleServerError),
    (503, {"responseCode": 3, "message": "Server too busy"}, hs.TransientHandleServerError),
    (503, {"responseCode": 7}, hs.TransientHandleServerError),
    (503, None, hs.TransientHandleServerError),
    (502, None, hs.TransientHandleServerError),
    (501, {"responseCode": 5}, hs.InvalidRequest),
    (404, None, hs.HandleNotFound),
    (404, {"responseCode": 4, "message": "Unknown HTTP API endpoint GET /api/nothing"}, hs.InvalidRequest),
    (302, None, hs.InvalidRequest),  # redirects are never followed
    (200, None, hs.InvalidRequest),  # a 2xx that is not a Handle answer
]


@pytest.mark.parametrize(("status", "body", "expected"), ERROR_TABLE)
def test_classify_by_response_code_then_status(status, body, expected):
    assert hs.classify(status, body) is expected


@pytest.mark.parametrize(("status", "body", "expected"), [row for row in ERROR_TABLE if row[2] is not None])
@responses.activate
def test_client_raises_the_typed_error(status, body, expected):
    responses.put(f"{BASE}/api/handles/20.500.12345/rec-001", status=status, json=body if body is not None else None,
                  body=b"" if body is None else None, headers={"Location": "https://elsewhere"} if status == 302 else {})
    with pytest.raises(expected) as caught:
        make_client().update_values(H, [{"index": 1, "type": "URL", "data": {"format": "string", "value": "https://x.org"}}])
    assert caught.value.status == status
    assert caught.value.transient is (expected is hs.TransientHandleServerError)
    assert "PUT" in caught.value.exchange and str(status) in caught.value.exchange


@responses.activate
def test_timeouts_and_connection_errors_are_transient():
    responses.get(f"{BASE}/api/handles/20.500.12345/a", body=requests.ConnectTimeout("slow"))
    responses.get(f"{BASE}/api/handles/20.500.12345/b", body=requests.ConnectionError("refused"))
    with pytest.raises(hs.TransientHandleServerError, match="Timed out"):
        make_client().get_handle("20.500.12345/a")
    with pytest.raises(hs.TransientHandleServerError, match="Could not reach"):
        make_client().get_handle("20.500.12345/b")


@responses.activate
def test_requests_carry_encoding_auth_content_type_and_no_redirects():
    responses.put(f"{BASE}/api/handles/20.500.12345/a%2F..%2Fb%20c%2Bd", json={"responseCode": 1, "handle": "x"},
                  status=201)
    make_client().create_handle("20.500.12345/a/../b c+d", [{"index": 1, "type": "URL", "data": "https://x.org"}])
    sent = responses.calls[0].request
    assert sent.url.endswith("/api/handles/20.500.12345/a%2F..%2Fb%20c%2Bd?overwrite=false")
    assert sent.headers["Content-Type"].startswith("application/json")
    user, _, password = base64.b64decode(sent.headers["Authorization"].split()[1]).decode().partition(":")
    assert (user, password) == ("300%3A20.500.12345/ADMIN", "s3cret")


@responses.activate
def test_update_sends_index_query_matching_the_body():
    responses.put(f"{BASE}/api/handles/20.500.12345/rec-001", json={"responseCode": 1, "handle": H}, status=200)
    make_client().update_values(H, [{"index": 1, "type": "URL", "data": {"format": "string", "value": "https://n.org"}}])
    assert responses.calls[0].request.url.endswith("?index=1")


@responses.activate
def test_reads_are_anonymous_and_listing_is_authenticated():
    responses.get(f"{BASE}/api/handles/20.500.12345/rec-001", json={"responseCode": 1, "handle": H, "values": []})
    responses.get(f"{BASE}/api/handles", json={"responseCode": 1, "totalCount": "3", "handles": []})
    client = make_client()
    client.get_handle(H)
    assert "Authorization" not in responses.calls[0].request.headers
    assert client.count_handles("20.500.12345") == 3  # totalCount arrives as a string
    assert responses.calls[1].request.headers["Authorization"].startswith("Basic ")


def test_secret_is_not_in_the_config_repr():
    assert "s3cret" not in repr(make_client().config)


def test_url_of_takes_the_lowest_index_url():
    body = {"values": [{"index": 5, "type": "URL", "data": {"format": "string", "value": "https://b"}},
                       {"index": 1, "type": "URL", "data": "https://a"}]}
    assert hs.url_of(body) == "https://a"
    assert hs.url_of({"values": []}) is None


# --- Against the simulator, over real HTTPS -------------------------------------------------------------
@pytest.fixture
def live(handle_server):
    handle_server.clear_faults()
    return HandleServerClient(ServerConfig(
        base_url=handle_server.base_url, auth_identity="300:20.500.12345/ADMIN", secret="test-secret-key-123",
        pinned_certificate=handle_server.cert_path.read_text(), timeout=3))


def _url_record(url):
    return [{"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
        "handle": "20.500.12345/ADMIN", "index": 300, "permissions": "111111111111"}}},
        {"index": 1, "type": "URL", "data": {"format": "string", "value": url}}]


def test_live_lifecycle_with_a_slash_in_the_suffix(live, unique_suffix):
    handle = f"20.500.12345/{unique_suffix('dir')}/sub"
    assert live.create_handle(handle, _url_record("https://example.org/1")).status == 201
    with pytest.raises(hs.HandleAlreadyExists):
        live.create_handle(handle.upper(), _url_record("https://example.org/other"))
    live.update_values(handle, [{"index": 1, "type": "URL", "data": {"format": "string", "value": "https://example.org/2"}}])
    assert live.get_url(handle)[0] == "https://example.org/2"
    assert handle.upper() in {h for h in live.iter_handles("20.500.12345", page_size=3)}
    live.delete_handle(handle)
    with pytest.raises(hs.HandleNotFound):
        live.get_handle(handle)
    with pytest.raises(hs.HandleNotFound):
        live.update_values(handle, [{"index": 1, "type": "URL", "data": "https://example.org/3"}])


def test_live_wrong_secret_and_wrong_pin(handle_server, live):
    wrong = HandleServerClient(ServerConfig(base_url=handle_server.base_url, auth_identity="300:20.500.12345/ADMIN",
                                            secret="nope", pinned_certificate=live.config.pinned_certificate))
    with pytest.raises(hs.AuthenticationFailed):
        wrong.count_handles("20.500.12345")
    system_cas = HandleServerClient(ServerConfig(base_url=handle_server.base_url, verify=True))
    with pytest.raises(hs.InvalidRequest, match="TLS"):
        system_cas.get_handle("20.500.12345/ADMIN")


@pytest.mark.parametrize("verify, pinned", [(True, False), (True, True), (False, False)])
def test_every_tls_mode_offers_no_session_ticket(handle_server, verify, pinned):
    """The real server asks for a client certificate by renegotiating; a client holding a session ticket
    resumes instead and sends none (401 / responseCode 402). Every mode's context refuses tickets."""
    pem = handle_server.cert_path.read_text() if pinned else ""
    context = hs.tls_context(verify=verify, pinned_pem=pem)
    assert context.options & hs.ssl.OP_NO_TICKET
    assert context.check_hostname is (verify and not pinned)
    assert context.verify_mode == (hs.ssl.CERT_REQUIRED if verify else hs.ssl.CERT_NONE)


def test_a_pin_trusts_the_pinned_certificate_only(handle_server, tmp_path):
    """requests loads its CA bundle into a verifying context; the pinned context must not take it: another
    certificate than the pinned one is refused, although hostname checks are off."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "anonymous")])
    import datetime as dt
    other = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
             .serial_number(1).not_valid_before(dt.datetime(2000, 1, 1)).not_valid_after(dt.datetime(2100, 1, 1))
             .sign(key, hashes.SHA256())).public_bytes(serialization.Encoding.PEM).decode()
    pinned_elsewhere = HandleServerClient(ServerConfig(base_url=handle_server.base_url, pinned_certificate=other))
    with pytest.raises(hs.InvalidRequest, match="TLS"):
        pinned_elsewhere.get_handle("20.500.12345/ADMIN")


def test_authenticate_writes_nothing_and_tells_good_from_wrong_credentials(handle_server, live):
    before = live.count_handles("20.500.12345")
    assert live.authenticate().body == {"authenticated": True, "id": "300:20.500.12345/ADMIN"}
    wrong = HandleServerClient(ServerConfig(base_url=handle_server.base_url, auth_identity="300:20.500.12345/ADMIN",
                                            secret="nope", pinned_certificate=live.config.pinned_certificate))
    with pytest.raises(hs.AuthenticationFailed):
        wrong.authenticate()
    assert live.count_handles("20.500.12345") == before


@pytest.mark.parametrize("login", ["secret key", "client certificate"])
def test_live_error_table_as_on_the_real_server(handle_server, login):
    """The same cases as the real-server tier's error table (tests/handle_server/error_table.py)."""
    from tests.handle_server.error_table import check_error_table

    handle_server.clear_faults()
    cert = login == "client certificate"
    config = ServerConfig(
        base_url=handle_server.base_url, pinned_certificate=handle_server.cert_path.read_text(), timeout=3,
        auth_identity=handle_server.client_identity if cert else handle_server.admin_identity,
        secret="" if cert else handle_server.secret, client_cert=str(handle_server.client_cert_path) if cert else "",
        client_key=str(handle_server.client_key_path) if cert else "")
    check_error_table(HandleServerClient(config), "20.500.12345")


def test_a_connection_closed_during_the_tls_handshake_is_transient(monkeypatch):
    """A server going away may accept a connection and close it mid-handshake (SSLEOFError): an outage to
    retry, unlike a certificate that fails the pin."""
    client = make_client()
    closed = requests.exceptions.SSLError(hs.ssl.SSLEOFError(8, "EOF occurred in violation of protocol"))
    refused = requests.exceptions.SSLError(hs.ssl.SSLCertVerificationError(1, "certificate verify failed"))
    for error, expected in ((closed, hs.TransientHandleServerError), (refused, hs.InvalidRequest)):
        monkeypatch.setattr(client._session, "request", lambda *a, error=error, **k: (_ for _ in ()).throw(error))
        with pytest.raises(expected):
            client.get_handle(H)
