"""The Handle server simulator beyond the recordings: transport, auth, case, paging, write semantics,
persistence, faults, concurrency and bulk loading. Every test talks to a real simulator process."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from urllib.parse import quote

import pytest
from cryptography import x509
from django.core.management import CommandError, call_command

from handles.simulator.cli import SECRET_ENV
from handles.simulator.datadir import DB_FILE, KEY_FILE
from handles.simulator.store import HandleStore, bulk_load, initialize, load_csv
from handles.simulator.values import ascii_upper
from tests.simulator_process import PROJECT_ROOT, SimulatorProcess, free_port

PREFIX = "20.500.12345"
OTHER = "20.500.777"  # a second prefix, for handles this module's tests create
PAGED = "20.500.888"  # only the paging test writes here, so its listing is exact
SECRET = "test-secret-key-123"
ADMIN_VALUE = {"index": 100, "type": "HS_ADMIN",
               "data": {"format": "admin", "value": {"handle": f"{PREFIX}/ADMIN", "index": 300,
                                                     "permissions": "111111111111"}}}


def url_value(url: str, index: int = 1) -> dict:
    return {"index": index, "type": "URL", "data": {"format": "string", "value": url}}


def record(url: str) -> list[dict]:
    return [ADMIN_VALUE, url_value(url)]


def fresh(stem: str = "t", prefix: str = OTHER) -> str:
    return f"{prefix}/{stem}-{uuid.uuid4().hex[:8]}"


def api(handle: str) -> str:
    """Percent-encode prefix and suffix separately, `/` in the suffix included (docs/handle-server.md §2)."""
    prefix, _, suffix = handle.partition("/")
    return f"/api/handles/{quote(prefix, safe='')}/{quote(suffix, safe='')}"


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    with SimulatorProcess(tmp_path_factory.mktemp("sim"), prefixes=[PREFIX, OTHER, PAGED], secret=SECRET) as sim:
        yield sim


@pytest.fixture
def https(sim):
    client = sim.client(https=True)
    yield client
    client.close()


@pytest.fixture
def plain(sim):
    client = sim.client(https=False)
    yield client
    client.close()


def create(client, handle: str, values=None, **query) -> None:
    reply = client.request("PUT", api(handle), query={"overwrite": "false", **query}, auth=True,
                           body=values if values is not None else record("https://example.org/x"))
    assert (reply.status, reply.json) == (201, {"responseCode": 1, "handle": handle}), reply.body


def resolve(client, handle: str, **query):
    reply = client.request("GET", api(handle), query=query)
    return reply.status, reply.json


# --- Transport and credentials -------------------------------------------------------------------------
def test_one_port_serves_http_and_https_with_a_self_signed_anonymous_certificate(sim, https, plain):
    cert = x509.load_pem_x509_certificate(sim.cert_path.read_bytes())
    assert cert.subject.rfc4514_string() == cert.issuer.rfc4514_string() == "CN=anonymous"
    assert len(cert.extensions) == 0  # no SAN: clients pin it and skip the hostname check
    assert cert.not_valid_before_utc == datetime(2000, 1, 1, tzinfo=UTC)
    assert cert.not_valid_after_utc.year == 9999
    assert (sim.data_dir / KEY_FILE).stat().st_mode & 0o077 == 0

    over_tls, cleartext = https.request("GET", api(f"{PREFIX}/ADMIN")), plain.request("GET", api(f"{PREFIX}/ADMIN"))
    assert over_tls.status == cleartext.status == 200
    assert over_tls.json == cleartext.json
    assert over_tls.content_type == "application/json;charset=utf-8"
    served = ssl.get_server_certificate(("127.0.0.1", sim.port))
    assert x509.load_pem_x509_certificate(served.encode()) == cert
    with pytest.raises(ssl.SSLCertVerificationError):  # not trusted without pinning
        with socket.create_connection(("127.0.0.1", sim.port)) as raw:
            ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")


def test_initial_admin_handle_holds_the_secret_unreadable_without_credentials(sim, https, plain):
    anonymous = https.request("GET", api(f"{PREFIX}/ADMIN")).json
    assert [(v["index"], v["type"]) for v in anonymous["values"]] == [(100, "HS_ADMIN"), (1, "DESC"), (301, "HS_PUBKEY")]
    assert anonymous["values"][1]["data"] == {"format": "string", "value": f"Admin handle for prefix {PREFIX}"}
    key = anonymous["values"][2]["data"]
    assert key["format"] == "key" and key["value"]["kty"] == "RSA" and key["value"]["e"] == "AQAB"

    admin = https.request("GET", api(f"{PREFIX}/ADMIN"), auth=True).json["values"]
    assert {"index": 300, "type": "HS_SECKEY", "data": {"format": "string", "value": SECRET},
            "permissions": "1100", "ttl": 86400, "timestamp": admin[2]["timestamp"]} == admin[2]
    # Over plain HTTP the credentials are ignored, so the secret stays hidden...
    assert 300 not in [v["index"] for v in plain.request("GET", api(f"{PREFIX}/ADMIN"), auth=True).json["values"]]
    # ...and asking for restricted values anonymously needs authentication.
    needs_auth = https.request("GET", api(f"{PREFIX}/ADMIN"), query={"publicOnly": "false"})
    assert (needs_auth.status, needs_auth.json) == (401, {"responseCode": 402, "handle": f"{PREFIX}/ADMIN"})


def test_credentials_count_over_https_only(sim, https, plain):
    handle = fresh("auth")
    over_http = plain.request("PUT", api(handle), query={"overwrite": "false"}, auth=True, body=record("https://a.example"))
    assert (over_http.status, over_http.json) == (403, {"responseCode": 402, "handle": handle})
    assert over_http.headers.get_all("WWW-Authenticate") is None
    wrong_over_http = plain.request("PUT", api(handle), auth=sim.basic_auth(secret="wrong"), body=record("https://a.example"))
    assert wrong_over_http.status == 403  # ignored, not checked: no 401 over plain HTTP
    assert plain.request("GET", "/api/handles", query={"prefix": OTHER}, auth=True).status == 403

    wrong = https.request("PUT", api(handle), auth=sim.basic_auth(secret="wrong"), body=record("https://a.example"))
    assert (wrong.status, wrong.body, wrong.content_type) == (401, b"", None)
    assert wrong.headers.get_all("WWW-Authenticate")[0] == 'Basic realm="handle"'
    assert wrong.headers.get_all("WWW-Authenticate")[1].endswith(', error="Identity not verified"')
    # An unencoded colon makes the server read the identity as handle "300" (docs/handle-server.md §7).
    raw_colon = "Basic " + base64.b64encode(f"300:{PREFIX}/ADMIN:{SECRET}".encode()).decode()
    assert https.request("GET", "/api/handles", query={"prefix": OTHER}, auth=raw_colon).status == 401
    not_basic = https.request("GET", "/api/handles", query={"prefix": OTHER}, auth='Handle sessionId="x"')
    assert not_basic.status == 401
    assert not_basic.headers.get_all("WWW-Authenticate")[0].startswith("Handle sessionId=")

    create(https, handle)
    any_index = sim.basic_auth(identity=f"0:{PREFIX}/ADMIN")  # index 0 = any HS_SECKEY of the handle (docs/handle-server.md §7)
    assert https.request("GET", "/api/handles", query={"prefix": OTHER, "pageSize": 0, "page": 0},
                         auth=any_index).status == 200


# --- Handles: case, paging, writes, reads --------------------------------------------------------------
def test_handles_are_ascii_case_insensitive_and_listed_upper_cased(https):
    handle = fresh("Mixed-été")
    create(https, handle)
    shouted = handle.replace("Mixed", "MIXED")
    assert resolve(https, shouted) == (200, {**resolve(https, handle)[1], "handle": shouted})
    assert resolve(https, handle.replace("été", "ÉTÉ"))[0] == 404  # é is not folded to É
    again = https.request("PUT", api(shouted.lower()), query={"overwrite": "false"}, auth=True,
                          body=record("https://example.org/other"))
    assert (again.status, again.json["responseCode"]) == (409, 101)
    listed = https.request("GET", "/api/handles", query={"prefix": OTHER}, auth=True).json["handles"]
    assert ascii_upper(handle) in listed and handle not in listed
    assert https.request("DELETE", api(shouted), auth=True).json == {"responseCode": 1, "handle": shouted}
    assert resolve(https, handle)[0] == 404


def test_listing_pages_follow_the_upper_cased_key_byte_order(https):
    suffixes = ["b", "A", "a/b", "Zeta", "émile", "Émile", "a b"]
    for suffix in suffixes:
        create(https, f"{PAGED}/{suffix}")
    everything = sorted([ascii_upper(f"{PAGED}/{s}") for s in [*suffixes, "ADMIN"]],
                        key=lambda h: h.encode())
    assert everything[:3] == [f"{PAGED}/A", f"{PAGED}/A B", f"{PAGED}/A/B"]

    def listing(**query):
        reply = https.request("GET", "/api/handles", query={"prefix": PAGED, **query}, auth=True)
        assert reply.status == 200, reply.body
        return reply.json

    assert listing() == {"responseCode": 1, "prefix": PAGED, "totalCount": "8", "handles": everything}
    pages = [listing(page=n, pageSize=3) for n in range(3)]
    assert [p["handles"] for p in pages] == [everything[0:3], everything[3:6], everything[6:8]]
    assert pages[1] == {"responseCode": 1, "prefix": PAGED, "totalCount": "8", "page": 1, "pageSize": 3,
                        "handles": everything[3:6]}
    assert listing(page=9, pageSize=3)["handles"] == []
    assert listing(page=0, pageSize=0) == {"responseCode": 1, "prefix": PAGED, "totalCount": "8", "page": 0,
                                           "pageSize": 0, "handles": []}
    assert "page" not in listing(pageSize=3) and len(listing(pageSize=3)["handles"]) == 8  # needs both
    assert listing(page=-1, pageSize=3)["handles"] == everything
    assert listing(prefix=f"0.na/{PAGED}")["totalCount"] == "8"
    bad = https.request("GET", "/api/handles", query={"prefix": PAGED, "page": "one", "pageSize": 2}, auth=True)
    assert (bad.status, bad.json["responseCode"]) == (400, 4)


def test_whole_record_put_is_an_upsert_and_index_put_merges(https):
    handle = fresh("upsert")
    first = https.request("PUT", api(handle), auth=True, body=[*record("https://v1.example"),
                                                              {"index": 2, "type": "EMAIL", "data": "a@example.org"}])
    assert first.status == 201
    stamp = resolve(https, handle)[1]["values"][0]["timestamp"]
    replaced = https.request("PUT", api(handle), auth=True, body=record("https://v2.example"))
    assert replaced.status == 200
    values = resolve(https, handle)[1]["values"]
    assert [v["index"] for v in values] == [100, 1]  # index 2 is gone: the whole record was replaced
    assert values[0]["timestamp"] == stamp  # unchanged values keep their timestamp

    added = https.request("PUT", api(handle), query={"index": [5, 3]}, auth=True,
                          body={"values": [{"index": 5, "type": "DESC", "data": "five"},
                                           {"index": 3, "type": "DESC", "data": "three"}], "handle": handle.upper()})
    assert added.status == 201
    assert [v["index"] for v in resolve(https, handle)[1]["values"]] == [1, 3, 5, 100]  # merged in index order
    various = https.request("PUT", api(handle), query={"index": "various"}, auth=True,
                            body=[url_value("https://v3.example"), {"index": 7, "type": "DESC", "data": "7"}])
    assert various.status == 200  # index 1 existed
    assert resolve(https, handle, index=1)[1]["values"][0]["data"]["value"] == "https://v3.example"
    conflict = https.request("PUT", api(handle), query={"index": 3, "overwrite": "FALSE"}, auth=True,
                             body=[{"index": 3, "type": "DESC", "data": "x"}])
    assert (conflict.status, conflict.json["message"]) == (409, "Index conflict for 3")
    duplicate = https.request("PUT", api(fresh()), auth=True, body=[url_value("a"), url_value("b")])
    assert (duplicate.status, duplicate.json["responseCode"], duplicate.json["message"]) == (409, 201, "Index conflict for 1")
    empty = https.request("PUT", api(handle), query={"index": "various"}, auth=True, body=[])
    assert (empty.status, empty.json["responseCode"]) == (400, 202)
    missing_index = https.request("DELETE", api(handle), query={"index": [3, 42]}, auth=True)
    assert (missing_index.status, missing_index.json["responseCode"]) == (400, 200)
    assert https.request("DELETE", api(handle), query={"index": [3, 5]}, auth=True).status == 200
    assert [v["index"] for v in resolve(https, handle)[1]["values"]] == [1, 7, 100]


def test_values_are_normalised_on_output(https):
    handle = fresh("formats")
    create(https, handle, [
        {"index": "100", "type": "HS_ADMIN", "data": {"format": "admin",
                                                      "value": {"handle": f"{PREFIX}/ADMIN", "index": "300", "permissions": "*"}}},
        {"index": 1, "type": "URL", "data": "https://plain.example", "timestamp": "1999-01-01T00:00:00Z"},
        {"index": 2, "type": "HEX", "data": {"format": "hex", "value": "68656c6c6f"}},
        {"index": 3, "type": "BLOB", "data": {"format": "base64", "value": base64.b64encode(b"\x00\xff").decode()}},
        {"index": 4, "type": "TEXT64", "data": {"format": "base64", "value": base64.b64encode("ça".encode()).decode()},
         "permissions": "1110", "ttl": 60},
        {"index": 5, "type": "PRIVATE", "data": "p", "permissions": "1100", "ttl": "2030-01-02T03:04:05Z",
         "references": [{"handle": f"{PREFIX}/ADMIN", "index": 300}]},
        {"index": 6, "type": "HS_VLIST", "data": {"format": "vlist", "value": [{"handle": f"{PREFIX}/ADMIN", "index": 300}]}},
    ])
    values = {v["index"]: v for v in https.request("GET", api(handle), auth=True).json["values"]}
    assert values[100]["data"]["value"] == {"handle": f"{PREFIX}/ADMIN", "index": 300, "permissions": "111111111111"}
    assert values[1]["data"] == {"format": "string", "value": "https://plain.example"}
    assert values[1]["timestamp"] != "1999-01-01T00:00:00Z"  # set by the server
    assert list(values[1]) == ["index", "type", "data", "ttl", "timestamp"]
    assert values[2]["data"] == {"format": "string", "value": "hello"}
    assert values[3]["data"] == {"format": "base64", "value": "AP8="}
    assert values[4]["data"] == {"format": "string", "value": "ça"} and values[4]["ttl"] == 60
    assert "permissions" not in values[4]
    assert {k: values[5][k] for k in ("permissions", "ttl", "references")} == {
        "permissions": "1100", "ttl": "2030-01-02T03:04:05Z", "references": [{"handle": f"{PREFIX}/ADMIN", "index": 300}]}
    assert values[6]["data"] == {"format": "vlist", "value": [{"handle": f"{PREFIX}/ADMIN", "index": 300}]}
    assert 5 not in [v["index"] for v in resolve(https, handle)[1]["values"]]  # not public

    bad = https.request("PUT", api(fresh()), auth=True, body=[{"index": 1, "type": "URL", "data": {"format": "nope", "value": 1}}])
    assert (bad.status, bad.json["responseCode"]) == (400, 4)


def test_resolution_filters_combine_as_or_and_match_subtypes(https):
    handle = fresh("filters")
    create(https, handle, [*record("https://main.example"), {"index": 2, "type": "URL.mirror", "data": "https://m.example"},
                           {"index": 3, "type": "EMAIL", "data": "x@example.org"}])

    def indexes(query):
        return [v["index"] for v in https.request("GET", api(handle), query=query).json["values"]]

    assert indexes([("type", "URL")]) == [1]
    assert indexes([("type", "url."), ("index", 3)]) == [2, 3]
    assert indexes([("index", 100), ("type", "EMAIL")]) == [100, 3]
    nothing = https.request("GET", api(handle), query={"index": 9})
    assert (nothing.status, nothing.json) == (200, {"responseCode": 200, "values": [], "handle": handle})
    bad = https.request("GET", api(handle), query={"index": "x"})
    assert (bad.status, bad.json) == (400, {"responseCode": 4, "message": 'java.lang.NumberFormatException: For input string: "x"'})


def test_mint_new_suffix_appends_a_uuid_to_the_path(https):
    reply = https.request("PUT", f"/api/handles/{OTHER}/stem-", query={"mintNewSuffix": "true"}, auth=True,
                          body=record("https://minted.example"))
    assert reply.status == 201
    minted = reply.json["handle"]
    assert minted.startswith(f"{OTHER}/stem-") and uuid.UUID(minted.removeprefix(f"{OTHER}/stem-")).version == 4
    assert resolve(https, minted)[0] == 200


def test_proxy_resolver_redirects_to_the_lowest_url(https, plain):
    handle = fresh("proxy")
    create(https, handle, [ADMIN_VALUE, url_value("https://second.example", 7), url_value("https://first.example/ü", 2)])
    path = "/" + handle
    redirect = plain.request("GET", path)
    assert (redirect.status, redirect.headers["Location"]) == (302, "https://first.example/%C3%BC")
    page = https.request("GET", path, query="noredirect")
    assert page.status == 200 and page.content_type == "text/html;charset=utf-8" and b"second.example" in page.body
    assert plain.request("GET", f"/{OTHER}/no-such-handle").status == 404
    assert plain.request("GET", "/20.500.99999/x").status == 400


def test_http_protocol_details(sim, https):
    assert https.request("PATCH", api(f"{PREFIX}/ADMIN")).json == {"responseCode": 4, "message": "Unknown method PATCH"}
    head = https.request("HEAD", api(f"{PREFIX}/ADMIN"))
    assert head.status == 200 and head.body == b"" and int(head.headers["Content-Length"]) > 100
    options = https.request("OPTIONS", "/api/handles")
    assert options.headers["Allow"] == "GET, HEAD, POST, PUT, DELETE, TRACE, OPTIONS"
    sessions = https.request("POST", "/api/sessions", auth=True)
    assert (sessions.status, sessions.json["authenticated"], sessions.json["id"]) == (201, True, f"300:{PREFIX}/ADMIN")
    assert https.request("GET", "/api/sessions").status == 405
    posted = https.request("POST", api(f"{PREFIX}/ADMIN"), body={"index": [1]})
    assert [v["index"] for v in posted.json["values"]] == [1]  # POST = GET with parameters in the body

    handle = fresh("charset")
    utf8 = https.request("PUT", api(handle), auth=True, body=b'[{"index":1,"type":"URL","data":"https://c.example"}]',
                         headers={"Content-Type": "application/json; charset=UTF-8"})
    assert utf8.status == 201
    text = https.request("PUT", api(handle), auth=True, body=b"[]", headers={"Content-Type": "text/plain"})
    assert text.json["message"] == "java.lang.Exception: Unsupported media type text/plain"

    conn = http.client.HTTPSConnection("127.0.0.1", sim.port, context=sim.tls_context())
    conn.putrequest("PUT", api(fresh("chunked")) + "?overwrite=false")
    for name, value in {"Authorization": sim.basic_auth(), "Content-Type": "application/json",
                        "Transfer-Encoding": "chunked"}.items():
        conn.putheader(name, value)
    conn.endheaders()
    for part in (b'[{"index":1,"type":"URL",', b'"data":"https://chunked.example"}]'):
        conn.send(b"%x\r\n%s\r\n" % (len(part), part))
    conn.send(b"0\r\n\r\n")
    chunked = conn.getresponse()
    assert (chunked.status, json.loads(chunked.read())["responseCode"]) == (201, 1)
    first_socket = conn.sock
    conn.request("GET", api(f"{PREFIX}/ADMIN"))
    assert conn.getresponse().read() and conn.sock is first_socket  # the connection was kept alive
    conn.close()


def test_malformed_traffic_is_answered_or_dropped_without_disturbing_the_server(sim, https):
    def exchange(payload: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", sim.port), timeout=5) as raw:
            raw.sendall(payload)
            return raw.recv(200)

    assert exchange(b"\x16\x03\x01\x00\x05hello").startswith(b"\x15")  # a TLS alert: bad ClientHello
    assert exchange(b"GET /a b c HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert exchange(b"PUT / HTTP/1.1\r\nContent-Length: many\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert exchange(b"PATCH /x/y HTTP/1.1\r\nContent-Length: 0\r\n\r\n").startswith(b"HTTP/1.1 501")
    assert https.request("GET", api(f"{PREFIX}/ADMIN")).status == 200
    assert "Traceback" not in sim.log_path.read_text()


# --- Persistence, process, management commands ---------------------------------------------------------
def test_data_and_certificate_survive_a_restart_and_the_secret_follows_the_command_line(tmp_path):
    with SimulatorProcess(tmp_path, prefixes=[PREFIX], secret="first-secret") as sim:
        client = sim.client()
        create(client, f"{PREFIX}/kept", record("https://kept.example"))
        certificate = sim.cert_path.read_bytes()
        port = sim.port
        sim.secret = "second-secret"
        sim.prefixes = [OTHER]
        sim.restart()
        client = sim.client()
        assert sim.port == port and sim.cert_path.read_bytes() == certificate
        assert resolve(client, f"{PREFIX}/kept")[1]["values"][1]["data"]["value"] == "https://kept.example"
        assert client.request("GET", "/api/prefixes", auth=True).json["prefixes"] == [f"0.NA/{PREFIX}", f"0.NA/{OTHER}"]
        assert client.request("GET", "/api/prefixes", auth=sim.basic_auth(secret="first-secret")).status == 401
        client.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    assert sim.log_path.read_text().count("Handle simulator stopped") == 2  # both stops were clean (SIGTERM)


def test_the_simulator_refuses_to_start_without_a_secret_or_a_prefix(tmp_path, monkeypatch):
    env = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
    no_secret = subprocess.run([sys.executable, "-m", "handles.simulator", "--data-dir", str(tmp_path),
                                "--prefix", PREFIX], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert no_secret.returncode == 2 and SECRET_ENV in no_secret.stderr
    with pytest.raises(RuntimeError, match="no prefix to serve"):
        SimulatorProcess(tmp_path / "empty", prefixes=[]).start()
    monkeypatch.delenv(SECRET_ENV, raising=False)
    with pytest.raises(CommandError, match="Refusing to start"):
        call_command("handle_simulator", "--prefix", PREFIX, "--data-dir", str(tmp_path))


def test_simulator_module_imports_no_django():
    probe = "import sys, handles.simulator.cli; print('django' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == "False", result.stderr


def test_manage_py_handle_simulator_runs_in_the_foreground_and_stops_on_ctrl_c(tmp_path):
    port = free_port()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", SECRET_ENV: SECRET}
    # A child inherits an ignored SIGINT, and this test process may have it ignored (a test before it on the
    # same pytest worker can leave it so): start the command with Ctrl-C as a terminal gives it.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen([sys.executable, "-m", "django", "handle_simulator", "--port", str(port),
                                    "--data-dir", str(tmp_path), "--prefix", PREFIX], cwd=PROJECT_ROOT, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        lines = iter(process.stdout.readline, "")
        assert any(f"listening on 127.0.0.1:{port}" in line for line in lines)
        sim = SimulatorProcess(tmp_path, port=port)
        assert sim.client().request("GET", "/api/prefixes", auth=True).json["prefixes"] == [f"0.NA/{PREFIX}"]
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)  # a busy machine may take a while
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    assert "Handle simulator stopped" in output and "Traceback" not in output


# --- Faults ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    with SimulatorProcess(tmp_path_factory.mktemp("faulty"), prefixes=[PREFIX], secret=SECRET) as sim:
        yield sim


@pytest.fixture
def ok(faulty):
    faulty.clear_faults()
    client = faulty.client()
    yield client
    client.close()
    faulty.clear_faults()


def test_slow_and_503_faults(faulty, ok):
    faulty.set_fault("slow", delay=0.4)
    started = time.monotonic()
    assert ok.request("GET", api(f"{PREFIX}/ADMIN")).status == 200
    assert time.monotonic() - started >= 0.4
    faulty.set_fault("503")
    busy = ok.request("GET", api(f"{PREFIX}/ADMIN"))
    assert (busy.status, busy.json, busy.content_type) == (
        503, {"responseCode": 3, "message": "Server too busy"}, "application/json;charset=utf-8")
    faulty.clear_faults()
    assert ok.request("GET", api(f"{PREFIX}/ADMIN")).status == 200


def test_drop_and_down_faults_break_the_connection(faulty, ok):
    assert ok.request("GET", api(f"{PREFIX}/ADMIN")).status == 200  # a kept-alive connection exists
    faulty.set_fault("drop")
    with pytest.raises((http.client.HTTPException, OSError)):
        ok.request("GET", api(f"{PREFIX}/ADMIN"))
    faulty.set_fault("down")
    with pytest.raises((http.client.HTTPException, OSError)):
        ok.request("GET", api(f"{PREFIX}/ADMIN"))  # a new connection, closed before any byte is read
    with pytest.raises((http.client.HTTPException, OSError)):
        faulty.client(https=False).request("GET", api(f"{PREFIX}/ADMIN"))
    faulty.clear_faults()
    assert ok.request("GET", api(f"{PREFIX}/ADMIN")).status == 200


def test_nolist_fault_refuses_listing_as_allow_list_hdls_no_does(faulty, ok):
    # As the real server with "allow_list_hdls" = "no": 501 / rc 5 before the homed check and authentication.
    faulty.set_fault("nolist")
    expected = {"responseCode": 5, "message": "This server does not support the list handles operation."}
    for prefix, auth in ((PREFIX, True), (PREFIX, False), ("20.500.99999", True)):
        refused = ok.request("GET", "/api/handles", query={"prefix": prefix}, auth=auth)
        assert (refused.status, refused.json) == (501, {**expected, "handle": prefix})
    assert ok.request("GET", api(f"{PREFIX}/ADMIN")).status == 200  # resolution is not affected
    faulty.clear_faults()
    assert ok.request("GET", "/api/handles", query={"prefix": PREFIX}, auth=True).status == 200


def test_a_fault_with_a_duration_ends_by_itself(faulty, ok):
    faulty.set_fault("503", duration=1.0)
    assert ok.request("GET", api(f"{PREFIX}/ADMIN")).status == 503
    time.sleep(1.1)
    assert ok.request("GET", api(f"{PREFIX}/ADMIN")).status == 200


def test_fault_command_switches_a_running_simulator(faulty, ok):
    call_command("handle_simulator_fault", "503", "--data-dir", str(faulty.data_dir), "--for", "30")
    assert ok.request("GET", api(f"{PREFIX}/ADMIN")).status == 503
    call_command("handle_simulator_fault", "ok", "--data-dir", str(faulty.data_dir))
    assert ok.request("GET", api(f"{PREFIX}/ADMIN")).status == 200
    with pytest.raises(CommandError, match="needs a delay"):
        call_command("handle_simulator_fault", "slow", "--data-dir", str(faulty.data_dir))


# --- Load -----------------------------------------------------------------------------------------------
def test_concurrent_clients_over_keep_alive_connections(sim):
    stem = f"{OTHER}/conc-{uuid.uuid4().hex[:6]}"
    failures: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        client = sim.client(https=n % 2 == 0)  # half plain HTTP (reads only), half HTTPS
        writer = sim.client() if n % 2 else client
        for i in range(25):
            handle = f"{stem}-{n}-{i}"
            steps = [writer.request("PUT", api(handle), query={"overwrite": "false"}, auth=True,
                                    body=record(f"https://c.example/{n}/{i}")).status,
                     writer.request("PUT", api(handle), query={"index": 1}, auth=True,
                                    body=[url_value(f"https://c.example/{n}/{i}/v2")]).status,
                     client.request("GET", api(handle), query={"index": 1}).json["values"][0]["data"]["value"]]
            if steps != [201, 200, f"https://c.example/{n}/{i}/v2"]:
                with lock:
                    failures.append(f"{handle}: {steps}")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(worker, range(8)))
    assert not failures
    listed = sim.client().request("GET", "/api/handles", query={"prefix": OTHER}, auth=True).json["handles"]
    assert sum(h.startswith(ascii_upper(stem)) for h in listed) == 200


def test_a_single_admin_handle_administers_every_prefix(tmp_path):
    store = initialize(tmp_path, [PREFIX, f"0.NA/{OTHER}"], SECRET, admin_handle=f"{PREFIX}/OPS")
    try:
        assert {prefix: admin for prefix, admin in store.homed.values()} == {PREFIX: f"{PREFIX}/OPS", OTHER: f"{PREFIX}/OPS"}
        ops = store.get(f"{PREFIX}/OPS")
        assert [(v.index, v.type) for v in ops.values] == [(100, "HS_ADMIN"), (1, "DESC"), (300, "HS_SECKEY"), (301, "HS_PUBKEY")]
        assert ops.values[0].to_json()["data"]["value"] == {"handle": f"{PREFIX}/OPS", "index": 300, "permissions": "111111111111"}
        assert store.get(f"{PREFIX}/ADMIN") is None
    finally:
        store.close()
    bulk_load(tmp_path, [(f"{OTHER}/x", "https://x.example")])
    reopened = HandleStore(tmp_path / DB_FILE)
    assert reopened.get(f"{OTHER}/X").values[0].to_json()["data"]["value"]["handle"] == f"{PREFIX}/OPS"
    reopened.close()
    with pytest.raises(ValueError, match="must be under a served prefix"):
        initialize(tmp_path, [PREFIX], SECRET, admin_handle="20.500.99999/OPS")
    with pytest.raises(ValueError, match="not a prefix"):
        initialize(tmp_path, ["20.500.1/x"], SECRET)


def test_bulk_load_inserts_quickly_and_serves_the_records(tmp_path):
    initialize(tmp_path, [PREFIX], SECRET).close()
    pairs = ((f"{PREFIX}/bulk-{n:06d}", f"https://bulk.example/{n}") for n in range(50_000))
    started = time.monotonic()
    assert bulk_load(tmp_path, pairs) == 50_000
    assert time.monotonic() - started < 20  # ~1 s here; 1,000,000 loads in well under a minute
    csv_file = tmp_path / "more.csv"
    csv_file.write_text(f"handle,url\n{PREFIX}/csv-1,https://csv.example/1\n")
    assert load_csv(tmp_path, csv_file) == 1
    with pytest.raises(ValueError, match="not served"):
        bulk_load(tmp_path, [("20.500.99999/x", "https://x.example")])

    with SimulatorProcess(tmp_path, prefixes=[PREFIX], secret=SECRET) as sim:
        client = sim.client()
        count = client.request("GET", "/api/handles", query={"prefix": PREFIX, "page": 0, "pageSize": 0}, auth=True)
        assert count.json["totalCount"] == "50002"  # + the CSV row + the admin handle
        page = client.request("GET", "/api/handles", query={"prefix": PREFIX, "page": 400, "pageSize": 100}, auth=True)
        # Key order: ADMIN comes first, so entry 40,000 is BULK-039999.
        assert page.json["handles"] == [f"{PREFIX}/BULK-{n:06d}" for n in range(39_999, 40_099)]
        values = resolve(client, f"{PREFIX}/bulk-012345")[1]["values"]
        assert [v["data"] for v in values] == [ADMIN_VALUE["data"], {"format": "string", "value": "https://bulk.example/12345"}]
        assert client.request("GET", f"/{PREFIX}/csv-1").headers["Location"] == "https://csv.example/1"
