"""Web sites on several loopback addresses (127.0.0.2, 127.0.0.3, ...), each a host of its own for the
health check's politeness, recording when each request arrived. Linux answers on all of 127.0.0.0/8
without setup. Used by the per-host rate test and bench/health.py."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Page(BaseHTTPRequestHandler):
    """Every path is a page whose title is the path; hits are recorded as (monotonic time, path)."""

    protocol_version = "HTTP/1.1"  # keep-alive, as real sites
    hits: list[tuple[float, str]]

    def do_GET(self):  # noqa: N802 (the http.server API)
        self.hits.append((time.monotonic(), self.path))
        data = f"<html><head><title>{self.path}</title></head></html>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # a client closing its keep-alive connection is no error of the site


class LoopbackSites:
    """`count` sites on 127.0.0.2 onwards, each on a free port. `url(i, path)`; `hits[host]`."""

    def __init__(self, count: int) -> None:
        self.servers: list[ThreadingHTTPServer] = []
        self.hits: dict[str, list[tuple[float, str]]] = {}
        for n in range(count):
            host = f"127.0.0.{n + 2}"
            hits: list[tuple[float, str]] = []
            handler = type(f"Page{n}", (_Page,), {"hits": hits})
            server = _Server((host, 0), handler)
            self.servers.append(server)
            self.hits[host] = hits

    def url(self, index: int, path: str) -> str:
        host, port = self.servers[index].server_address[:2]
        return f"http://{host}:{port}{path}"

    @property
    def hosts(self) -> list[str]:
        return list(self.hits)

    def __enter__(self) -> LoopbackSites:
        for server in self.servers:
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()
