"""Fixtures of the import/reconcile/health tests: the Grinnell prefix, small CSV files, a target web site."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from handles import services
from handles.models import Prefix

# A copy of shared/data/grinnell (a real library's public report), so the suite needs nothing outside the repo.
GRINNELL_CSV = Path(__file__).resolve().parent.parent / "data" / "grinnell" / "handle_validation_20251208_115126.csv"
PRIMO = "https://grinnell.primo.exlibrisgroup.com/discovery/fulldisplay/alma{external_id}/01GCL_INST:GCL"


@pytest.fixture
def grinnell_prefix(db) -> Prefix:
    """Prefix 11084 as Grinnell has it: a Primo URL template, vendor suffixes of ten digits."""
    return services.prefix_save(prefix=Prefix(
        prefix="11084", site_name="Grinnell College", server_url="https://127.0.0.1:9", auth_identity="300:11084/ADMIN",
        secret_env_var="HANDLE_SECRET_TEST", tls_mode=Prefix.TLS.INSECURE, hs_admin_handle="11084/ADMIN",
        hs_admin_index=300, url_template=PRIMO, vendor_suffix_pattern=r"^\d{10}$"))


@pytest.fixture
def csv_file(tmp_path):
    """Write text (or bytes) to a CSV file and return its path."""

    def write(content: str | bytes, name: str = "handles.csv") -> Path:
        path = tmp_path / name
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return path

    return write


class _Site(BaseHTTPRequestHandler):
    """Pages by path: `routes` maps a path to (status, headers, body); '/slow...' never answers in time."""

    routes: dict[str, tuple[int, dict[str, str], str]] = {}
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 (the http.server API)
        self.hits.append(self.path)
        if self.path.startswith("/slow"):
            threading.Event().wait(2)
        status, headers, body = self.routes.get(self.path, (404, {}, "<title>Not found</title>"))
        data = body.encode()
        self.send_response(status)
        for name, value in {"Content-Type": "text/html; charset=utf-8", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except OSError:
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def site():
    """A web site on 127.0.0.1 standing in for the catalogue (Primo) the handles lead to."""
    handler = type("Site", (_Site,), {"routes": {}, "hits": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    handler.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    yield handler
    server.shutdown()
    server.server_close()


@pytest.fixture
def grinnell_server(tmp_path, monkeypatch):
    """A fresh Handle server simulator serving prefix 11084 (real HTTPS on a loopback port)."""
    from tests.conftest import SECRET_ENV, SIM_SECRET
    from tests.simulator_process import SimulatorProcess

    monkeypatch.setenv(SECRET_ENV, SIM_SECRET)
    with SimulatorProcess(tmp_path / "grinnell-sim", prefixes=["11084"], secret=SIM_SECRET) as sim:
        yield sim


@pytest.fixture
def grinnell_live(db, grinnell_server, site) -> Prefix:
    """Prefix 11084 pointing at the simulator, with a URL template whose targets are served by `site`."""
    from tests.conftest import SECRET_ENV

    return services.prefix_save(prefix=Prefix(
        prefix="11084", site_name="Grinnell College", server_url=grinnell_server.base_url,
        auth_identity="300:11084/ADMIN", secret_env_var=SECRET_ENV, tls_mode=Prefix.TLS.PINNED,
        pinned_certificate=grinnell_server.cert_path.read_text(), hs_admin_handle="11084/ADMIN", hs_admin_index=300,
        hs_admin_permissions="111111111111", vendor_suffix_pattern=r"^\d{10}$",
        url_template=site.base_url + "/discovery/fulldisplay/alma{external_id}/01GCL_INST:GCL"))


def primo_page(site, mms_id: str, title: str) -> str:
    """Serve the catalogue page of one object on the test site; returns its URL."""
    path = f"/discovery/fulldisplay/alma{mms_id}/01GCL_INST:GCL"
    site.routes[path] = (200, {}, f"<html><head><title>{title} | Grinnell College</title></head></html>")
    return site.base_url + path


def client_of(prefix: Prefix):
    from handles.handle_server.client import client_for

    return client_for(prefix.server_config())


def server_put(prefix: Prefix, name: str, url: str) -> None:
    """Put a handle on the simulator behind our back (what the vendor's job did)."""
    from handles.handle_server import records

    client_of(prefix).create_handle(name, records.new_record(url, admin_handle=prefix.hs_admin_handle,
                                                             admin_index=prefix.hs_admin_index,
                                                             permissions=prefix.hs_admin_permissions))


def server_url(prefix: Prefix, name: str) -> str | None:
    from handles.handle_server.client import HandleNotFound

    try:
        return client_of(prefix).get_url(name)[0]
    except HandleNotFound:
        return None
