"""The real-server tier (`make test-real`): a real HANDLE.NET server started once per session in a
temporary folder, prefixes of ours pointing at it (secret key and client certificate, pinned TLS), and a
clean slate on the server before each test. Every test here carries the `real_server` marker, which
`make test` leaves out."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from handles import services
from handles.handle_server.client import HandleNotFound, HandleServerClient, ServerConfig
from handles.models import Prefix
from tests.real_server.server import RealServer, dist_folder
from tests.reliability.conftest import broker_queue, clusters  # noqa: F401  (fixtures: real worker clusters)

SECRET_ENV = "HANDLE_SECRET_REAL"
WRONG_SECRET_ENV = "HANDLE_SECRET_REAL_WRONG"
HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.real_server)


@pytest.fixture(scope="session")
def real_server(tmp_path_factory):
    dist, problem = None, ""
    try:
        dist = dist_folder()
    except RuntimeError as exc:
        problem = str(exc)
    if dist is None:
        pytest.fail(problem, pytrace=False)
    server = RealServer(dist, tmp_path_factory.mktemp("real-handle-server")).start()
    # In the environment before any worker starts, so workers inherit them (secrets live in the environment).
    os.environ[SECRET_ENV] = server.env["HANDLE_SERVER_SECRET"]
    os.environ[WRONG_SECRET_ENV] = "not-the-secret"
    yield server
    server.stop()


def secret_config(server: RealServer, **overrides) -> ServerConfig:
    return ServerConfig(**{**dict(base_url=server.url, auth_identity=server.env["HANDLE_SERVER_IDENTITY"],
                                  secret=server.env["HANDLE_SERVER_SECRET"], pinned_certificate=server.certificate,
                                  timeout=10), **overrides})


def cert_config(server: RealServer, **overrides) -> ServerConfig:
    return ServerConfig(**{**dict(base_url=server.url, auth_identity=server.env["HANDLE_SERVER_CLIENT_IDENTITY"],
                                  pinned_certificate=server.certificate, client_cert=server.env["HANDLE_SERVER_CLIENT_CERT"],
                                  client_key=server.env["HANDLE_SERVER_CLIENT_KEY"], timeout=10), **overrides})


@pytest.fixture(params=["secret key", "client certificate"])
def login(request, real_server) -> str:
    return request.param


@pytest.fixture
def admin_client(real_server) -> HandleServerClient:
    """The secret-key admin, for setting the server up and reading it back."""
    return HandleServerClient(secret_config(real_server))


def wipe(client: HandleServerClient, prefix: str) -> None:
    """Delete every handle under the prefix but the admin handle."""
    def delete(handle: str) -> None:
        try:
            client.delete_handle(handle)
        except HandleNotFound:
            pass

    handles = [h for h in client.iter_handles(prefix) if h.upper() != f"{prefix}/ADMIN".upper()]
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(delete, handles))


@pytest.fixture
def clean_server(real_server, admin_client) -> RealServer:
    wipe(admin_client, real_server.prefix)
    return real_server


def make_prefix(server: RealServer, login: str, *, secret_env_var: str = SECRET_ENV) -> Prefix:
    cert = login == "client certificate"
    return services.prefix_save(prefix=Prefix(
        prefix=server.prefix, site_name="Real server", is_default=True, server_url=server.url,
        auth_identity=server.env["HANDLE_SERVER_CLIENT_IDENTITY" if cert else "HANDLE_SERVER_IDENTITY"],
        secret_env_var=secret_env_var, tls_mode=Prefix.TLS.PINNED, pinned_certificate=server.certificate,
        client_cert_path=server.env["HANDLE_SERVER_CLIENT_CERT"] if cert else "",
        client_key_path=server.env["HANDLE_SERVER_CLIENT_KEY"] if cert else "",
        hs_admin_handle=f"{server.prefix}/ADMIN", hs_admin_index=300, hs_admin_permissions="111111111111",
    ))


@pytest.fixture
def real_prefix(db, clean_server, login) -> Prefix:
    return make_prefix(clean_server, login)


def server_listing(client: HandleServerClient, prefix: str) -> dict[str, str | None]:
    """{upper-cased handle: URL it resolves to} for every handle under the prefix but the admin handle."""
    handles = [h for h in client.iter_handles(prefix) if h.upper() != f"{prefix}/ADMIN".upper()]
    with ThreadPoolExecutor(max_workers=4) as pool:
        urls = list(pool.map(lambda h: client.get_url(h)[0], handles))
    return {h.upper(): url for h, url in zip(handles, urls, strict=True)}


# A worker's settings against the real server: a push may take a while on a busy machine, and retries
# back off long enough that a server restart does not use up a request's attempts.
WORKER_ENV = {"HANDLES_SERVER_TIMEOUT": 10, "HANDLES_LEASE_SECONDS": 60, "HANDLES_BACKOFF_BASE_SECONDS": 1,
              "HANDLES_BACKOFF_MAX_SECONDS": 10, "HANDLES_AUTH_PROBE_BASE_SECONDS": 1,
              "HANDLES_AUTH_PROBE_MAX_SECONDS": 5, "HANDLES_DRAIN_SECONDS": 5}


def assert_server_matches_database(client: HandleServerClient, prefix: Prefix) -> int:
    """The server holds exactly the handles we intend, each resolving to its intended URL, and our records
    say they are in sync. Returns how many handles exist on the server."""
    from handles.models import Handle

    on_server = server_listing(client, prefix.prefix)
    handles = list(Handle.objects.filter(prefix=prefix).select_related("prefix"))
    intended = {h.full_handle.upper(): h.resolver_target for h in handles if h.exists_on_server}
    assert on_server == intended
    assert all(h.in_sync for h in handles), [h.full_handle for h in handles if not h.in_sync][:5]
    return len(on_server)
