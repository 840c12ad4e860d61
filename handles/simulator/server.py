"""The HTTP/HTTPS server: one port for both (port unification), TLS 1.2 with an optional client
certificate, the session-ticket check of client-certificate login, the fault switch, and `serve`."""

from __future__ import annotations

import http
import json
import signal
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from handles.simulator.api import (
    JSON_CONTENT_TYPE,
    RC_ERROR,
    RC_SERVER_TOO_BUSY,
    HandleApi,
    Request,
    Response,
)
from handles.simulator.datadir import CERT_FILE, CLIENT_CERT_DIR, FAULTS_FILE, KEY_FILE
from handles.simulator.faults import FaultSwitch
from handles.simulator.store import initialize, load_csv

_BUSY_BODY = json.dumps({"responseCode": RC_SERVER_TOO_BUSY, "message": "Server too busy"}).encode()


class _Handler(BaseHTTPRequestHandler):
    """One thread per connection; HTTP/1.1 keep-alive with a Content-Length on every response."""

    protocol_version = "HTTP/1.1"
    timeout = 300  # an idle keep-alive connection is closed after 5 minutes
    disable_nagle_algorithm = True
    server: SimulatorServer

    def setup(self) -> None:
        self.secure = False
        self.peer_certificate: bytes | None = None
        self.offered_ticket = False
        self.refused = self.server.faults.current().mode == "down"
        if not self.refused:
            try:
                self.request.settimeout(self.timeout)
                # Port unification: TLS records start with 0x16 (handshake) (docs/handle-server.md §3). Peeking and the
                # handshake happen here, in the connection's thread, so a slow client never stalls accept().
                if self.request.recv(1, socket.MSG_PEEK) == b"\x16":
                    self.request = self.server.tls.wrap_socket(self.request, server_side=True)
                    self.secure = True
                    self.peer_certificate = self.request.getpeercert(binary_form=True)
                    self.offered_ticket = getattr(self.request, "offered_ticket", False)
            except OSError:
                self.refused = True
        super().setup()

    def handle(self) -> None:
        if self.refused:
            self._abort()
            return
        super().handle()

    def _abort(self) -> None:
        """Close without answering; SO_LINGER 0 makes it a reset, which clients report as a connection error."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass

    def handle_one_request(self) -> None:
        if self.server.faults.current().mode == "down":
            self._abort()
            return
        try:
            self.raw_requestline = self.rfile.readline(65537)
        except OSError:
            self.close_connection = True
            return
        if not self.raw_requestline:
            self.close_connection = True
            return
        if len(self.raw_requestline) > 65536:
            self.requestline, self.request_version, self.command = "", "", ""
            self.send_error(414)
            return
        if not self.parse_request():
            return
        try:
            body = self._read_body()
        except ValueError:
            self.send_error(400, "Bad request body")
            return
        fault = self.server.faults.current()
        if fault.mode in ("drop", "down"):
            self._abort()
            return
        if fault.mode == "slow":
            time.sleep(fault.delay)
        if fault.mode == "503":
            # RC 3 "Server too busy" maps to 503 (docs/handle-server.md §6).
            response = Response(503, _BUSY_BODY, [("Content-Type", JSON_CONTENT_TYPE)])
        else:
            response = self._dispatch(body, shutting_down=fault.mode == "shutdown")
        self._send(response)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while size := int(self.rfile.readline(1024).split(b";")[0].strip() or b"x", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
            while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                pass  # trailer fields
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0:
            raise ValueError("negative Content-Length")
        return self.rfile.read(length)

    def _dispatch(self, body: bytes, *, shutting_down: bool = False) -> Response:
        path, _, query = self.path.partition("?")
        params: dict[str, list[str]] = {}
        for name, value in parse_qsl(query, keep_blank_values=True, errors="replace"):
            params.setdefault(name, []).append(value)
        try:
            listing_allowed = self.server.faults.current().mode != "nolist"
            return self.server.api.dispatch(Request(
                self.command, path, params, self.headers, body, self.secure, peer_certificate=self.peer_certificate,
                offered_ticket=self.offered_ticket, shutting_down=shutting_down, listing_allowed=listing_allowed))
        except Exception:
            traceback.print_exc()
            return Response(500, json.dumps({"responseCode": RC_ERROR, "message": "Internal Error"}).encode(),
                            [("Content-Type", JSON_CONTENT_TYPE)])

    def _send(self, response: Response) -> None:
        lines = [f"HTTP/1.1 {response.status} {http.HTTPStatus(response.status).phrase}"]
        lines += [f"{name}: {value}" for name, value in response.headers]
        lines.append(f"Content-Length: {len(response.body)}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        # HEAD is GET without the body.
        self.wfile.write(head if self.command == "HEAD" else head + response.body)
        self.log_request(response.status, len(response.body))

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)


class SimulatorServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], api: HandleApi, tls: ssl.SSLContext, faults: FaultSwitch,
                 verbose: bool = False) -> None:
        self.api, self.tls, self.faults, self.verbose = api, tls, faults, verbose
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # clients hanging up, TLS handshakes abandoned: normal traffic, not worth a traceback
        super().handle_error(request, client_address)


_SESSION_TICKET_EXTENSION = 35  # RFC 5077


def offers_session_ticket(client_hello: bytes) -> bool:
    """Whether a TLS ClientHello handshake message carries the session-ticket extension."""
    try:
        at = 4 + 2 + 32  # message header, client version, random
        at += 1 + client_hello[at]  # session id
        at += 2 + int.from_bytes(client_hello[at:at + 2], "big")  # cipher suites
        at += 1 + client_hello[at]  # compression methods
        end = at + 2 + int.from_bytes(client_hello[at:at + 2], "big")
        at += 2
        while at + 4 <= end:
            if int.from_bytes(client_hello[at:at + 2], "big") == _SESSION_TICKET_EXTENSION:
                return True
            at += 4 + int.from_bytes(client_hello[at + 2:at + 4], "big")
    except IndexError:
        pass
    return False


def _note_client_hello(conn: Any, direction: str, version: Any, content_type: Any, msg_type: Any,
                       data: bytes) -> None:
    if direction == "read" and msg_type == ssl._TLSMessageType.CLIENT_HELLO:  # type: ignore[attr-defined]  # noqa: SLF001 (private, untyped)
        conn.offered_ticket = offers_session_ticket(data)


def server_tls_context(data_dir: Path) -> ssl.SSLContext:
    """TLS 1.2 only, like the real server; an optional client certificate, trusted only if it is one of
    clientcerts/. Whether the client offered a session ticket is read from its ClientHello through
    CPython's TLS message callback (`_msg_callback`, the only place the standard library shows it)."""
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.maximum_version = ssl.TLSVersion.TLSv1_2
    tls.load_cert_chain(data_dir / CERT_FILE, data_dir / KEY_FILE)
    tls.verify_mode = ssl.CERT_OPTIONAL
    for cert in sorted((data_dir / CLIENT_CERT_DIR).glob("*.pem")):
        tls.load_verify_locations(cafile=str(cert))
    tls._msg_callback = _note_client_hello  # type: ignore[attr-defined]  # noqa: SLF001 (private, untyped)
    return tls


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def serve(data_dir: str | Path, prefixes: Iterable[str], secret: str, *, host: str = "127.0.0.1",
          port: int = 8001, admin_handle: str | None = None, csv_path: str | Path | None = None,
          verbose: bool = False, announce: Callable[[str], None] = print) -> None:
    """Run the simulator in the foreground until Ctrl-C or SIGTERM."""
    data_dir = Path(data_dir)
    store = initialize(data_dir, prefixes, secret, admin_handle)
    try:
        if csv_path is not None:
            announce(f"Loaded {load_csv(data_dir, csv_path)} handles from {csv_path}")
        tls = server_tls_context(data_dir)
        server = SimulatorServer((host, port), HandleApi(store), tls, FaultSwitch(data_dir / FAULTS_FILE), verbose)
    except BaseException:
        store.close()
        raise
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    served = ", ".join(f"0.NA/{prefix} (admin {admin})" for prefix, admin in store.homed.values())
    announce(f"Handle simulator listening on {host}:{server.server_address[1]} (HTTP and HTTPS); "
             f"prefixes {served}; data in {data_dir}; certificate {data_dir / CERT_FILE}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        store.close()
        announce("Handle simulator stopped")
