"""A stand-alone simulator of CNRI's HANDLE.NET 9.3.1 JSON REST API, for tests, demos and benchmarks.

It answers as the real server did in `tests/handle_server/recordings/handle-net-9.3.1.jsonl`; where the
recordings are silent it follows shared/HANDLE_API.md, which cites the Technical Manual ([TM §x]) and the
9.3.1 server source ([SRC path]). Deliberately Django-free: it runs as its own process
(`python -m handles.handle_server.simulator --help`) and uses only the standard library plus
`cryptography` for its self-signed certificate.

One TCP port serves plain HTTP and HTTPS, like the real server's port unification [HANDLE_API §1]:
- `/api/handles/...` and `/api/prefixes`: the JSON REST API [HANDLE_API §2].
- any other path: the [PROXY] resolver, `GET /PREFIX/SUFFIX` → 302 to the record's URL [HANDLE_API §5].

State lives in `--data-dir`: `handles.sqlite3` (records and homed prefixes), `serverCertificate.pem`
plus its key, `clientcerts/` (a client certificate per admin handle, for HS_PUBKEY login at index 301, made
with that same key), and `faults.json`, a switch that tests flip to make the server slow, busy, unreachable
or shutting down.

TLS is 1.2 only, like the real server's. Client-certificate login (`Authorization: Handle
clientCert="true"`) works only for a client that offered no session ticket in its ClientHello: the real
server asks for the certificate by renegotiating, and a client holding a ticket resumes instead and sends
none (docs/handle-server.md). The simulator cannot renegotiate: it asks every client for an optional
certificate in the first handshake, trusts only the certificates in `clientcerts/`, and refuses the login
when the ClientHello carried the session-ticket extension.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import csv
import hmac
import html
import http
import json
import math
import os
import queue
import re
import secrets
import signal
import socket
import socketserver
import sqlite3
import ssl
import struct
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

DB_FILE = "handles.sqlite3"
CERT_FILE = "serverCertificate.pem"  # the real server's file name [HANDLE_API §2.9]
KEY_FILE = "serverCertificatePrivateKey.pem"  # PEM here; the real server writes a Handle-format .bin
FAULTS_FILE = "faults.json"
CLIENT_CERT_DIR = "clientcerts"
SECRET_ENV = "HANDLE_SIMULATOR_SECRET"

ADMIN_INDEX = 100
SECKEY_INDEX = 300
PUBKEY_INDEX = 301
ALL_ADMIN_PERMISSIONS = 0xFFF  # the 12 HS_ADMIN permission bits, "111111111111" in JSON
DEFAULT_TTL = 86400
DEFAULT_PERMISSIONS = "1110"  # adminRead adminWrite publicRead publicWrite [HANDLE_API §2.8]
JSON_CONTENT_TYPE = "application/json;charset=utf-8"
HTML_CONTENT_TYPE = "text/html;charset=utf-8"

# The Handle protocol response codes the simulator gives [TM §3.7.1], and their HTTP status
# [SRC BaseHandleRequestProcessingServlet `statusCodeFromResponse`, HANDLE_API §2.6].
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
# What the real server puts in its challenge while it shuts down [LIVE, docs/handle-server.md].
MSG_SHUTDOWN_VERIFYING = "Exception (net.handle.hdllib.HandleException) verifying identity"
MSG_NO_LISTING = "This server does not support the list handles operation."
MSG_INDEXES_POSITIVE = "Value indexes must be positive"

_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_JAVA_INT = re.compile(r"[+-]?[0-9]+")
_BINARY_BYTE = re.compile(rb"[\x00-\x08\x14-\x1f\x7f]")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")


def ascii_upper(text: str) -> str:
    """Upper-case ASCII letters only: the server folds `a`→`A` but never `é`→`É` [HANDLE_API §4]."""
    return text.translate(_ASCII_UPPER)


def prefix_of(handle: str) -> str:
    """The prefix is everything before the first `/` [TM §1.1]; a slashless handle is all prefix."""
    return handle.partition("/")[0]


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: str) -> int:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


class JavaException(Exception):
    """A request the real server rejects with a Java exception: 400, rc 4, `message` = `e.toString()`."""


def _number_format(text: str) -> JavaException:
    return JavaException(f'java.lang.NumberFormatException: For input string: "{text}"')


def _java_int(text: str) -> int:
    """`Integer.parseInt`: optional sign, ASCII digits, 32-bit range."""
    if not _JAVA_INT.fullmatch(text) or not -(2**31) <= int(text) < 2**31:
        raise _number_format(text)
    return int(text)


# --- Handle values [HANDLE_API §2.8, SRC hdllib/GsonUtility.java] -------------------------------------
def _json_string(element: Any) -> str:
    """Gson `getAsString`: strings, numbers and booleans; anything else is a parse error."""
    if isinstance(element, str):
        return element
    if isinstance(element, bool | int | float):
        return json.dumps(element)
    raise JavaException(f"com.google.gson.JsonParseException: expected a JSON primitive, got {json.dumps(element)}")


def _json_int(element: Any) -> int:
    """Gson `getAsInt`: numbers (truncated) and numeric strings, so PyHandle's `"index":"200"` works."""
    if isinstance(element, bool) or element is None or isinstance(element, dict | list):
        raise JavaException(f"com.google.gson.JsonParseException: expected an integer, got {json.dumps(element)}")
    if isinstance(element, float) and not math.isfinite(element):
        raise _number_format(str(element))
    return _java_int(str(int(element)) if isinstance(element, int | float) else element)


def _lenient_base64(text: str) -> bytes:
    """commons-codec `decodeBase64`: skips characters outside the alphabet, accepts URL-safe and no padding."""
    cleaned = re.sub(r"[^A-Za-z0-9+/\-_]", "", text).translate(str.maketrans("-_", "+/"))
    if len(cleaned) % 4 == 1:  # a lone trailing character carries no whole byte
        cleaned = cleaned[:-1]
    return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4))


def _admin_perms_bits(element: Any) -> int:
    """JSON admin permissions → bit i = perms[i] (0 = add handle ... 11 = list handles) [HANDLE_API §2.8].

    Accepts the string form (rightmost char = bit 0), `"*"`/`true` (all), a number, or an array of truthy
    values in bit order [SRC GsonUtility `AdminRecordGsonTypeAdapter`].
    """
    if element is None or element is False:
        return 0
    if element is True or element == "*":
        return ALL_ADMIN_PERMISSIONS
    if isinstance(element, list):
        return sum(1 << i for i, item in enumerate(element[:12]) if item not in (None, False, 0, ""))
    text = element if isinstance(element, str) else bin(_json_int(element))[2:]
    return sum(1 << i for i, char in enumerate(reversed(text[-12:])) if char == "1")


def encode_admin(handle: str, index: int, permissions: int) -> bytes:
    """HS_ADMIN wire encoding: 2-byte permissions, UTF8-String admin handle, 4-byte index [RFC 3651 §2.2.1]."""
    raw = handle.encode()
    return struct.pack(">HI", permissions, len(raw)) + raw + struct.pack(">i", index)


def decode_admin(data: bytes) -> dict[str, Any] | None:
    if len(data) < 10:
        return None
    permissions, length = struct.unpack_from(">HI", data)
    if len(data) != 10 + length:
        return None
    try:
        handle = data[6 : 6 + length].decode()
    except UnicodeDecodeError:
        return None
    (index,) = struct.unpack_from(">i", data, 6 + length)
    perms = "".join("1" if permissions >> bit & 1 else "0" for bit in range(11, -1, -1))
    return {"handle": handle, "index": index, "permissions": perms}


def _encode_vlist(references: list[tuple[str, int]]) -> bytes:
    """HS_VLIST wire encoding: 4-byte count, then (UTF8-String handle, 4-byte index) pairs [RFC 3651 §2.2.4]."""
    parts = [struct.pack(">I", len(references))]
    for handle, index in references:
        raw = handle.encode()
        parts.append(struct.pack(">I", len(raw)) + raw + struct.pack(">i", index))
    return b"".join(parts)


def _decode_vlist(data: bytes) -> list[dict[str, Any]] | None:
    try:
        (count,), offset, refs = struct.unpack_from(">I", data), 4, []
        for _ in range(count):
            (length,) = struct.unpack_from(">I", data, offset)
            handle = data[offset + 4 : offset + 4 + length].decode()
            (index,) = struct.unpack_from(">i", data, offset + 4 + length)
            refs.append({"handle": handle, "index": index})
            offset += 8 + length
    except (struct.error, UnicodeDecodeError):
        return None
    return refs if offset == len(data) else None


def looks_like_binary(data: bytes) -> bool:
    """[SRC hdllib/Util.java `looksLikeBinary`]: invalid UTF-8, or a control byte outside 0x09–0x13."""
    try:
        data.decode()
    except UnicodeDecodeError:
        return True
    return _BINARY_BYTE.search(data) is not None


def _references(element: Any) -> list[tuple[str, int]]:
    if not isinstance(element, list):
        raise JavaException("com.google.gson.JsonParseException: expected an array of {handle, index}")
    refs = []
    for item in element:
        if not isinstance(item, dict) or "handle" not in item or "index" not in item:
            raise JavaException("com.google.gson.JsonParseException: expected {handle, index}")
        refs.append((_json_string(item["handle"]), _json_int(item["index"])))
    return refs


@dataclass(slots=True)
class HandleValue:
    """One value of a record. `data` holds the raw bytes the real server stores, except for `site` and
    `key` data, which are kept as the JSON given (the simulator has no binary encoder for them)."""

    index: int
    type: str
    data: bytes | tuple[str, Any]
    ttl: int | str = DEFAULT_TTL  # int: relative seconds; str: absolute expiry, ISO8601 [HANDLE_API §2.8]
    permissions: str = DEFAULT_PERMISSIONS
    timestamp: int = 0
    references: list[tuple[str, int]] = field(default_factory=list)

    @property
    def public_read(self) -> bool:
        return self.permissions[2] == "1"

    @property
    def admin_read(self) -> bool:
        return self.permissions[0] == "1"

    def same_ignoring_timestamp(self, other: HandleValue) -> bool:
        """`HandleValue.equalsIgnoreTimestamp`: an unchanged value keeps its old timestamp on rewrite."""
        return (self.index, self.type, self.data, self.ttl, self.permissions, self.references) == (
            other.index, other.type, other.data, other.ttl, other.permissions, other.references)

    @classmethod
    def from_json(cls, element: Any) -> HandleValue:
        """Parse one input value; a bad one is a Gson `JsonParseException` (400, rc 4)."""
        if not isinstance(element, dict):
            raise JavaException(f"com.google.gson.JsonParseException: not a handle value: {json.dumps(element)}")
        for key in ("index", "type", "data"):
            if key not in element:
                raise JavaException(f"com.google.gson.JsonParseException: java.lang.NullPointerException ({key})")
        value = cls(_json_int(element["index"]), _json_string(element["type"]), _data_from_json(element["data"]))
        if "permissions" in element:
            value.permissions = _value_permissions(_json_string(element["permissions"]))
        if "ttl" in element:
            ttl = element["ttl"]
            if isinstance(ttl, str):
                value.ttl = _iso(_parse_json_time(ttl))
            elif isinstance(ttl, int | float) and not isinstance(ttl, bool):
                value.ttl = int(ttl)
            else:
                raise JavaException("com.google.gson.JsonParseException: java.lang.NumberFormatException: bad ttl")
        if "timestamp" in element:
            _parse_json_time(_json_string(element["timestamp"]))  # validated like the server; then server-set
        if element.get("references") is not None:
            value.references = _references(element["references"])
        return value

    def to_json(self) -> dict[str, Any]:
        """Output key order of [SRC GsonUtility `HandleValueGsonTypeAdapter.serialize`]."""
        out: dict[str, Any] = {"index": self.index, "type": self.type, "data": self._data_json()}
        if self.permissions != DEFAULT_PERMISSIONS:
            out["permissions"] = self.permissions
        out["ttl"] = self.ttl
        if self.timestamp:
            out["timestamp"] = _iso(self.timestamp)
        if self.references:
            out["references"] = [{"handle": h, "index": i} for h, i in self.references]
        return out

    def _data_json(self) -> dict[str, Any]:
        """The output format follows the value's type, not the input format [SRC GsonUtility `serializeData`]."""
        if isinstance(self.data, tuple):
            return {"format": self.data[0], "value": self.data[1]}
        kind = ascii_upper(self.type)
        decoded = decode_admin(self.data) if kind == "HS_ADMIN" else None
        if decoded is not None:
            return {"format": "admin", "value": decoded}
        refs = _decode_vlist(self.data) if kind == "HS_VLIST" else None
        if refs is not None:
            return {"format": "vlist", "value": refs}
        if looks_like_binary(self.data):
            return {"format": "base64", "value": base64.b64encode(self.data).decode()}
        return {"format": "string", "value": self.data.decode()}

    def to_row(self) -> list[Any]:
        if isinstance(self.data, tuple):
            kind, payload = self.data
        elif looks_like_binary(self.data):
            kind, payload = "b", base64.b64encode(self.data).decode()
        else:
            kind, payload = "s", self.data.decode()
        return [self.index, self.type, kind, payload, self.ttl, self.permissions, self.timestamp,
                [list(ref) for ref in self.references]]

    @classmethod
    def from_row(cls, row: list[Any]) -> HandleValue:
        index, type_, kind, payload, ttl, permissions, timestamp, refs = row
        if kind == "s":
            data: bytes | tuple[str, Any] = payload.encode()
        elif kind == "b":
            data = base64.b64decode(payload)
        else:
            data = (kind, payload)
        return cls(index, type_, data, ttl, permissions, timestamp, [(h, i) for h, i in refs])


def _parse_json_time(text: str) -> int:
    try:
        return _parse_iso(text)
    except ValueError as exc:
        raise JavaException(f"com.google.gson.JsonParseException: java.text.ParseException: {exc}") from exc


def _value_permissions(text: str) -> str:
    """Value permissions, read from the right like the server does: a 4-char string cannot clear
    adminRead (`length() > 4`), a quirk kept on purpose [SRC GsonUtility `deserializePermissions`]."""
    if text == "*":
        return "1111"
    admin_read, admin_write, public_read, public_write = (char == "1" for char in DEFAULT_PERMISSIONS)
    if len(text) > 1:
        public_write = text[-1] == "1"
    if len(text) > 2:
        public_read = text[-2] == "1"
    if len(text) > 3:
        admin_write = text[-3] == "1"
    if len(text) > 4:
        admin_read = text[-4] == "1"
    return "".join("1" if bit else "0" for bit in (admin_read, admin_write, public_read, public_write))


def _data_from_json(element: Any) -> bytes | tuple[str, Any]:
    """`data` is a plain string (UTF-8 text) or {"format", "value"} [SRC GsonUtility `deserializeData`]."""
    if not isinstance(element, dict):
        return _json_string(element).encode()
    if "format" not in element:
        raise JavaException("com.google.gson.JsonParseException: java.lang.NullPointerException (format)")
    fmt, value = _json_string(element["format"]).lower(), element.get("value")
    if fmt == "string":
        return _json_string(value).encode()
    if fmt == "base64":
        try:
            return _lenient_base64(_json_string(value))
        except binascii.Error as exc:
            raise JavaException(f"com.google.gson.JsonParseException: {exc}") from exc
    if fmt == "hex":
        text = _json_string(value)
        if not _HEX.fullmatch(text):
            raise JavaException("com.google.gson.JsonParseException: org.apache.commons.codec.DecoderException: "
                                "Illegal hexadecimal character or odd number of characters")
        return bytes.fromhex(text)
    if fmt == "admin":
        if not isinstance(value, dict) or "handle" not in value or "index" not in value:
            raise JavaException("com.google.gson.JsonParseException: admin value needs handle and index")
        perms = _admin_perms_bits(value.get("permissions"))
        return encode_admin(_json_string(value["handle"]), _json_int(value["index"]), perms)
    if fmt == "vlist":
        return _encode_vlist(_references(value))
    if fmt in ("site", "key"):
        if not isinstance(value, dict):
            raise JavaException(f"com.google.gson.JsonParseException: {fmt} value must be a JSON object")
        return (fmt, value)
    raise JavaException(f"com.google.gson.JsonParseException: java.text.ParseException: Unexpected type {fmt}")


# --- Storage ------------------------------------------------------------------------------------------
_SCHEMA = """
CREATE TABLE IF NOT EXISTS handles (
    key TEXT PRIMARY KEY,     -- ascii_upper(handle); BINARY collation = UTF-8 byte order for listing
    handle TEXT NOT NULL,     -- the handle as first created
    vals TEXT NOT NULL        -- JSON list of HandleValue rows
);
CREATE TABLE IF NOT EXISTS prefixes (
    key TEXT PRIMARY KEY,     -- ascii_upper(prefix)
    prefix TEXT NOT NULL,     -- as given to --prefix
    admin TEXT NOT NULL       -- the admin identity handle that HS_ADMIN values of this prefix point at
);
"""


@dataclass(slots=True)
class StoredHandle:
    handle: str
    values: list[HandleValue]


def _dump_values(values: Iterable[HandleValue]) -> str:
    return json.dumps([v.to_row() for v in values], ensure_ascii=False, separators=(",", ":"))


def _load_values(text: str) -> list[HandleValue]:
    return [HandleValue.from_row(row) for row in json.loads(text)]


class Writer:
    """A connection inside a write transaction (see HandleStore.writing)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def get(self, key: str) -> StoredHandle | None:
        return _select(self.conn, key)

    def put(self, key: str, handle: str, values: list[HandleValue]) -> None:
        self.conn.execute(
            "INSERT INTO handles (key, handle, vals) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET vals = excluded.vals", (key, handle, _dump_values(values)))

    def delete(self, key: str) -> bool:
        return self.conn.execute("DELETE FROM handles WHERE key = ?", (key,)).rowcount > 0


def _select(conn: sqlite3.Connection, key: str) -> StoredHandle | None:
    row = conn.execute("SELECT handle, vals FROM handles WHERE key = ?", (key,)).fetchone()
    return None if row is None else StoredHandle(row[0], _load_values(row[1]))


def _key_range(prefix_key: str) -> tuple[str, str]:
    """Keys of handles under a prefix: from `P/` up to `P0` ('0' is the byte after '/')."""
    return prefix_key + "/", prefix_key + "0"


class HandleStore:
    """SQLite in WAL mode: readers never block; writers serialize on one lock (read-modify-write)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pool: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._write_lock = threading.Lock()
        with self._connection() as conn:
            conn.executescript(_SCHEMA)
        self._load_prefixes()

    def _load_prefixes(self) -> None:
        with self._connection() as conn:
            rows = conn.execute("SELECT key, prefix, admin FROM prefixes ORDER BY key").fetchall()
        self.homed: dict[str, tuple[str, str]] = {key: (prefix, admin) for key, prefix, admin in rows}

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=60)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = self._pool.get_nowait()
        except queue.Empty:
            conn = self._connect()
        try:
            yield conn
        finally:
            self._pool.put(conn)

    @contextmanager
    def writing(self) -> Iterator[Writer]:
        with self._write_lock, self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield Writer(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        while True:
            try:
                self._pool.get_nowait().close()
            except queue.Empty:
                return

    def get(self, key: str) -> StoredHandle | None:
        with self._connection() as conn:
            return _select(conn, key)

    def home(self, prefix: str, admin: str) -> None:
        with self.writing() as tx:
            tx.conn.execute("INSERT INTO prefixes (key, prefix, admin) VALUES (?, ?, ?) "
                            "ON CONFLICT (key) DO UPDATE SET admin = excluded.admin", (ascii_upper(prefix), prefix, admin))
        self._load_prefixes()

    def count_under(self, prefix_key: str) -> int:
        with self._connection() as conn:
            return conn.execute("SELECT count(*) FROM handles WHERE key >= ? AND key < ?",
                                _key_range(prefix_key)).fetchone()[0]

    def keys_under(self, prefix_key: str, limit: int = -1, offset: int = 0) -> list[str]:
        """Listing pages are LIMIT/OFFSET over the key order (the real server enumerates and skips)."""
        with self._connection() as conn:
            rows = conn.execute("SELECT key FROM handles WHERE key >= ? AND key < ? ORDER BY key LIMIT ? OFFSET ?",
                                (*_key_range(prefix_key), limit, offset)).fetchall()
        return [row[0] for row in rows]


# --- Data directory: certificate, initial state, bulk load, fault switch ------------------------------
def _write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def ensure_certificate(data_dir: Path) -> tuple[Path, Path]:
    """Create the self-signed certificate on first start and reuse it afterwards. Like the real one:
    subject = issuer = `CN=anonymous`, no extensions (so no SAN), valid 2000-01-01 → 9999-12-31
    [HANDLE_API §2.9]. Clients pin it with the hostname check off."""
    cert_path, key_path = data_dir / CERT_FILE, data_dir / KEY_FILE
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "anonymous")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(datetime(2000, 1, 1, tzinfo=UTC))
            .not_valid_after(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC))
            .sign(key, hashes.SHA256()))
    _write_atomically(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()), mode=0o600)
    _write_atomically(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def client_certificate_path(data_dir: str | Path, admin_handle: str) -> Path:
    """Where the client certificate of `301:admin_handle` is (its key is the server's KEY_FILE)."""
    return Path(data_dir) / CLIENT_CERT_DIR / (re.sub(r"[^A-Za-z0-9.]", "_", ascii_upper(admin_handle)) + ".pem")


def ensure_client_certificate(data_dir: Path, admin_handle: str) -> Path:
    """A self-signed client certificate with subject `UID=301:admin_handle` for the admin's HS_PUBKEY (the
    real set-up makes the same with openssl from the admin's key). The HS_PUBKEY is the server key's public
    half, so the certificate is signed with the server key."""
    path = client_certificate_path(data_dir, admin_handle)
    if path.exists():
        return path
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    key = serialization.load_pem_private_key((data_dir / KEY_FILE).read_bytes(), password=None)
    name = x509.Name([x509.NameAttribute(NameOID.USER_ID, f"{PUBKEY_INDEX}:{admin_handle}")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(datetime(2000, 1, 1, tzinfo=UTC))
            .not_valid_after(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC))
            .sign(key, hashes.SHA256()))
    path.parent.mkdir(exist_ok=True)
    _write_atomically(path, cert.public_bytes(serialization.Encoding.PEM))
    return path


def _certificate_identity(der: bytes) -> tuple[str | None, tuple[int, int] | None]:
    """A client certificate's identity (its UID, else its CN) and RSA public numbers (n, e)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    cert = x509.load_der_x509_certificate(der)
    names = (cert.subject.get_attributes_for_oid(NameOID.USER_ID)
             or cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME))
    key = cert.public_key()
    numbers = (key.public_numbers().n, key.public_numbers().e) if isinstance(key, rsa.RSAPublicKey) else None
    return (str(names[0].value) if names else None), numbers


def _jwk_numbers(jwk: Any) -> tuple[int, int] | None:
    if not isinstance(jwk, dict) or jwk.get("kty") != "RSA":
        return None

    def number(text: str) -> int:
        return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")

    return number(jwk["n"]), number(jwk["e"])


def _public_key_jwk(cert_path: Path) -> dict[str, str]:
    """The certificate's RSA public key as a JWK, for the admin handle's HS_PUBKEY (index 301). The client
    certificates in clientcerts/ carry the same key."""
    from cryptography import x509

    numbers = x509.load_pem_x509_certificate(cert_path.read_bytes()).public_key().public_numbers()

    def b64url(number: int) -> str:
        return base64.urlsafe_b64encode(number.to_bytes((number.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()

    return {"kty": "RSA", "n": b64url(numbers.n), "e": b64url(numbers.e)}


def _admin_value(admin_handle: str, now: int) -> HandleValue:
    return HandleValue(ADMIN_INDEX, "HS_ADMIN", encode_admin(admin_handle, SECKEY_INDEX, ALL_ADMIN_PERMISSIONS), timestamp=now)


def initialize(data_dir: str | Path, prefixes: Iterable[str], secret: str, admin_handle: str | None = None) -> HandleStore:
    """Prepare a data dir and return its store. Existing data is kept; a new prefix is added.

    For each prefix P the admin identity (default `P/ADMIN`, or the single `admin_handle`) holds index 100
    HS_ADMIN (itself, index 300, all permissions), 1 DESC, 300 HS_SECKEY = `secret` (permissions 1100, not
    public) and 301 HS_PUBKEY, the state the recordings start from (their README). The secret is applied on
    every start, so the one given on the command line is the one that works.
    """
    requested = [p[5:] if ascii_upper(p).startswith("0.NA/") else p for p in prefixes]
    for prefix in requested:
        if not prefix or "/" in prefix:
            raise ValueError(f"not a prefix: {prefix!r}")
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    cert_path, _ = ensure_certificate(data_dir)
    store = HandleStore(data_dir / DB_FILE)
    if admin_handle is not None and ascii_upper(prefix_of(admin_handle)) not in {
            ascii_upper(p) for p in requested} | set(store.homed):
        store.close()
        raise ValueError(f"the admin handle {admin_handle} must be under a served prefix")
    for prefix in requested:
        store.home(prefix, admin_handle or f"{prefix}/ADMIN")
    if not store.homed:
        store.close()
        raise ValueError("no prefix to serve: pass at least one --prefix")
    now = int(time.time())
    for admin in sorted({admin for _, admin in store.homed.values()}):
        ensure_client_certificate(data_dir, admin)
        with store.writing() as tx:
            record = tx.get(ascii_upper(admin))
            seckey = HandleValue(SECKEY_INDEX, "HS_SECKEY", secret.encode(), permissions="1100", timestamp=now)
            if record is None:
                tx.put(ascii_upper(admin), admin, [
                    _admin_value(admin, now),
                    HandleValue(1, "DESC", f"Admin handle for prefix {prefix_of(admin)}".encode(), timestamp=now),
                    seckey,
                    HandleValue(PUBKEY_INDEX, "HS_PUBKEY", ("key", _public_key_jwk(cert_path)), timestamp=now),
                ])
            elif not any(v.index == SECKEY_INDEX and v.same_ignoring_timestamp(seckey) for v in record.values):
                values = [v for v in record.values if v.index != SECKEY_INDEX] + [seckey]
                tx.put(ascii_upper(admin), record.handle, values)
    return store


def bulk_load(data_dir: str | Path, pairs: Iterable[tuple[str, str]]) -> int:
    """Insert (handle, url) records in one transaction, each with the default HS_ADMIN (index 100, pointing at
    its prefix's admin identity) and the URL at index 1. Existing handles are replaced. The data dir must
    already serve the prefixes (`initialize`). Safe while a simulator runs on the same dir. Returns the count."""
    store = HandleStore(Path(data_dir) / DB_FILE)
    now = int(time.time())
    admin_rows: dict[str, str] = {}
    loaded = 0

    def rows() -> Iterator[tuple[str, str, str]]:
        nonlocal loaded
        for handle, url in pairs:
            prefix_key = ascii_upper(prefix_of(handle))
            if prefix_key not in admin_rows:
                if prefix_key not in store.homed:
                    raise ValueError(f"{handle}: the prefix {prefix_of(handle)} is not served from {data_dir}")
                admin_rows[prefix_key] = json.dumps(_admin_value(store.homed[prefix_key][1], now).to_row())
            url_row = json.dumps(HandleValue(1, "URL", url.encode(), timestamp=now).to_row(), ensure_ascii=False)
            loaded += 1
            yield ascii_upper(handle), handle, f"[{admin_rows[prefix_key]},{url_row}]"

    try:
        with store.writing() as tx:
            tx.conn.executemany("INSERT OR REPLACE INTO handles (key, handle, vals) VALUES (?, ?, ?)", rows())
    finally:
        store.close()
    return loaded


def load_csv(data_dir: str | Path, csv_path: str | Path) -> int:
    """`bulk_load` from a CSV of `handle,url` rows (an optional `handle,url` header row is skipped)."""
    with open(csv_path, newline="", encoding="utf-8") as source:
        rows = (row for row in csv.reader(source) if row and row[:2] != ["handle", "url"])
        return bulk_load(data_dir, ((row[0], row[1]) for row in rows))


FAULT_MODES = ("ok", "slow", "503", "drop", "down", "shutdown",
               "nolist")  # nolist: as a server whose config.dct says "allow_list_hdls" = "no"


@dataclass(frozen=True, slots=True)
class Fault:
    """ok; slow (sleep `delay` s before answering); 503 (answer rc 3 "Server too busy"); drop (read the
    request, close without answering); down (close each new connection at once, and kept-alive ones at
    their next request); shutdown (the real server's last seconds after SIGTERM: every request that
    authenticates gets 401, with an empty body for a handle request, and a challenge naming the exception
    it met verifying the identity; reads without credentials are answered); nolist (listing handles refused
    with rc 5, as `allow_list_hdls = no` does). `until` (unix time) switches the fault off by itself."""

    mode: str = "ok"
    delay: float = 0.0
    until: float | None = None


_NO_FAULT = Fault()


def write_faults(data_dir: str | Path, mode: str, delay: float | None = None, duration: float | None = None) -> Fault:
    """Switch a (running or not) simulator's fault mode by rewriting `faults.json` atomically."""
    if mode not in FAULT_MODES:
        raise ValueError(f"unknown fault mode {mode!r}; choose from {', '.join(FAULT_MODES)}")
    if delay is not None and delay < 0 or duration is not None and duration <= 0:
        raise ValueError("delay must be >= 0 and duration > 0 seconds")
    if mode == "slow" and not delay:
        raise ValueError("the slow mode needs a delay in seconds")
    fault = Fault(mode, float(delay or 0), time.time() + duration if duration else None)
    payload = {"mode": fault.mode, "delay": fault.delay, "until": fault.until}
    _write_atomically(Path(data_dir) / FAULTS_FILE, json.dumps(payload).encode())
    return fault


def clear_faults(data_dir: str | Path) -> None:
    write_faults(data_dir, "ok")


class FaultSwitch:
    """Reads faults.json again only when its (mtime, inode, size) changes: one stat() per request."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cached: tuple[tuple[int, int, int] | None, Fault] = (None, _NO_FAULT)

    def current(self) -> Fault:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return _NO_FAULT
        signature, fault = self._cached
        if (st.st_mtime_ns, st.st_ino, st.st_size) != signature:
            try:
                raw = json.loads(self.path.read_bytes())
                fault = Fault(raw.get("mode", "ok"), float(raw.get("delay") or 0), raw.get("until"))
            except (OSError, ValueError, AttributeError):
                return fault  # half-written or broken: keep the last good switch, retry next request
            self._cached = ((st.st_mtime_ns, st.st_ino, st.st_size), fault)
        if fault.until is not None and time.time() >= fault.until:
            return _NO_FAULT
        return fault


# --- The REST API -------------------------------------------------------------------------------------
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
        """`getBooleanParameter`: present without value, `yes` or `true` [HANDLE_API §2.1]."""
        value = self.param(name)
        return value is not None and value.lower() in ("", "yes", "true")

    def strict_flag(self, name: str) -> bool:
        """`Boolean.parseBoolean`, used for overwrite and mintNewSuffix: only `true` [HANDLE_API §2.1]."""
        return (self.param(name) or "").lower() == "true"

    def indexes(self) -> list[int] | None:
        values = self.params.get("index")
        return None if not values else [_java_int(v) for v in values]


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


def _decode_path(raw: str) -> str:
    """`decodeURLIgnorePlus`: %XX decoded as UTF-8, `+` stays a plus [SRC BaseHandleRequestProcessingServlet]."""
    return unquote(raw, errors="replace")


def _has_json_entity(content_type: str | None) -> bool:
    if content_type is None:
        return False
    value = content_type.strip().lower()
    return value == "application/json" or re.match(r"application/json\s*;", value) is not None


def _scrub_callback(callback: str) -> str:
    return "".join(c if c in "_$" or c.isascii() and c.isalpha() or (i and c.isdigit()) or ord(c) >= 0xA0
                   else "_" for i, c in enumerate(callback))


# Servlet path → its Allow header [SRC HandleJsonRestApiServlet, PrefixesServlet].
_SERVLETS = {"/api/handles": "GET, HEAD, POST, PUT, DELETE, TRACE, OPTIONS",
             "/api/prefixes": "GET, HEAD, POST, DELETE, TRACE, OPTIONS"}


class HandleApi:
    """Request → response, the way the real servlets and HandleServer order their checks."""

    def __init__(self, store: HandleStore) -> None:
        self.store = store

    # Responses ----------------------------------------------------------------------------------------
    def _json(self, req: Request, status: int, obj: dict[str, Any]) -> Response:
        """JSON with the generic `pretty` and JSONP `callback` parameters [HANDLE_API §2.1]."""
        indent = 2 if req.flag("pretty") else None
        text = json.dumps(obj, ensure_ascii=False, indent=indent, separators=None if indent else (",", ":"))
        content_type = JSON_CONTENT_TYPE
        callback = req.param("callback")
        if callback is not None:
            text, content_type = f"{_scrub_callback(callback)}({text});", "application/javascript;charset=utf-8"
        return Response(status, text.encode(), [("Content-Type", content_type)])

    def _rc(self, req: Request, rc: int, handle: str | None = None, message: str | None = None) -> Response:
        """An error body: responseCode, message if any, and the request's handle if it had one [LIVE]."""
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
        # ignored [HANDLE_API §2.7, SRC StandardHandleAuthenticationFilter].
        if req.secure and authorization is not None:
            identity, error = self._authenticate(req, authorization)
            if identity is None and (error is not None or not _asks_client_certificate(authorization)):
                return self._challenge(req, Response(401), error)
            # A certificate login that fails goes on unauthenticated: a write then gets 401 / rc 402 [LIVE].
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
            # Unknown endpoint → 404 [LIVE]; HANDLE_API §2.1 says 405, the recording wins.
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
        """POST acts as GET with the parameters in a JSON body [SRC BaseHandleRequestProcessingServlet `doPost`]."""
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
            req.params[name] = [_json_string(item) for item in items]

    # Authentication -----------------------------------------------------------------------------------
    def _sessions(self, req: Request, authorization: str | None) -> Response:
        """The session API, as far as a client checks its credentials with it [TM §14.7] [LIVE]:
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

        HTTP Basic = HS_SECKEY [TM §14.6.3]: user `index:handle` percent-decoded with `+` kept, password =
        the HS_SECKEY value at that index (0 = any). `Handle clientCert="true"` = HS_PUBKEY: the TLS client
        certificate's UID (or CN) names `index:handle`, its public key must be that HS_PUBKEY [TM §14.6.2]."""
        if _asks_client_certificate(header):
            return self._authenticate_certificate(req), None
        parts = header.split()
        if len(parts) != 2 or parts[0].lower() != "basic":
            # Handle challenge-response is not simulated: such a header never authenticates, as a stale
            # session would not [SRC StandardHandleAuthenticator].
            return None, None
        try:
            raw = _lenient_base64(parts[1])
        except binascii.Error:
            return None, None
        username, colon, password = raw.partition(b":")
        if not colon:
            return None, None
        if req.shutting_down:  # seen for Basic credentials only [LIVE]
            return None, MSG_SHUTDOWN_VERIFYING
        identity = _decode_path(username.decode("utf-8", "replace"))
        index_text, sep, rest = identity.partition(":")
        if sep and index_text.isascii() and index_text.isdigit():
            index, handle = int(index_text), rest
        else:
            # Without an index the whole user is the handle. An unencoded `300:PREFIX/ADMIN` ends up here
            # as handle `300`: the real server then asks the global registry and hangs [HANDLE_API §0
            # item 4]; the simulator fails at once.
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
        identity, numbers = _certificate_identity(req.peer_certificate)
        index_text, sep, handle = (identity or "").partition(":")
        if not sep or not index_text.isdigit() or numbers is None:
            return None
        record = self.store.get(ascii_upper(handle))
        keys = [] if record is None else [
            _jwk_numbers(v.data[1]) for v in record.values
            if ascii_upper(v.type) == "HS_PUBKEY" and int(index_text) in (0, v.index) and isinstance(v.data, tuple)]
        return f"{int(index_text)}:{handle}" if numbers in keys else None

    def _challenge(self, req: Request, response: Response, error: str | None) -> Response:
        """A 401 gets the WWW-Authenticate challenges over HTTPS and becomes 403 over plain HTTP, where no
        authentication is possible [SRC StandardHandleAuthenticationFilter `addAuthenticateHeaders`] [LIVE]."""
        if not req.secure:
            response.status = 403
            return response
        # Basic is offered unless the client used another scheme, or is a browser script (XMLHttpRequest),
        # for which a Basic challenge would pop up a login dialog [SRC `requestMayWantBasicAuth`].
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
        """[TM §14.5.1, SRC HandleServer `doResolution`, `checkReadAccess`]."""
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
            # Nothing matched: 200 with rc 200 and an empty list [LIVE].
            return self._json(req, 200, {"responseCode": RC_VALUES_NOT_FOUND, "values": [], "handle": handle})
        return self._json(req, 200, {"responseCode": RC_SUCCESS, "handle": handle,
                                     "values": [v.to_json() for v in values]})

    def _list_handles(self, req: Request, prefix: str) -> Response:
        """[TM §14.5.4, SRC HandleServer `doListHandles`, servlets/ListCallback]: homed check, then auth."""
        if not req.listing_allowed:  # checked first: before the homed check and authentication [LIVE]
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
        # with server_admin_full_access = yes, the hdl-setup-server default [HANDLE_API §2.7].
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
        return (-1 if page is None else _java_int(page)), (-1 if page_size is None else _java_int(page_size))

    def _prefixes(self, req: Request, path_info: str) -> Response:
        """GET /api/prefixes lists the homed prefixes as `0.NA/P` [SRC PrefixesServlet] [LIVE]."""
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
        """[TM §14.5.2, SRC HandleJsonRestApiServlet `doPut`, `getCreateOrAddRequest`]."""
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
            if other is not None and ascii_upper(_json_string(other)) != ascii_upper(handle):
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
        """CreateHandle [SRC HandleServer `doCreateHandle`]: mint, homed, indexes, existence, then auth."""
        target = handle
        if mint:
            # The minted suffix is appended to the path as given: `PREFIX/` → `PREFIX/<uuid4>` [LIVE 10].
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
                # The existence check runs before authentication [SRC HandleServer `doCreateHandle`].
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
        """AddValue [SRC HandleServer `doAddValue`]: never creates; 200 if an index was replaced, else 201."""
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
            # The server merges old and new values in index order [SRC HandleServer `doAddValue`].
            tx.put(key, existing.handle, [old[index] for index in sorted(old)])
        return self._json(req, 200 if shared else 201, {"responseCode": RC_SUCCESS, "handle": handle})

    # DELETE /api/handles ------------------------------------------------------------------------------
    def _delete(self, req: Request, path_info: str) -> Response:
        """[TM §14.5.3, SRC HandleServer `doDeleteHandle`, `doRemoveValue`]. No tombstone is kept."""
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

    # [PROXY] resolver ---------------------------------------------------------------------------------
    def _proxy(self, req: Request) -> Response:
        """`GET /PREFIX/SUFFIX` → 302 to the lowest-index URL value; `?noredirect` → the values as HTML;
        unknown handle → 404 page [HANDLE_API §5]. Only public values are shown, as to anyone."""
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
        urls = [v for v in values if ascii_upper(v.type) == "URL" and isinstance(v.data, bytes)]
        if urls and req.param("noredirect") is None:
            location = quote(urls[0].data.decode("utf-8", "replace"), safe="!#$%&'()*+,/:;=?@[]~")
            return Response(302, b"", [("Location", location), ("Content-Type", HTML_CONTENT_TYPE)])
        rows = "".join(
            f"<tr><td>{v.index}</td><td>{html.escape(v.type)}</td>"
            f"<td>{html.escape(str(v.to_json()['data']['value']))}</td><td>{_iso(v.timestamp)}</td></tr>"
            for v in values)
        return _html(200, f"Handle {handle}", "<table><tr><th>Index</th><th>Type</th><th>Data</th>"
                                              f"<th>Timestamp</th></tr>{rows}</table>")


def _asks_client_certificate(authorization: str) -> bool:
    """`Authorization: Handle clientCert="true"`: log in with the TLS client certificate [TM §14.6.2]."""
    scheme, _, params = authorization.partition(" ")
    return scheme.lower() == "handle" and re.search(r'clientCert\s*=\s*"true"', params, re.IGNORECASE) is not None


def _html(status: int, title: str, content: str) -> Response:
    page = (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title></head>"
            f"<body><h1>{html.escape(title)}</h1>{content}</body></html>")
    return Response(status, page.encode(), [("Content-Type", HTML_CONTENT_TYPE)])


def _matches(value: HandleValue, indexes: list[int] | None, types: list[str] | None) -> bool:
    """Index and type filters combine as OR; a type ending in `.` matches its subtypes [HANDLE_API §2.2]."""
    if not indexes and not types:
        return True
    if indexes and value.index in indexes:
        return True
    value_type = ascii_upper(value.type)
    return any(value_type.startswith(ascii_upper(t)) if t.endswith(".") else value_type == ascii_upper(t)
               for t in types or ())


# --- HTTP server --------------------------------------------------------------------------------------
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
                # Port unification: TLS records start with 0x16 (handshake) [HANDLE_API §1]. Peeking and the
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
            # RC 3 "Server too busy" maps to 503 [HANDLE_API §2.6].
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
        # HEAD is GET without the body [SRC BaseHandleRequestProcessingServlet `service`].
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
    if direction == "read" and msg_type == ssl._TLSMessageType.CLIENT_HELLO:  # noqa: SLF001
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
    tls._msg_callback = _note_client_hello  # noqa: SLF001
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m handles.handle_server.simulator",
                                     description="Simulate a HANDLE.NET 9.3.1 server's JSON REST API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--data-dir", default="var/simulator")
    parser.add_argument("--prefix", action="append", default=[], help="a prefix to serve (repeatable)")
    parser.add_argument("--admin-handle", help="the admin identity handle (default PREFIX/ADMIN per prefix)")
    parser.add_argument("--secret", help=f"the admin's HS_SECKEY (default: ${SECRET_ENV})")
    parser.add_argument("--load-csv", help="bulk-load handle,url rows before serving")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    secret = args.secret or os.environ.get(SECRET_ENV)
    if not secret:
        parser.error(f"no secret: pass --secret or set {SECRET_ENV}")
    try:
        serve(args.data_dir, args.prefix, secret, host=args.host, port=args.port, admin_handle=args.admin_handle,
              csv_path=args.load_csv, verbose=args.verbose, announce=lambda line: print(line, flush=True))
    except (ValueError, OSError) as exc:
        print(f"handle simulator: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
