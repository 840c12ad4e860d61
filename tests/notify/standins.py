"""Loopback stand-ins for what notifications and the watchdog talk to: an SMTP server (aiosmtpd), a webhook
receiver that checks the HMAC signature, and the global Handle proxy answering `0.NA/<prefix>` as the real
one does (HS_SITE / HS_SERV values in the JSON REST API's format)."""

from __future__ import annotations

import email
import email.policy
import hashlib
import hmac
import http.client
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from aiosmtpd.controller import Controller

from tests.simulator_process import free_port


# --- SMTP --------------------------------------------------------------------------------------------------
class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[Any] = []
        self._arrived = threading.Condition()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's handler API)
        with self._arrived:
            self.envelopes.append(envelope)
            self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
            self._arrived.notify_all()
        return "250 Message accepted for delivery"


class SmtpServer:
    """A real SMTP server on 127.0.0.1; `messages` holds what arrived, parsed."""

    def __init__(self) -> None:
        self.mailbox = _Mailbox()
        self.port = free_port()
        self.controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port)

    @property
    def messages(self) -> list[email.message.EmailMessage]:
        return self.mailbox.messages

    def subjects(self) -> list[str]:
        return [str(m["Subject"]) for m in self.messages]

    def wait_for(self, count: int, timeout: float = 30.0) -> list[email.message.EmailMessage]:
        deadline = time.monotonic() + timeout
        with self.mailbox._arrived:
            while len(self.messages) < count and time.monotonic() < deadline:
                self.mailbox._arrived.wait(0.2)
        return list(self.messages)

    def clear(self) -> None:
        self.mailbox.messages.clear()
        self.mailbox.envelopes.clear()

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


def _answer(handler: BaseHTTPRequestHandler, status: int, data: bytes, content_type: str) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


# --- Webhook receiver ------------------------------------------------------------------------------------------
@dataclass
class Received:
    body: bytes
    headers: dict[str, str]
    signature_ok: bool

    def json(self) -> Any:
        return json.loads(self.body)


def verify_signature(secret: str, headers: dict[str, str], body: bytes, max_age: float = 300) -> bool:
    """What a receiver does: recompute HMAC-SHA256 over "<timestamp>.<body>", compare in constant time,
    and refuse a stale timestamp."""
    timestamp = headers.get("X-Handles-Timestamp", "")
    signature = headers.get("X-Handles-Signature", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > max_age:
        return False
    expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


@dataclass
class WebhookReceiver:
    """An HTTP endpoint on 127.0.0.1 that keeps every POST; `answers` scripts the next responses
    ((status, body), default 200 "ok"); a bad signature gets 401."""

    secret: str = "receiver-secret"
    received: list[Received] = field(default_factory=list)
    answers: list[tuple[int, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = dict(self.headers.items())
                ok = verify_signature(receiver.secret, headers, body)
                receiver.received.append(Received(body, headers, ok))
                status, text = (receiver.answers.pop(0) if receiver.answers else (200, "ok")) if ok else (
                    401, "bad signature")
                _answer(self, status, text.encode(), "text/plain")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/handles"

    @property
    def verified(self) -> list[Received]:
        return [r for r in self.received if r.signature_ok]

    def __enter__(self) -> WebhookReceiver:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- The global proxy -------------------------------------------------------------------------------------------
def site_value(address: str, http_port: int, index: int = 1) -> dict[str, Any]:
    """An HS_SITE value as the JSON REST API serialises a siteinfo (GsonUtility: format "site")."""
    return {"index": index, "type": "HS_SITE", "data": {"format": "site", "value": {
        "version": 1, "protocolVersion": "2.10", "serialNumber": 1, "primarySite": True, "multiPrimary": False,
        "attributes": [{"name": "desc", "value": "Library handle server"}],
        "servers": [{"serverId": 1, "address": address,
                     "publicKey": {"format": "key", "value": {"kty": "RSA", "n": "u1Zk", "e": "AQAB"}},
                     "interfaces": [{"query": True, "admin": True, "protocol": "TCP", "port": 2641},
                                    {"query": True, "admin": False, "protocol": "UDP", "port": 2641},
                                    {"query": True, "admin": True, "protocol": "HTTP", "port": http_port}]}]}},
        "ttl": 86400, "timestamp": "2026-01-05T10:00:00Z"}


def _admin_value() -> dict[str, Any]:
    return {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
        "handle": "0.NA/20.500", "index": 200, "permissions": "011111110011"}}, "ttl": 86400,
        "timestamp": "2026-01-05T10:00:00Z"}


class GlobalProxy:
    """Answers GET /api/handles/0.NA/<prefix> from `records` (prefix handle → values, as the GHR holds them),
    and any other handle by asking the server a registered prefix points at (`forward`), as the real proxy
    does after looking up the prefix."""

    def __init__(self) -> None:
        self.records: dict[str, list[dict[str, Any]]] = {}
        self.forward: dict[str, tuple[str, Path | None]] = {}  # prefix → (server base URL, pinned cert)
        self.requests: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                proxy.requests.append(self.path)
                status, body = proxy.answer(self.path)
                _answer(self, status, json.dumps(body).encode(), "application/json;charset=utf-8")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def register(self, prefix: str, address: str, port: int, *, forward_to: str = "", cert: Path | None = None) -> None:
        self.records[f"0.NA/{prefix}".upper()] = [site_value(address, port), _admin_value()]
        if forward_to:
            self.forward[prefix.upper()] = (forward_to, cert)

    def register_service(self, prefix: str, service: str, address: str, port: int, *, forward_to: str = "",
                         cert: Path | None = None) -> None:
        """The prefix handle names a service handle (HS_SERV) whose record holds the site."""
        self.records[f"0.NA/{prefix}".upper()] = [
            {"index": 1, "type": "HS_SERV", "data": {"format": "string", "value": service}, "ttl": 86400,
             "timestamp": "2026-01-05T10:00:00Z"}, _admin_value()]
        self.records[service.upper()] = [site_value(address, port), _admin_value()]
        if forward_to:
            self.forward[prefix.upper()] = (forward_to, cert)

    def answer(self, raw_path: str) -> tuple[int, dict[str, Any]]:
        parts = urlsplit(raw_path)
        if not parts.path.startswith("/api/handles/"):
            return 404, {"responseCode": 4, "message": "Unknown HTTP API endpoint"}
        handle = unquote(parts.path[len("/api/handles/"):])
        if handle.upper() in self.records:
            return 200, {"responseCode": 1, "handle": handle, "values": self.records[handle.upper()]}
        prefix = handle.split("/", 1)[0].upper()
        if prefix in self.forward:
            base, cert = self.forward[prefix]
            return self._ask(base, cert, parts)
        return 404, {"responseCode": 100, "handle": handle}

    def _ask(self, base: str, cert: Path | None, parts) -> tuple[int, dict[str, Any]]:
        target = urlsplit(base)
        context = ssl.create_default_context(cafile=str(cert)) if cert else ssl.create_default_context()
        context.check_hostname = False
        connection = http.client.HTTPSConnection(target.hostname, target.port, context=context, timeout=5)
        try:
            connection.request("GET", quote(parts.path, safe="/%") + (f"?{parts.query}" if parts.query else ""))
            response = connection.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        except (OSError, ValueError):
            return 500, {"responseCode": 2, "message": "Error talking to the prefix's server"}
        finally:
            connection.close()

    def __enter__(self) -> GlobalProxy:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
