"""Keyset pagination: a cursor names the last row a page showed by its sort key, so the next page is
`WHERE key > cursor ORDER BY key LIMIT n` and page 2,000 of a million rows costs what page 1 costs.

One codec for every list that pages this way. A cursor is the sort key's values as JSON, base64url
without padding: opaque to clients, readable when debugging. Decoding checks every value against the
key's types, so a garbled, tampered or foreign cursor is refused with InvalidCursor (a 400 with a
reason at the edge), never handed to the database (where a NUL or a wrong type would be a 500).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.dateparse import parse_datetime

MAX_CURSOR = 2000  # characters: longer than any key we give out (a suffix is at most 255 characters)
BASE64URL = re.compile(r"^[A-Za-z0-9_-]*$")
BIGINT = range(-(2**63), 2**63)
KeyValue = int | str | datetime


class InvalidCursor(ValueError):
    """A cursor this list did not give out: garbled, tampered with, or from another sort order."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"The cursor is not one this list gave out ({detail}); start again without it.")


def _type_of(model: type[models.Model], name: str) -> type:
    field = model._meta.pk if name == "pk" else model._meta.get_field(name)
    if isinstance(field, models.ForeignKey):
        field = field.target_field
    if isinstance(field, models.DateTimeField):
        return datetime
    if isinstance(field, models.IntegerField | models.AutoField):
        return int
    if isinstance(field, models.CharField | models.TextField):
        return str
    raise TypeError(f"A keyset cannot page on {model.__name__}.{name} ({type(field).__name__}).")


@dataclass(frozen=True)
class Keyset:
    """A sort order that pages by keyset: the fields as order_by() takes them ("-updated_at", "pk"), each
    with the type of its values. The last field must be unique (the primary key) so the order is total."""

    order: tuple[str, ...]
    types: tuple[type, ...]

    @classmethod
    def of(cls, model: type[models.Model], order: Sequence[str]) -> Keyset:
        return cls(tuple(order), tuple(_type_of(model, field.lstrip("-")) for field in order))

    @property
    def names(self) -> list[str]:
        return [field.lstrip("-") for field in self.order]

    def reversed(self) -> Keyset:
        """The same key read backwards (the page before a cursor)."""
        return Keyset(tuple(f[1:] if f.startswith("-") else f"-{f}" for f in self.order), self.types)

    def key(self, row: Any) -> list[KeyValue]:
        """A row's values of the key (a model instance, or anything with those attributes)."""
        return [getattr(row, name) for name in self.names]

    def after(self, values: Sequence[KeyValue]) -> Q:
        """Rows after `values` in this order: (a > x) | (a = x & b > y) | ..., each in its direction."""
        condition = Q(pk__in=[])
        for i, field in enumerate(self.order):
            step = Q(**{f"{field.lstrip('-')}__{'lt' if field.startswith('-') else 'gt'}": values[i]})
            for name, value in zip(self.names[:i], values[:i], strict=True):
                step &= Q(**{name: value})
            condition |= step
        return condition

    # --- The codec --------------------------------------------------------------------------------------
    def encode(self, values: Sequence[KeyValue]) -> str:
        if len(values) != len(self.types):
            raise ValueError(f"A key of {len(self.types)} values, not {len(values)}.")
        plain = [_plain(value, kind) for value, kind in zip(values, self.types, strict=True)]
        text = json.dumps(plain, separators=(",", ":"), ensure_ascii=True)
        return base64.urlsafe_b64encode(text.encode("ascii")).decode("ascii").rstrip("=")

    def encode_row(self, row: Any) -> str:
        return self.encode(self.key(row))

    def decode(self, cursor: str) -> list[KeyValue]:
        """The key values of a cursor this keyset encoded; InvalidCursor for anything else."""
        if not isinstance(cursor, str) or len(cursor) > MAX_CURSOR or not BASE64URL.match(cursor):
            raise InvalidCursor("not base64url text of a sensible length")
        try:
            raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
            values = json.loads(raw.decode("ascii"))
        except (ValueError, binascii.Error) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise InvalidCursor("not an encoded key") from exc
        if not isinstance(values, list) or len(values) != len(self.types):
            raise InvalidCursor(f"not a key of {len(self.types)} values")
        return [_typed(value, kind, name) for value, kind, name in zip(values, self.types, self.names, strict=True)]


def _plain(value: KeyValue, kind: type) -> int | str:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"A key value {value!r} is not a {kind.__name__}.")
    if isinstance(value, datetime):
        # In UTC: every offset then reads back exactly (parse_datetime knows no seconds in an offset).
        return value.astimezone(UTC).isoformat() if value.tzinfo else value.isoformat()
    return value


def _typed(value: Any, kind: type, name: str) -> KeyValue:
    """A decoded JSON value as a value of the key's field, or InvalidCursor."""
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool) and value in BIGINT:
            return value
    elif kind is str:
        # NUL and lone surrogates are no text PostgreSQL stores: no row has them, and sending one fails.
        if isinstance(value, str) and "\x00" not in value and _is_text(value):
            return value
    elif kind is datetime and isinstance(value, str):
        try:
            when = parse_datetime(value)
        except ValueError:  # shaped like a date, but none (2026-02-31)
            when = None
        if when is not None and (when.tzinfo is not None) == settings.USE_TZ:
            return when
    raise InvalidCursor(f"{name} is not a {kind.__name__}")


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
