"""Handle values as the simulator holds them: the JSON codecs of the REST API, the binary HS_ADMIN and
HS_VLIST encodings, and the Java exceptions the real server answers malformed values with."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ADMIN_INDEX = 100
SECKEY_INDEX = 300
PUBKEY_INDEX = 301
ALL_ADMIN_PERMISSIONS = 0xFFF  # the 12 HS_ADMIN permission bits, "111111111111" in JSON
DEFAULT_TTL = 86400
DEFAULT_PERMISSIONS = "1110"  # adminRead adminWrite publicRead publicWrite (docs/handle-server.md §5)

_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_JAVA_INT = re.compile(r"[+-]?[0-9]+")
_BINARY_BYTE = re.compile(rb"[\x00-\x08\x14-\x1f\x7f]")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")


def ascii_upper(text: str) -> str:
    """Upper-case ASCII letters only: the server folds `a`→`A` but never `é`→`É` (docs/handle-server.md §1)."""
    return text.translate(_ASCII_UPPER)


def prefix_of(handle: str) -> str:
    """The prefix is everything before the first `/` (docs/handle-server.md §1); a slashless handle is all prefix."""
    return handle.partition("/")[0]


def iso_time(seconds: int) -> str:
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


def java_int(text: str) -> int:
    """`Integer.parseInt`: optional sign, ASCII digits, 32-bit range."""
    if not _JAVA_INT.fullmatch(text) or not -(2**31) <= int(text) < 2**31:
        raise _number_format(text)
    return int(text)


# --- Handle values (docs/handle-server.md §5) -------------------------------------
def json_string(element: Any) -> str:
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
    return java_int(str(int(element)) if isinstance(element, int | float) else element)


def lenient_base64(text: str) -> bytes:
    """commons-codec `decodeBase64`: skips characters outside the alphabet, accepts URL-safe and no padding."""
    cleaned = re.sub(r"[^A-Za-z0-9+/\-_]", "", text).translate(str.maketrans("-_", "+/"))
    if len(cleaned) % 4 == 1:  # a lone trailing character carries no whole byte
        cleaned = cleaned[:-1]
    return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4))


def _admin_perms_bits(element: Any) -> int:
    """JSON admin permissions → bit i = perms[i] (0 = add handle ... 11 = list handles) (docs/handle-server.md §5).

    Accepts the string form (rightmost char = bit 0), `"*"`/`true` (all), a number, or an array of truthy
    values in bit order.
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
    """Binary data: invalid UTF-8, or a control byte outside 0x09–0x13."""
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
        refs.append((json_string(item["handle"]), _json_int(item["index"])))
    return refs


@dataclass(slots=True)
class HandleValue:
    """One value of a record. `data` holds the raw bytes the real server stores, except for `site` and
    `key` data, which are kept as the JSON given (the simulator has no binary encoder for them)."""

    index: int
    type: str
    data: bytes | tuple[str, Any]
    ttl: int | str = DEFAULT_TTL  # int: relative seconds; str: absolute expiry, ISO8601 (docs/handle-server.md §5)
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
        value = cls(_json_int(element["index"]), json_string(element["type"]), _data_from_json(element["data"]))
        if "permissions" in element:
            value.permissions = _value_permissions(json_string(element["permissions"]))
        if "ttl" in element:
            ttl = element["ttl"]
            if isinstance(ttl, str):
                value.ttl = iso_time(_parse_json_time(ttl))
            elif isinstance(ttl, int | float) and not isinstance(ttl, bool):
                value.ttl = int(ttl)
            else:
                raise JavaException("com.google.gson.JsonParseException: java.lang.NumberFormatException: bad ttl")
        if "timestamp" in element:
            _parse_json_time(json_string(element["timestamp"]))  # validated like the server; then server-set
        if element.get("references") is not None:
            value.references = _references(element["references"])
        return value

    def to_json(self) -> dict[str, Any]:
        """The key order in which the server writes a value."""
        out: dict[str, Any] = {"index": self.index, "type": self.type, "data": self._data_json()}
        if self.permissions != DEFAULT_PERMISSIONS:
            out["permissions"] = self.permissions
        out["ttl"] = self.ttl
        if self.timestamp:
            out["timestamp"] = iso_time(self.timestamp)
        if self.references:
            out["references"] = [{"handle": h, "index": i} for h, i in self.references]
        return out

    def _data_json(self) -> dict[str, Any]:
        """The output format follows the value's type, not the input format."""
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
    adminRead (`length() > 4`), a quirk kept on purpose."""
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
    """`data` is a plain string (UTF-8 text) or {"format", "value"}."""
    if not isinstance(element, dict):
        return json_string(element).encode()
    if "format" not in element:
        raise JavaException("com.google.gson.JsonParseException: java.lang.NullPointerException (format)")
    fmt, value = json_string(element["format"]).lower(), element.get("value")
    if fmt == "string":
        return json_string(value).encode()
    if fmt == "base64":
        try:
            return lenient_base64(json_string(value))
        except binascii.Error as exc:
            raise JavaException(f"com.google.gson.JsonParseException: {exc}") from exc
    if fmt == "hex":
        text = json_string(value)
        if not _HEX.fullmatch(text):
            raise JavaException("com.google.gson.JsonParseException: org.apache.commons.codec.DecoderException: "
                                "Illegal hexadecimal character or odd number of characters")
        return bytes.fromhex(text)
    if fmt == "admin":
        if not isinstance(value, dict) or "handle" not in value or "index" not in value:
            raise JavaException("com.google.gson.JsonParseException: admin value needs handle and index")
        perms = _admin_perms_bits(value.get("permissions"))
        return encode_admin(json_string(value["handle"]), _json_int(value["index"]), perms)
    if fmt == "vlist":
        return _encode_vlist(_references(value))
    if fmt in ("site", "key"):
        if not isinstance(value, dict):
            raise JavaException(f"com.google.gson.JsonParseException: {fmt} value must be a JSON object")
        return (fmt, value)
    raise JavaException(f"com.google.gson.JsonParseException: java.text.ParseException: Unexpected type {fmt}")
