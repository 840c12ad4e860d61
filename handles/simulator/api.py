"""The REST API: a parsed request in, a response out (the HTTP server in `server` does the wire)."""

from __future__ import annotations

import base64
import binascii
import hmac
import html
import json
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from handles.simulator.certificates import certificate_identity, jwk_numbers
from handles.simulator.store import HandleStore
from handles.simulator.values import (
    HandleValue,
    JavaException,
    ascii_upper,
    iso_time,
    java_int,
    json_string,
    lenient_base64,
    prefix_of,
)

JSON_CONTENT_TYPE = "application/json;charset=utf-8"
HTML_CONTENT_TYPE = "text/html;charset=utf-8"

# The Handle protocol response codes the simulator gives, and their HTTP status (docs/handle-server.md §6).
RC_SUCCESS = 1
RC_ERROR = 2
RC_SERVER_TOO_BUSY = 3
RC_PROTOCOL_ERROR = 4
RC_OPERATION_NOT_SUPPORTED = 5
RC_HANDLE_NOT_FOUND = 100
RC_HANDLE_ALREADY_EXISTS = 101
RC_INVALID_HANDLE = 102
RC_VALUES_NOT_FOUND = 200
RC_VALUE_ALREADY_EXISTS = 201
RC_INVALID_VALUE = 202
RC_SERVER_NOT_RESP = 301
RC_INSUFFICIENT_PERMISSIONS = 401
RC_AUTHENTICATION_NEEDED = 402
_STATUS_BY_RC = {
    RC_PROTOCOL_ERROR: 400, RC_OPERATION_NOT_SUPPORTED: 501, RC_HANDLE_NOT_FOUND: 404,
    RC_HANDLE_ALREADY_EXISTS: 409, RC_INVALID_HANDLE: 400, RC_VALUES_NOT_FOUND: 400,  # 200 when resolving
    RC_VALUE_ALREADY_EXISTS: 409, RC_INVALID_VALUE: 400, RC_SERVER_NOT_RESP: 400,
    RC_INSUFFICIENT_PERMISSIONS: 403, RC_AUTHENTICATION_NEEDED: 401,  # 403 over plain HTTP, see _challenge
}
MSG_NOT_HOMED = "That prefix doesn't live here"
MSG_IDENTITY_NOT_VERIFIED = "Identity not verified"
# What the real server puts in its challenge while it shuts down (docs/handle-server.md §10).
MSG_SHUTDOWN_VERIFYING = "Exception (net.handle.hdllib.HandleException) verifying identity"
MSG_NO_LISTING = "This server does not support the list handles operation."
MSG_INDEXES_POSITIVE = "Value indexes must be positive"


@dataclass(slots=True)
class Request:
    method: str
    path: str  # raw, still percent-encoded, without the query
    params: dict[str, list[str]]
    headers: Any  # email.message.Message: case-insensitive get()
    body: bytes
    secure: bool
    identity: str | None = None  # "index:handle" once authentication succeeded over HTTPS
    peer_certificate: bytes | None = None  # DER of the client certificate the TLS handshake verified
    offered_ticket: bool = False  # the ClientHello carried the session-ticket extension
    shutting_down: bool = False  # the "shutdown" fault
    listing_allowed: bool = True  # False under the "nolist" fault

    def param(self, name: str) -> str | None:
        values = self.params.get(name)
        return values[0] if values else None

    def flag(self, name: str) -> bool:
        """`getBooleanParameter`: present without value, `yes` or `true` (docs/handle-server.md §4)."""
        value = self.param(name)
        return value is not None and value.lower() in ("", "yes", "true")

    def strict_flag(self, name: str) -> bool:
        """`Boolean.parseBoolean`, used for overwrite and mintNewSuffix: only `true` (docs/handle-server.md §4)."""
        return (self.param(name) or "").lower() == "true"

    def indexes(self) -> list[int] | None:
        values = self.params.get("index")
        return None if not values else [java_int(v) for v in values]


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


def _decode_path(raw: str) -> str:
    """`decodeURLIgnorePlus`: %XX decoded as UTF-8, `+` stays a plus."""
    return unquote(raw, errors="replace")


def _has_json_entity(content_type: str | None) -> bool:
    if content_type is None:
        return False
    value = content_type.strip().lower()
    return value == "application/json" or re.match(r"application/json\s*;", value) is not None


def _scrub_callback(callback: str) -> str:
    return "".join(c if c in "_$" or c.isascii() and c.isalpha() or (i and c.isdigit()) or ord(c) >= 0xA0
                   else "_" for i, c in enumerate(callback))


# Servlet path → its Allow header.
_SERVLETS = {"/api/handles": "GET, HEAD, POST, PUT, DELETE, TRACE, OPTIONS",
             "/api/prefixes": "GET, HEAD, POST, DELETE, TRACE, OPTIONS"}


class HandleApi:
    """Request → response, the way the real servlets and HandleServer order their checks."""

    def __init__(self, store: HandleStore) -> None:
        self.store = store

    # Responses ----------------------------------------------------------------------------------------
    def _json(self, req: Request, status: int, obj: dict[str, Any]) -> Response:
        """JSON with the generic `pretty` and JSONP `callback` parameters (docs/handle-server.md §4)."""
        indent = 2 if req.flag("pretty") else None
        text = json.dumps(obj, ensure_ascii=False, indent=indent, separators=None if indent else (",", ":"))
        content_type = JSON_CONTENT_TYPE
        callback = req.param("callback")
        if callback is not None:
            text, content_type = f"{_scrub_callback(callback)}({text});", "application/javascript;charset=utf-8"
        return Response(status, text.encode(), [("Content-Type", content_type)])

    def _rc(self, req: Request, rc: int, handle: str | None = None, message: str | None = None) -> Response:
        """An error body: responseCode, message if any, and the request's handle if it had one (seen on the real server)."""
        body: dict[str, Any] = {"responseCode": rc}
        if message is not None:
            body["message"] = message
        if handle:
            body["handle"] = handle
        return self._json(req, _STATUS_BY_RC[rc], body)

    def _exception(self, req: Request, exc: JavaException) -> Response:
        return self._rc(req, RC_PROTOCOL_ERROR, message=str(exc))

    def _unknown_endpoint(self, req: Request, status: int = 404) -> Response:
        message = f"Unknown HTTP API endpoint {req.method} {req.path}"
        return self._json(req, status, {"responseCode": RC_PROTOCOL_ERROR, "message": message})

    # Routing ------------------------------------------------------------------------------------------
    def dispatch(self, req: Request) -> Response:
        if req.path == "/api" or req.path.startswith("/api/"):
            return self._api(req)
        return self._proxy(req)

    def _api(self, req: Request) -> Response:
        sessions = req.path == "/api/sessions" or req.path.startswith("/api/sessions/")
        authorization = req.headers.get("Authorization")
        if sessions:
            return self._sessions(req, authorization)
        # The authentication filter runs before any servlet, over HTTPS only; over plain HTTP the header is
        # ignored (docs/handle-server.md §7).
        if req.secure and authorization is not None:
            identity, error = self._authenticate(req, authorization)
            if identity is None and (error is not None or not _asks_client_certificate(authorization)):
                return self._challenge(req, Response(401), error)
            # A certificate login that fails goes on unauthenticated: a write then gets 401 / rc 402 (seen on the real server).
            req.identity = identity
        response = self._route(req)
        return self._challenge(req, response, None) if response.status == 401 else response

    def _route(self, req: Request) -> Response:
        base = next((b for b in _SERVLETS if req.path == b or req.path.startswith(b + "/")), "")
        allow = _SERVLETS.get(base, "TRACE, OPTIONS")
        if req.method == "OPTIONS":
            return Response(200, headers=[("Allow", allow)])
        if req.method not in ("GET", "HEAD", "POST", "PUT", "DELETE"):
            return self._json(req, 501, {"responseCode": RC_PROTOCOL_ERROR, "message": f"Unknown method {req.method}"})
        if not base:
            # Unknown endpoint → 404 (seen on the real server); the manual says 405; the server wins (docs/handle-server.md §4).
            return self._unknown_endpoint(req)
        path_info = req.path[len(base):]
        try:
            if base == "/api/prefixes":
                return self._prefixes(req, path_info)
            if req.method == "POST":
                self._merge_json_params(req)
            if req.method in ("GET", "HEAD", "POST"):
                return self._get(req, path_info)
            if req.method == "PUT":
                return self._put(req, path_info)
            return self._delete(req, path_info)
        except JavaException as exc:
            return self._exception(req, exc)

    def _merge_json_params(self, req: Request) -> None:
        """POST acts as GET with the parameters in a JSON body."""
        if not _has_json_entity(req.headers.get("Content-Type")):
            return
        try:
            payload = json.loads(req.body.decode("utf-8", "replace") or "{}")
        except ValueError as exc:
            raise JavaException(f"com.google.gson.JsonSyntaxException: {exc}") from exc
        if not isinstance(payload, dict):
            raise JavaException("com.google.gson.JsonParseException: expected a JSON object of parameters")
        for name, value in payload.items():
            items = value if isinstance(value, list) else [value]
            req.params[name] = [json_string(item) for item in items]

    # Authentication -----------------------------------------------------------------------------------
    def _sessions(self, req: Request, authorization: str | None) -> Response:
        """The session API, as far as a client checks its credentials with it (docs/handle-server.md §7):
        `POST /api/sessions` opens one (201), `GET /api/sessions/this` says whether the request's own
        credentials authenticate (200 `authenticated` true/false; 401 when Basic credentials are refused),
        `DELETE /api/sessions/this` closes it (204). Sessions are not kept: later requests must
        authenticate again."""
        this = req.path == "/api/sessions/this"
        allowed = ("GET", "PUT", "DELETE") if this else ("POST",)
        if req.path not in ("/api/sessions", "/api/sessions/this"):
            return self._unknown_endpoint(req)
        if req.method not in allowed:
            return Response(405, headers=[("Allow", ", ".join((*allowed, "TRACE", "OPTIONS")))])
        if req.method == "DELETE":
            return Response(204)
        identity, error = (None, None)
        if req.secure and authorization is not None:
            identity, error = self._authenticate(req, authorization)
        opened = {"sessionId": f"node0{secrets.token_hex(12)}",
                  "nonce": base64.b64encode(secrets.token_bytes(16)).decode()}
        if req.method == "POST":
            body = {**opened, **({"authenticated": True, "id": identity} if identity else {})}
            if error:
                body["error"] = error
            return Response(201, json.dumps(body).encode(),
                            [("Location", "/api/sessions/this"), ("Content-Type", JSON_CONTENT_TYPE)])
        if error:
            return self._challenge(req, self._json(req, 401, {**opened, "error": error}), error)
        body = {"authenticated": True, "id": identity} if identity else {"authenticated": False}
        return self._json(req, 200, body)

    def _authenticate(self, req: Request, header: str) -> tuple[str | None, str | None]:
        """Returns (identity, error for the WWW-Authenticate); (None, None) when the header does not
        authenticate and names no error (the request goes on unauthenticated, as the real filter lets it).

        HTTP Basic = HS_SECKEY (docs/handle-server.md §7): user `index:handle` percent-decoded with `+` kept, password =
        the HS_SECKEY value at that index (0 = any). `Handle clientCert="true"` = HS_PUBKEY: the TLS client
        certificate's UID (or CN) names `index:handle`, its public key must be that HS_PUBKEY (docs/handle-server.md §7)."""
        if _asks_client_certificate(header):
            return self._authenticate_certificate(req), None
        parts = header.split()
        if len(parts) != 2 or parts[0].lower() != "basic":
            # Handle challenge-response is not simulated: such a header never authenticates, as a stale
            # session would not.
            return None, None
        try:
            raw = lenient_base64(parts[1])
        except binascii.Error:
            return None, None
        username, colon, password = raw.partition(b":")
        if not colon:
            return None, None
        if req.shutting_down:  # seen on the real server for Basic credentials only
            return None, MSG_SHUTDOWN_VERIFYING
        identity = _decode_path(username.decode("utf-8", "replace"))
        index_text, sep, rest = identity.partition(":")
        if sep and index_text.isascii() and index_text.isdigit():
            index, handle = int(index_text), rest
        else:
            # Without an index the whole user is the handle. An unencoded `300:PREFIX/ADMIN` ends up here
            # as handle `300`: the real server then asks the global registry and hangs (docs/handle-server.md §4); the simulator fails at once.
            index, handle = 0, identity
        record = self.store.get(ascii_upper(handle))
        keys = [] if record is None else [
            v.data for v in record.values if ascii_upper(v.type) == "HS_SECKEY" and index in (0, v.index)
            and isinstance(v.data, bytes)]
        if any(hmac.compare_digest(key, password) for key in keys):
            return f"{index}:{handle}", None
        return None, MSG_IDENTITY_NOT_VERIFIED

    def _authenticate_certificate(self, req: Request) -> str | None:
        """The identity a client certificate proves, or None. A client that offered a session ticket is
        refused, as the real server's renegotiation then resumes the session without a certificate."""
        if req.offered_ticket or req.peer_certificate is None:
            return None
        identity, numbers = certificate_identity(req.peer_certificate)
        index_text, sep, handle = (identity or "").partition(":")
        if not sep or not index_text.isdigit() or numbers is None:
            return None
        record = self.store.get(ascii_upper(handle))
        keys = [] if record is None else [
            jwk_numbers(v.data[1]) for v in record.values
            if ascii_upper(v.type) == "HS_PUBKEY" and int(index_text) in (0, v.index) and isinstance(v.data, tuple)]
        return f"{int(index_text)}:{handle}" if numbers in keys else None

    def _challenge(self, req: Request, response: Response, error: str | None) -> Response:
        """A 401 gets the WWW-Authenticate challenges over HTTPS and becomes 403 over plain HTTP, where no
        authentication is possible (seen on the real server)."""
        if not req.secure:
            response.status = 403
            return response
        # Basic is offered unless the client used another scheme, or is a browser script (XMLHttpRequest),
        # for which a Basic challenge would pop up a login dialog.
        authorization = req.headers.get("Authorization")
        if authorization is not None:
            offer_basic = authorization.startswith("Basic")
        else:
            offer_basic = req.headers.get("X-Requested-With") != "XMLHttpRequest"
        if offer_basic:
            response.headers.append(("WWW-Authenticate", 'Basic realm="handle"'))
        nonce = base64.b64encode(secrets.token_bytes(16)).decode()
        challenge = f'Handle sessionId="node0{secrets.token_hex(12)}", nonce="{nonce}"'
        if error:
            challenge += f', error="{error}"'
        response.headers.append(("WWW-Authenticate", challenge))
        return response

    # GET /api/handles ---------------------------------------------------------------------------------
    def _get(self, req: Request, path_info: str) -> Response:
        handle = _decode_path(path_info).removeprefix("/")
        if not handle:
            prefix = req.param("prefix")
            if prefix is not None:
                return self._list_handles(req, prefix)
            return self._rc(req, RC_INVALID_HANDLE, message="Empty handle invalid")
        return self._resolve(req, handle)

    def _resolve(self, req: Request, handle: str) -> Response:
        """Resolve: the values the caller may read (docs/handle-server.md §4)."""
        indexes, types = req.indexes(), req.params.get("type")
        public_only = req.flag("publicOnly") if req.param("publicOnly") is not None else req.identity is None
        lookup = handle if "/" in handle else f"0.NA/{handle}"  # slashless = prefix handle
        if ascii_upper(prefix_of(lookup)) not in self.store.homed:
            return self._rc(req, RC_SERVER_NOT_RESP, handle, MSG_NOT_HOMED)
        record = self.store.get(ascii_upper(lookup))
        if record is None:
            return self._rc(req, RC_HANDLE_NOT_FOUND, handle)
        values = [v for v in record.values if _matches(v, indexes, types)]
        if public_only:
            values = [v for v in values if v.public_read]
        elif any(not v.public_read for v in values):
            if any(not v.public_read and not v.admin_read for v in values):
                return self._rc(req, RC_INSUFFICIENT_PERMISSIONS, handle)
            if req.identity is None:
                return self._rc(req, RC_AUTHENTICATION_NEEDED, handle)
        if not values:
            # Nothing matched: 200 with rc 200 and an empty list (seen on the real server).
            return self._json(req, 200, {"responseCode": RC_VALUES_NOT_FOUND, "values": [], "handle": handle})
        return self._json(req, 200, {"responseCode": RC_SUCCESS, "handle": handle,
                                     "values": [v.to_json() for v in values]})

    def _list_handles(self, req: Request, prefix: str) -> Response:
        """List a prefix (docs/handle-server.md §8): listing allowed, homed check, then auth."""
        if not req.listing_allowed:  # checked first: before the homed check and authentication (seen on the real server)
            return self._rc(req, RC_OPERATION_NOT_SUPPORTED, prefix, MSG_NO_LISTING)
        page, page_size = self._paging(req)
        na = ascii_upper(prefix)
        na = na if "/" in na else f"0.NA/{na}"
        prefix_key = na.removeprefix("0.NA/")
        if not na.startswith("0.NA/") or prefix_key not in self.store.homed:
            return self._rc(req, RC_SERVER_NOT_RESP, prefix, MSG_NOT_HOMED)
        if req.identity is None:
            return self._rc(req, RC_AUTHENTICATION_NEEDED, prefix)
        # Any authenticated identity may list: the simulator acts as if every identity were a server admin
        # with server_admin_full_access = yes, the hdl-setup-server default (docs/handle-server.md §7).
        total = self.store.count_under(prefix_key)
        body: dict[str, Any] = {"responseCode": RC_SUCCESS, "prefix": prefix, "totalCount": str(total)}
        if page >= 0 and page_size >= 0:
            body.update(page=page, pageSize=page_size)
            offset = page * page_size
            handles = [] if page_size == 0 or offset >= total else self.store.keys_under(prefix_key, page_size, offset)
        else:
            handles = self.store.keys_under(prefix_key)
        body["handles"] = handles
        return self._json(req, 200, body)

    def _paging(self, req: Request) -> tuple[int, int]:
        page, page_size = req.param("page"), req.param("pageSize")
        return (-1 if page is None else java_int(page)), (-1 if page_size is None else java_int(page_size))

    def _prefixes(self, req: Request, path_info: str) -> Response:
        """GET /api/prefixes lists the homed prefixes as `0.NA/P` (seen on the real server)."""
        if req.method == "PUT":
            return self._unknown_endpoint(req, 405)
        if req.method in ("POST", "DELETE"):
            return self._rc(req, RC_OPERATION_NOT_SUPPORTED,
                            message="Homing and unhoming prefixes is not simulated; restart with --prefix")
        if (req.param("prefix") or _decode_path(path_info).removeprefix("/")) != "":
            return Response(405, headers=[("Allow", "POST, DELETE, TRACE, OPTIONS")])
        page, page_size = self._paging(req)
        if req.identity is None:
            return self._rc(req, RC_AUTHENTICATION_NEEDED)
        names = [f"0.NA/{prefix}" for prefix, _ in self.store.homed.values()]
        body: dict[str, Any] = {"responseCode": RC_SUCCESS, "totalCount": str(len(names))}
        if page >= 0 and page_size >= 0:
            body.update(page=page, pageSize=page_size)
            names = names[page * page_size:(page + 1) * page_size]
        body["prefixes"] = names
        return self._json(req, 200, body)

    # PUT /api/handles ---------------------------------------------------------------------------------
    def _put(self, req: Request, path_info: str) -> Response:
        """Create a handle, or add or replace some of its values (docs/handle-server.md §4)."""
        content_type = req.headers.get("Content-Type")
        if not _has_json_entity(content_type):
            raise JavaException(f"java.lang.Exception: Unsupported media type {content_type}")
        handle = _decode_path(path_info).removeprefix("/")
        various = req.param("index") == "various"
        indexes = None if various else req.indexes()
        values = self._values_from_body(req.body, handle)
        overwrite = req.strict_flag("overwrite") if req.param("overwrite") is not None else True
        if not various and indexes is None:
            return self._create(req, handle, values, overwrite, req.strict_flag("mintNewSuffix"))
        if not various and set(indexes or ()) != {v.index for v in values}:
            raise JavaException("java.lang.Exception: Mismatched indexes in PUT request")
        return self._add_values(req, handle, values, overwrite)

    def _values_from_body(self, body: bytes, handle: str) -> list[HandleValue]:
        """An array of values, {"values": [...]} (with an optional matching "handle"), or one value."""
        text = body.decode("utf-8", "replace")
        try:
            payload = json.loads(text) if text.strip() else None
        except ValueError as exc:
            raise JavaException(f"com.google.gson.JsonSyntaxException: {exc}") from exc
        if isinstance(payload, dict) and "values" in payload:
            other = payload.get("handle")
            if other is not None and ascii_upper(json_string(other)) != ascii_upper(handle):
                raise JavaException("java.lang.Exception: Mismatched handle in PUT request")
            payload = payload["values"] if payload["values"] is not None else []
            if not isinstance(payload, list):
                raise JavaException("com.google.gson.JsonParseException: values must be an array")
        elif isinstance(payload, dict) and {"index", "type", "data"} <= payload.keys():
            payload = [payload]
        elif not isinstance(payload, list):
            raise JavaException("java.lang.Exception: Invalid JSON in PUT request")
        return [HandleValue.from_json(item) for item in payload]

    def _create(self, req: Request, handle: str, values: list[HandleValue], overwrite: bool, mint: bool) -> Response:
        """CreateHandle: mint, homed, indexes, existence, then auth."""
        target = handle
        if mint:
            # The minted suffix is appended to the path as given: `PREFIX/` → `PREFIX/<uuid4>` (seen on the real server).
            target = handle + str(uuid.uuid4())
            while self.store.get(ascii_upper(target)) is not None:
                target = handle + str(uuid.uuid4())
        if ascii_upper(prefix_of(target)) not in self.store.homed:
            return self._rc(req, RC_SERVER_NOT_RESP, handle, MSG_NOT_HOMED)
        for i, value in enumerate(values):
            if value.index <= 0:
                return self._rc(req, RC_INVALID_VALUE, handle, MSG_INDEXES_POSITIVE)
            for later in values[i + 1:]:
                if later.index == value.index:
                    return self._rc(req, RC_VALUE_ALREADY_EXISTS, handle, f"Index conflict for {later.index}")
        key = ascii_upper(target)
        with self.store.writing() as tx:
            existing = tx.get(key)
            if existing is not None and not overwrite:
                # The existence check runs before authentication.
                return self._rc(req, RC_HANDLE_ALREADY_EXISTS, handle)
            if req.identity is None:
                return self._rc(req, RC_AUTHENTICATION_NEEDED, handle)
            now = int(time.time())
            old = {v.index: v for v in existing.values} if existing else {}
            for value in values:
                kept = old.get(value.index)
                value.timestamp = kept.timestamp if kept and kept.same_ignoring_timestamp(value) else now
            tx.put(key, existing.handle if existing else target, values)
        return self._json(req, 200 if existing else 201, {"responseCode": RC_SUCCESS, "handle": target})

    def _add_values(self, req: Request, handle: str, values: list[HandleValue], overwrite: bool) -> Response:
        """AddValue: never creates; 200 if an index was replaced, else 201."""
        if ascii_upper(prefix_of(handle)) not in self.store.homed:
            return self._rc(req, RC_SERVER_NOT_RESP, handle, MSG_NOT_HOMED)
        if not values:
            return self._rc(req, RC_INVALID_VALUE, handle, "Value list was empty")
        values = sorted(values, key=lambda v: v.index)
        for previous, value in zip([None, *values], values, strict=False):
            if value.index <= 0:
                return self._rc(req, RC_INVALID_VALUE, handle, MSG_INDEXES_POSITIVE)
            if previous is not None and previous.index == value.index:
                return self._rc(req, RC_VALUE_ALREADY_EXISTS, handle, f"Index conflict for {value.index}")
        if req.identity is None:
            return self._rc(req, RC_AUTHENTICATION_NEEDED, handle)
        key = ascii_upper(handle)
        with self.store.writing() as tx:
            existing = tx.get(key)
            if existing is None:
                return self._rc(req, RC_HANDLE_NOT_FOUND, handle)
            old = {v.index: v for v in existing.values}
            shared = [v.index for v in values if v.index in old]
            if shared and not overwrite:
                return self._rc(req, RC_VALUE_ALREADY_EXISTS, handle, f"Index conflict for {shared[0]}")
            now = int(time.time())
            for value in values:
                value.timestamp = now
                kept = old.get(value.index)
                old[value.index] = kept if kept and kept.same_ignoring_timestamp(value) else value
            # The server merges old and new values in index order.
            tx.put(key, existing.handle, [old[index] for index in sorted(old)])
        return self._json(req, 200 if shared else 201, {"responseCode": RC_SUCCESS, "handle": handle})

    # DELETE /api/handles ------------------------------------------------------------------------------
    def _delete(self, req: Request, path_info: str) -> Response:
        """Delete a handle or some of its values (docs/handle-server.md §4). No tombstone is kept."""
        handle = _decode_path(path_info).removeprefix("/")
        indexes = req.indexes()
        key = ascii_upper(handle)
        if indexes is None:
            # A handle under a prefix not homed here may still be deleted ("in the database by mistake").
            if req.identity is None:
                return self._rc(req, RC_AUTHENTICATION_NEEDED, handle)
            with self.store.writing() as tx:
                if not tx.delete(key):
                    return self._rc(req, RC_HANDLE_NOT_FOUND, handle)
            return self._json(req, 200, {"responseCode": RC_SUCCESS, "handle": handle})
        if ascii_upper(prefix_of(handle)) not in self.store.homed:
            return self._rc(req, RC_SERVER_NOT_RESP, handle, MSG_NOT_HOMED)
        if req.identity is None:
            return self._rc(req, RC_AUTHENTICATION_NEEDED, handle)
        with self.store.writing() as tx:
            existing = tx.get(key)
            if existing is None:
                return self._rc(req, RC_HANDLE_NOT_FOUND, handle)
            present = {v.index for v in existing.values}
            if any(index not in present for index in indexes):
                return self._rc(req, RC_VALUES_NOT_FOUND, handle)
            tx.put(key, existing.handle, [v for v in existing.values if v.index not in indexes])
        return self._json(req, 200, {"responseCode": RC_SUCCESS, "handle": handle})

    # The resolver (docs/handle-server.md §9) ------------------------------------------------------------
    def _proxy(self, req: Request) -> Response:
        """`GET /PREFIX/SUFFIX` → 302 to the lowest-index URL value; `?noredirect` → the values as HTML;
        unknown handle → 404 page (docs/handle-server.md §9). Only public values are shown, as to anyone."""
        if req.method not in ("GET", "HEAD"):
            # HttpServlet: a known method the servlet does not implement is 405, an unknown one 501.
            known = req.method in ("POST", "PUT", "DELETE", "OPTIONS", "TRACE")
            return _html(405 if known else 501, "Method not allowed", "<p>The resolver answers GET only.</p>")
        handle = _decode_path(req.path).removeprefix("/")
        if not handle:
            return _html(200, "Handle resolver", "<p>Resolve a handle with <code>GET /PREFIX/SUFFIX</code>.</p>")
        lookup = handle if "/" in handle else f"0.NA/{handle}"
        if ascii_upper(prefix_of(lookup)) not in self.store.homed:
            return _html(400, "Error", f"<p>{html.escape(MSG_NOT_HOMED)}: {html.escape(handle)}</p>")
        record = self.store.get(ascii_upper(lookup))
        if record is None:
            return _html(404, "Handle Not Found", f"<p>The handle you requested, {html.escape(handle)}, "
                                                  "cannot be found.</p>")
        values = sorted((v for v in record.values if v.public_read), key=lambda v: v.index)
        urls = [v.data for v in values if ascii_upper(v.type) == "URL" and isinstance(v.data, bytes)]
        if urls and req.param("noredirect") is None:
            location = quote(urls[0].decode("utf-8", "replace"), safe="!#$%&'()*+,/:;=?@[]~")
            return Response(302, b"", [("Location", location), ("Content-Type", HTML_CONTENT_TYPE)])
        rows = "".join(
            f"<tr><td>{v.index}</td><td>{html.escape(v.type)}</td>"
            f"<td>{html.escape(str(v.to_json()['data']['value']))}</td><td>{iso_time(v.timestamp)}</td></tr>"
            for v in values)
        return _html(200, f"Handle {handle}", "<table><tr><th>Index</th><th>Type</th><th>Data</th>"
                                              f"<th>Timestamp</th></tr>{rows}</table>")


def _asks_client_certificate(authorization: str) -> bool:
    """`Authorization: Handle clientCert="true"`: log in with the TLS client certificate (docs/handle-server.md §7)."""
    scheme, _, params = authorization.partition(" ")
    return scheme.lower() == "handle" and re.search(r'clientCert\s*=\s*"true"', params, re.IGNORECASE) is not None


def _html(status: int, title: str, content: str) -> Response:
    page = (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title></head>"
            f"<body><h1>{html.escape(title)}</h1>{content}</body></html>")
    return Response(status, page.encode(), [("Content-Type", HTML_CONTENT_TYPE)])


def _matches(value: HandleValue, indexes: list[int] | None, types: list[str] | None) -> bool:
    """Index and type filters combine as OR; a type ending in `.` matches its subtypes (docs/handle-server.md §4)."""
    if not indexes and not types:
        return True
    if indexes and value.index in indexes:
        return True
    value_type = ascii_upper(value.type)
    return any(value_type.startswith(ascii_upper(t)) if t.endswith(".") else value_type == ascii_upper(t)
               for t in types or ())
