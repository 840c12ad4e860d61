"""The one client for a Handle.net server's JSON REST API (docs/handle-server.md).

The only module that imports `requests`. It knows nothing of Django models: callers pass a ServerConfig.
It never retries or sleeps: it fails fast with a typed error, and the request queue owns the retry policy.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter

URL_INDEX = 1
ADMIN_INDEX = 100


# --- Errors ---------------------------------------------------------------------------------------
class HandleServerError(Exception):
    """Any failure talking to the Handle server; `transient` errors are worth retrying."""

    transient = False

    def __init__(self, message: str, *, status: int | None = None, response_code: int | None = None,
                 body: str = "", exchange: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.response_code = response_code
        self.body = body
        self.exchange = exchange


class HandleNotFound(HandleServerError):
    pass


class HandleAlreadyExists(HandleServerError):
    pass


class AuthenticationFailed(HandleServerError):
    pass


class PermissionDenied(HandleServerError):
    pass


class InvalidRequest(HandleServerError):
    pass


class TransientHandleServerError(HandleServerError):
    transient = True


# responseCode → error class (docs/handle-server.md §6). Checked before the HTTP status.
_RC_ERRORS: dict[int, type[HandleServerError]] = {
    2: TransientHandleServerError,  # unexpected server error
    3: TransientHandleServerError,  # server too busy
    7: TransientHandleServerError,  # server read-only (backup)
    100: HandleNotFound,
    101: HandleAlreadyExists,
    4: InvalidRequest,
    5: InvalidRequest,  # operation not supported (e.g. listing disabled)
    102: InvalidRequest,
    200: InvalidRequest,  # values not found (outside resolution)
    201: InvalidRequest,  # value already exists
    202: InvalidRequest,
    301: InvalidRequest,  # "That prefix doesn't live here"
    400: PermissionDenied,  # invalid admin
    401: PermissionDenied,  # insufficient permissions
    402: AuthenticationFailed,  # authentication needed (credentials missing or ignored over http)
    403: AuthenticationFailed,
    404: AuthenticationFailed,  # invalid credential
}


def classify(status: int, body: dict[str, Any] | None) -> type[HandleServerError] | None:
    """The error class for an answer, or None for success. responseCode first, HTTP status second."""
    rc = body.get("responseCode") if isinstance(body, dict) else None
    if isinstance(rc, int):
        if rc == 1 and status in (200, 201):
            return None
        if rc == 200 and status == 200:
            return None  # resolution with a filter that matched nothing: success, no values
        if rc in _RC_ERRORS:
            return _RC_ERRORS[rc]
    if status in (200, 201) and rc is None:
        return InvalidRequest  # a 2xx without a Handle answer: not the server we think it is
    if status >= 500 or status in (408, 429):
        return TransientHandleServerError
    if status == 401:
        return AuthenticationFailed  # a wrong secret gets 401 with an empty body (seen on the real server)
    if status == 403:
        return PermissionDenied
    if status == 404:
        return HandleNotFound
    if status == 409:
        return HandleAlreadyExists
    return InvalidRequest  # other 4xx and 3xx: redirects are never followed (a 302'd PUT is not a write)


# --- Configuration --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServerConfig:
    base_url: str
    auth_identity: str = ""  # e.g. "300:0.NA/20.500.14725"
    secret: str = field(default="", repr=False)  # never printed
    verify: bool = True  # check the certificate against the system CAs
    pinned_certificate: str = ""  # PEM: trust exactly this certificate, without the hostname check
    client_cert: str = ""  # path to a PEM certificate for HS_PUBKEY authentication
    client_key: str = ""
    timeout: float = 10.0

    @property
    def basic_username(self) -> str:
        # The colon after the index must be %3A or the server takes "300" for a handle and may hang
        # resolving it globally (docs/handle-server.md §7).
        return quote(self.auth_identity, safe="/")


def tls_context(*, verify: bool, pinned_pem: str = "") -> ssl.SSLContext:
    """The client's TLS context. A pinned certificate is trusted alone, without the hostname check: the
    Handle server's own certificate is self-signed `CN=anonymous` with no SAN, so hostname checks always
    fail (docs/handle-server.md §3).

    No session tickets (ssl.OP_NO_TICKET): the server (TLS 1.2 only) asks for a client certificate by
    renegotiating once it sees `Authorization: Handle clientCert="true"`. A client holding a ticket resumes
    the session in that renegotiation, sends no certificate, and the server answers 401 / responseCode 402
    (docs/handle-server.md). A full handshake per connection costs nothing that matters here: connections
    are kept alive."""
    if pinned_pem:
        context = ssl.create_default_context(cadata=pinned_pem)
        context.check_hostname = False
    else:
        context = ssl.create_default_context()
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    context.options |= ssl.OP_NO_TICKET
    return context


class _TLSAdapter(HTTPAdapter):
    """Uses the client's own TLS context (tls_context) for every HTTPS connection."""

    def __init__(self, context: ssl.SSLContext, *, check_hostname: bool, **kwargs: Any) -> None:
        self._context = context
        self._check_hostname = check_hostname
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._context
        if not self._check_hostname:
            kwargs["assert_hostname"] = False
        super().init_poolmanager(*args, **kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        # requests would load its CA bundle into the context for verify=True: with a pin (and no hostname
        # check) any publicly trusted certificate would then pass. The context alone decides what to trust.
        super().cert_verify(conn, url, False, cert)
        conn.cert_reqs = "CERT_NONE" if self._context.verify_mode == ssl.CERT_NONE else "CERT_REQUIRED"


@dataclass
class ServerAnswer:
    status: int
    body: dict[str, Any] | None
    exchange: str  # one line per call: what was sent and what came back (the request log's output)

    @property
    def fields(self) -> dict[str, Any]:
        """The body's fields. A successful Handle answer always has a body (classify refuses a 2xx without
        one); only the session API may answer without."""
        return self.body or {}


class HandleServerClient:
    """Create-only, update-URL, delete, resolve and list, as docs/handle-server.md §4 describes."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.base_url = config.base_url.rstrip("/")
        session = requests.Session()
        # REQUESTS_CA_BUNDLE in the environment would override Session.verify (docs/handle-server.md §3).
        session.trust_env = False
        context = tls_context(verify=config.verify, pinned_pem=config.pinned_certificate)
        adapter = _TLSAdapter(context, check_hostname=context.check_hostname, pool_maxsize=4)
        session.mount("https://", adapter)
        session.mount("http://", HTTPAdapter(pool_maxsize=4))
        if config.client_cert:
            session.cert = (config.client_cert, config.client_key) if config.client_key else config.client_cert
        self._session = session

    # --- URL and auth -----------------------------------------------------------------------------
    def handle_url(self, handle: str) -> str:
        """Percent-encode prefix and suffix, '/' inside the suffix included (docs/handle-server.md §1)."""
        prefix, _, suffix = handle.partition("/")
        return f"{self.base_url}/api/handles/{quote(prefix, safe='')}/{quote(suffix, safe='')}"

    def _auth_headers(self) -> dict[str, str]:
        if self.config.client_cert:
            return {"Authorization": 'Handle clientCert="true"'}
        if self.config.auth_identity:
            token = f"{self.config.basic_username}:{self.config.secret}".encode()
            return {"Authorization": "Basic " + base64.b64encode(token).decode("ascii")}
        return {}

    # --- Transport --------------------------------------------------------------------------------
    def _call(self, method: str, url: str, *, params: list[tuple[str, str]] | None = None,
              payload: Any = None, auth: bool = False, session_api: bool = False) -> ServerAnswer:
        headers = {"Accept": "application/json"}
        if auth:
            headers.update(self._auth_headers())
        data = None
        if payload is not None:
            headers["Content-Type"] = "application/json;charset=UTF-8"
            data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        shown = f"{method} {url}" + ("?" + "&".join(f"{k}={v}" for k, v in params) if params else "")
        try:
            response = self._session.request(
                method, url, params=params, data=data, headers=headers,
                timeout=self.config.timeout, allow_redirects=False,
            )
        except requests.Timeout as exc:
            raise TransientHandleServerError(f"Timed out after {self.config.timeout:g} s: {shown}",
                                             exchange=f"{shown} -> timeout") from exc
        except requests.exceptions.SSLError as exc:
            if _connection_lost(exc):
                # The server closed the connection during the handshake (it is going away): an outage.
                raise TransientHandleServerError(f"Could not reach {self.base_url}: ConnectionError (closed "
                                                 "during the TLS handshake)",
                                                 exchange=f"{shown} -> ConnectionError") from exc
            # A certificate that does not match the pin is a configuration error, not an outage.
            raise InvalidRequest(f"TLS failure talking to {self.base_url}: {exc}",
                                 exchange=f"{shown} -> TLS error") from exc
        except requests.RequestException as exc:
            raise TransientHandleServerError(f"Could not reach {self.base_url}: {exc.__class__.__name__}",
                                             exchange=f"{shown} -> {exc.__class__.__name__}") from exc
        text = response.text
        try:
            body = response.json() if text.strip() else None
        except ValueError:
            body = None
        exchange = f"{shown} -> {response.status_code} {text.strip()[:2000]}"
        if session_api and response.status_code == 200:
            error_class = None  # the session API answers without a responseCode
        else:
            error_class = classify(response.status_code, body)
        if error_class is not None:
            rc = body.get("responseCode") if isinstance(body, dict) else None
            message = (body.get("message") or body.get("error")) if isinstance(body, dict) else None
            detail = f"HTTP {response.status_code}" + (f", responseCode {rc}" if rc is not None else "")
            raise error_class(
                f"{_ERROR_WORDS.get(error_class, 'Handle server error')} ({detail})" + (f": {message}" if message else ""),
                status=response.status_code, response_code=rc, body=text, exchange=exchange,
            )
        return ServerAnswer(response.status_code, body, exchange)

    # --- Operations -------------------------------------------------------------------------------
    def create_handle(self, handle: str, values: list[dict[str, Any]]) -> ServerAnswer:
        """Create only: `overwrite=false` makes the server refuse an existing handle (409/101) instead of
        silently replacing the whole record (docs/handle-server.md §4)."""
        return self._call("PUT", self.handle_url(handle), params=[("overwrite", "false")],
                          payload={"values": values}, auth=True)

    def update_values(self, handle: str, values: list[dict[str, Any]]) -> ServerAnswer:
        """Add or replace the given indexes only; never creates a missing handle (404/100)."""
        params = [("index", str(v["index"])) for v in values]
        return self._call("PUT", self.handle_url(handle), params=params, payload=values, auth=True)

    def delete_handle(self, handle: str) -> ServerAnswer:
        return self._call("DELETE", self.handle_url(handle), auth=True)

    def get_handle(self, handle: str, *, indexes: list[int] | None = None, types: list[str] | None = None,
                   authenticated: bool = False, authoritative: bool = False) -> ServerAnswer:
        """`authoritative`: through a proxy, bypass its cache (`auth=true`) (docs/handle-server.md §4)."""
        params = [("index", str(i)) for i in indexes or []] + [("type", t) for t in types or []]
        params += [("auth", "true")] if authoritative else []
        return self._call("GET", self.handle_url(handle), params=params or None, auth=authenticated)

    def get_url(self, handle: str) -> tuple[str | None, ServerAnswer]:
        """The URL value the server resolves the handle to (None if the record has none)."""
        answer = self.get_handle(handle, types=["URL"])
        return url_of(answer.body), answer

    def authenticate(self) -> ServerAnswer:
        """Check that the server accepts our credentials, writing nothing: the session API's
        `GET /api/sessions/this` with our Authorization answers 200 `{"authenticated":true,"id":...}`, and 401
        when it does not accept them (a wrong secret, or a server shutting down: docs/handle-server.md §7, §10)."""
        answer = self._call("GET", f"{self.base_url}/api/sessions/this", auth=True, session_api=True)
        body = answer.fields
        if body.get("authenticated") is not True:
            raise AuthenticationFailed(f"{_ERROR_WORDS[AuthenticationFailed]} (not authenticated: "
                                       f"{body.get('error') or 'no identity'})", status=answer.status,
                                       body=json.dumps(body), exchange=answer.exchange)
        return answer

    def count_handles(self, prefix: str) -> int:
        answer = self._call("GET", f"{self.base_url}/api/handles",
                            params=[("prefix", prefix), ("page", "0"), ("pageSize", "0")], auth=True)
        return int(answer.fields.get("totalCount", "0"))  # a JSON string on the real server

    def list_page(self, prefix: str, page: int, page_size: int) -> list[str]:
        answer = self._call("GET", f"{self.base_url}/api/handles",
                            params=[("prefix", prefix), ("page", str(page)), ("pageSize", str(page_size))],
                            auth=True)
        return list(answer.fields.get("handles", []))

    def list_prefixes(self) -> list[str]:
        """The prefixes homed on this server, as `0.NA/PREFIX` (authenticated)."""
        answer = self._call("GET", f"{self.base_url}/api/prefixes", auth=True)
        return list(answer.fields.get("prefixes", []))

    def iter_handles(self, prefix: str, page_size: int = 1000) -> Iterator[str]:
        """Every handle under the prefix, upper-cased as the server lists them. Pages shift if the prefix
        changes meanwhile (the server has no snapshot), so callers compare sets, not positions."""
        total = self.count_handles(prefix)
        for page in range(0, (total + page_size - 1) // page_size):
            yield from self.list_page(prefix, page, page_size)

    def homed_prefixes(self) -> list[str]:
        """The prefixes homed on this server, as `0.NA/P`: an authenticated read that writes nothing (docs/handle-server.md §4)."""
        answer = self._call("GET", f"{self.base_url}/api/prefixes", auth=True)
        return [str(p) for p in answer.fields.get("prefixes", [])]

    def close(self) -> None:
        self._session.close()


_ERROR_WORDS: dict[type[HandleServerError], str] = {
    HandleNotFound: "Handle not found on the server",
    HandleAlreadyExists: "Handle already exists on the server",
    AuthenticationFailed: "The Handle server did not accept our credentials",
    PermissionDenied: "The Handle server refused permission",
    InvalidRequest: "The Handle server refused the request",
    TransientHandleServerError: "The Handle server is unavailable",
}


def _connection_lost(exc: BaseException) -> bool:
    """Whether a TLS error is the connection closing or resetting (a server shutting down or restarting),
    not a refusal of the certificate or the protocol. requests nests the ssl error inside urllib3's."""
    seen: set[int] = set()
    pending: list[Any] = [exc]
    while pending:
        error = pending.pop()
        if not isinstance(error, BaseException) or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, ssl.SSLEOFError | ssl.SSLZeroReturnError | ConnectionError):
            return True
        pending.extend([error.__cause__, error.__context__, getattr(error, "reason", None), *error.args])
    return False
def server_certificate(base_url: str, timeout: float) -> str:
    """The PEM certificate the server presents, fetched without verifying it (Check connection compares it
    with the pin). Raises OSError (ssl.SSLError included) when nothing answers TLS there."""
    parts = urlsplit(base_url)
    return ssl.get_server_certificate((parts.hostname or "", parts.port or 443), timeout=timeout)


def url_of(body: dict[str, Any] | None) -> str | None:
    """The lowest-index URL value of a resolution answer."""
    values = (body or {}).get("values") or []
    urls = sorted((v for v in values if v.get("type") == "URL"), key=lambda v: v.get("index", 0))
    if not urls:
        return None
    data = urls[0].get("data")
    return data.get("value") if isinstance(data, dict) else data


_clients: dict[ServerConfig, HandleServerClient] = {}
_clients_lock = threading.Lock()


def client_for(config: ServerConfig) -> HandleServerClient:
    """One client (one connection pool) per configuration and process: keep-alive across tasks."""
    with _clients_lock:
        client = _clients.get(config)
        if client is None:
            client = _clients[config] = HandleServerClient(config)
        return client
