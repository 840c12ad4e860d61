"""The API's reads: QuerySets over our database (the Handle server is asked only by resolve and the
remote listing). Lists use keyset paging, so page 5,000 costs what page 1 does; the ArchivesSpace
lookups are compiled once and prepared (CompiledLookup)."""

from __future__ import annotations

import base64
import binascii
import itertools
import re
import threading
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Q, QuerySet
from django.utils.dateparse import parse_datetime
from psycopg import pq
from psycopg.adapt import Transformer
from psycopg.errors import error_from_result

from handles.api import token_cache
from handles.api.errors import ApiError
from handles.models import Asset, Handle, Prefix
from handles.validators import ascii_upper

LIVE = (Handle.Status.PENDING, Handle.Status.ACTIVE)
HandleLike = TypeVar("HandleLike")


def handles() -> QuerySet[Handle]:
    return Handle.objects.select_related("prefix", "asset")


def visible(queryset: QuerySet[Handle], prefix_ids: Collection[int] | None) -> QuerySet[Handle]:
    return queryset if prefix_ids is None else queryset.filter(prefix_id__in=prefix_ids)


def citation_order(rows: Iterable[HandleLike]) -> list[HandleLike]:
    """The handle to cite first: the primary one, then live ones, then the oldest. Sorted here, not in
    SQL: an asset has a few handles, and the lookups stay cheap to build and plan."""
    return sorted(rows, key=lambda h: (not h.is_primary, h.status not in LIVE, h.pk))


def prefix_named(name: str) -> Prefix | None:
    return Prefix.objects.filter(prefix__iexact=name).first()


def default_prefix() -> Prefix | None:
    """The default prefix (at most one: a unique constraint). Outside a transaction, where what we read is
    committed, each process remembers it for HANDLES_API_TOKEN_CACHE_SECONDS as it remembers tokens (a
    create call then needs no query for it); saving or deleting a prefix in this process forgets it."""
    if connection.in_atomic_block:
        return next(iter(Prefix.objects.filter(is_default=True).order_by()[:1]), None)
    prefix = token_cache.get_default_prefix()
    if prefix is None:
        prefix = next(iter(Prefix.objects.filter(is_default=True).order_by()[:1]), None)
        if prefix is not None:
            token_cache.put_default_prefix(prefix)
    return prefix


def handle_named(prefix: str, suffix: str) -> Handle | None:
    # Unique per prefix: no ORDER BY to build and plan.
    return next(iter(handles().by_name(prefix, suffix).order_by()[:1]), None)


def asset_named(source_system: str, external_id: str) -> Asset | None:
    return Asset.objects.filter(source_system=source_system, external_id=external_id).first()


def handles_of_asset(asset: Asset, prefix_ids: Collection[int] | None) -> list[Handle]:
    return citation_order(visible(handles().filter(asset=asset), prefix_ids))


# --- ArchivesSpace lookups: the hot path, compiled once and prepared per connection ----------------------
class _ConnectionState:
    """What the lookups keep per PostgreSQL connection: the statements prepared on it, and the row loader
    (its loaders follow the connection's time zone). Per thread, as Django's connections are."""

    def __init__(self, raw: psycopg.Connection) -> None:
        self.raw = raw
        self.prepared: set[bytes] = set()
        self.loader = Transformer(raw)


_states = threading.local()


def _state_of(raw: psycopg.Connection) -> _ConnectionState:
    state = getattr(_states, "state", None)
    if state is None or state.raw is not raw:  # a new connection: nothing is prepared on it yet
        state = _states.state = _ConnectionState(raw)
    return state


def _result(pgconn: pq.abc.PGconn, result: pq.abc.PGresult, expected: pq.ExecStatus) -> pq.abc.PGresult:
    if result.status == expected:
        return result
    if pgconn.status == pq.ConnStatus.BAD:  # lost (a database restart): rows() tries a new connection
        raise psycopg.OperationalError(f"the connection was lost: {pq.error_message(pgconn)}")
    raise error_from_result(result, encoding="utf-8")


def _param(value: Any) -> bytes | None:
    """A parameter in PostgreSQL's text form. NUL cannot be sent in text form (libpq would cut the value
    there); the lookup forms refuse it, so meeting one here is a bug."""
    if value is None:
        return None
    if isinstance(value, bool):
        return b"true" if value else b"false"
    text = str(value).encode("utf-8")
    if b"\x00" in text:
        raise ValueError("A lookup value contains NUL.")
    return text


_statement_numbers = itertools.count(1)


class CompiledLookup:
    """A QuerySet compiled to SQL once per process, prepared once per PostgreSQL connection, and run
    through libpq directly.

    Django builds a QuerySet's SQL on every call (about 0.5 ms of CPU) and PostgreSQL plans it on every
    execution (about 0.25 ms): more than all the rest of an ArchivesSpace lookup, which the API must
    answer at half the speed of a bare Django view. psycopg's cursor then adds some 20 us per execution
    around one libpq call; the lookups make that call themselves (psycopg.pq, psycopg's public libpq
    interface) and read the binary rows with psycopg's own loaders. The QuerySet stays the one
    definition of the query; this only skips building, planning and wrapping it again.
    HANDLES_API_PREPARED_LOOKUPS=0 keeps the compiling but not the preparing (PgBouncer before 1.21 in
    transaction mode cannot keep prepared statements). Elsewhere (SQLite in development) the QuerySet
    runs as usual.
    """

    def __init__(self, build: Callable[..., QuerySet]) -> None:
        self.build = build  # called with the lookup's values; must pass them through unchanged
        self.name = f"handles_lookup_{next(_statement_numbers)}".encode()
        self._compiled: tuple[bytes, list[int | None], list[Any]] | None = None

    def rows(self, *values: str) -> list[tuple[Any, ...]]:
        db = connections[DEFAULT_DB_ALIAS]  # once: each `connection.x` is a lookup in a context-local
        if db.vendor != "postgresql":
            return list(self.build(*values))
        sql, params = self._sql_and_params(values)
        with db.wrap_database_errors:
            db.ensure_connection()
            if not db.autocommit:
                # In a transaction (never so in the API's views): psycopg must open it with its BEGIN, as
                # for any statement, and the ORM's cursor does that.
                return list(self.build(*values))
            try:
                return self._fetch(db, sql, params)
            except psycopg.OperationalError:
                # A connection that died since the last request (database restarted). Instead of Django's
                # health check (a SELECT 1 before every request), a read is tried again once, on a new one.
                db.close()
                db.ensure_connection()
                return self._fetch(db, sql, params)

    def _fetch(self, db: BaseDatabaseWrapper, sql: bytes, params: list[bytes | None]) -> list[tuple[Any, ...]]:
        raw = db.connection
        pgconn = raw.pgconn
        state = _state_of(raw)
        if not settings.HANDLES_API_PREPARED_LOOKUPS:
            result = pgconn.exec_params(sql, params, result_format=pq.Format.BINARY)
        else:
            if self.name not in state.prepared:
                _result(pgconn, pgconn.prepare(self.name, sql), pq.ExecStatus.COMMAND_OK)
                state.prepared.add(self.name)
            result = pgconn.exec_prepared(self.name, params, result_format=pq.Format.BINARY)
        _result(pgconn, result, pq.ExecStatus.TUPLES_OK)
        # Binary rows: psycopg's C loaders read timestamps a few times faster than Django's text loader,
        # in the session's time zone, which Django sets to the one its own loader uses.
        state.loader.set_pgresult(result)
        rows = state.loader.load_rows(0, result.ntuples, tuple)
        db.health_check_done = True  # the connection just answered: Django need not check it again
        return rows

    def _sql_and_params(self, values: tuple[str, ...]) -> tuple[bytes, list[bytes | None]]:
        if self._compiled is None:
            # A lower-case letter in each marker: a QuerySet that folds or otherwise changes a value (so the
            # SQL would get the raw value at run time) loses its marker and is refused below.
            markers = [f"\x00m{i}\x00" for i in range(len(values))]
            sql, template = self.build(*markers).query.sql_with_params()
            slots = [markers.index(p) if isinstance(p, str) and p in markers else None for p in template]
            if sorted(s for s in slots if s is not None) != list(range(len(values))):
                raise ImproperlyConfigured("A compiled lookup's QuerySet must use each value once, unchanged.")
            if any(slot is None and not isinstance(fixed, str | int | None)
                   for slot, fixed in zip(slots, template, strict=True)):
                raise ImproperlyConfigured("A compiled lookup's fixed parameters must be text, numbers or None.")
            self._compiled = (_numbered(sql).encode("utf-8"), slots, list(template))
        sql, slots, template = self._compiled
        return sql, [_param(values[slot] if slot is not None else fixed)
                     for slot, fixed in zip(slots, template, strict=True)]


def _numbered(sql: str) -> str:
    """Django's placeholders (%s, and %% for a literal %) as PostgreSQL's ($1, $2 ...)."""
    numbers = itertools.count(1)
    return re.sub(r"%[s%]", lambda m: "%" if m[0] == "%%" else f"${next(numbers)}", sql)


LOOKUP_FIELDS = ("id", "suffix", "target_url", "status", "is_primary", "created_at", "updated_at", "version",
                 "synced_version", "prefix_id", "prefix__prefix", "asset_id", "asset__source_system",
                 "asset__external_id", "asset__title", "asset__url", "asset__state", "asset__created_at",
                 "asset__updated_at")
MAX_URL_MATCHES = 1000


@dataclass(frozen=True, slots=True)
class LookupPrefix:
    pk: int
    prefix: str


@dataclass(frozen=True, slots=True)
class LookupAsset:
    pk: int
    source_system: str
    external_id: str
    title: str
    url: str
    state: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class LookupHandle:
    """A lookup's row with the attributes of a Handle that the representations read: a fraction of the
    cost of three model instances on the hot path. The tests compare both answers."""

    pk: int
    suffix: str
    target_url: str
    status: str
    is_primary: bool
    created_at: datetime
    updated_at: datetime
    version: int
    synced_version: int
    prefix: LookupPrefix
    asset: LookupAsset | None

    @property
    def full_handle(self) -> str:
        return f"{self.prefix.prefix}/{self.suffix}"

    @property
    def in_sync(self) -> bool:
        return self.synced_version == self.version

    @property
    def asset_id(self) -> int | None:
        return self.asset.pk if self.asset else None


def _from_row(row: tuple[Any, ...]) -> LookupHandle:
    (pk, suffix, target_url, status, is_primary, created_at, updated_at, version, synced_version, prefix_id,
     prefix, asset_id, *asset_fields) = row
    asset = LookupAsset(asset_id, *asset_fields) if asset_id is not None else None
    return LookupHandle(pk, suffix, target_url, status, is_primary, created_at, updated_at, version, synced_version,
                        LookupPrefix(prefix_id, prefix), asset)


def _visible_rows(rows: list[tuple[Any, ...]], prefix_ids: Collection[int] | None) -> list[LookupHandle]:
    return [_from_row(row) for row in rows if prefix_ids is None or row[9] in prefix_ids]  # row[9]: prefix_id


# HandleQuerySet.by_name, with the suffix folded by the caller (a compiled query cannot fold it).
_BY_NAME = CompiledLookup(lambda prefix, suffix_key: Handle.objects.filter(
    prefix__prefix__iexact=prefix, suffix_key=suffix_key).order_by().values_list(*LOOKUP_FIELDS)[:1])
_OF_ASSET = CompiledLookup(lambda source_system, external_id: Handle.objects.filter(
    asset__source_system=source_system, asset__external_id=external_id).order_by().values_list(*LOOKUP_FIELDS))
_WITH_URL = CompiledLookup(lambda url: Handle.objects.filter(target_url=url).order_by("pk")
                           .values_list(*LOOKUP_FIELDS)[:MAX_URL_MATCHES])


def lookup_by_name(prefix: str, suffix: str) -> LookupHandle | None:
    found = _visible_rows(_BY_NAME.rows(prefix, ascii_upper(suffix)), None)
    return found[0] if found else None


def lookup_of_asset(source_system: str, external_id: str,
                    prefix_ids: Collection[int] | None) -> list[LookupHandle]:
    return citation_order(_visible_rows(_OF_ASSET.rows(source_system, external_id), prefix_ids))


def lookup_with_url(url: str, prefix_ids: Collection[int] | None) -> list[LookupHandle]:
    """At most MAX_URL_MATCHES handles (the oldest), of those this caller may see."""
    return citation_order(_visible_rows(_WITH_URL.rows(url), prefix_ids))


# --- Local listing (keyset paging) ----------------------------------------------------------------
@dataclass(frozen=True)
class Position:
    """Where a page ended: the last row's id, and its updated_at when listing by change time."""

    id: int
    updated_at: datetime | None = None

    def encode(self) -> str:
        text = f"{self.id}" if self.updated_at is None else f"{self.id}@{self.updated_at.isoformat()}"
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str, *, by_change: bool) -> Position:
        try:
            text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
            ident, _, when = text.partition("@")
            position = cls(int(ident), parse_datetime(when) if when else None)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            position = None
        if position is None or not 0 <= position.id < 2**63 or (position.updated_at is None) == by_change:
            raise ApiError(400, "invalid_cursor", "The cursor is not one this list gave out; start again without it.")
        return position


def handles_page(*, prefix: Prefix | None, status: str, asset_source: str, external_id: str,
                 changed_since: datetime | None, prefix_ids: Collection[int] | None, after: Position | None,
                 limit: int) -> tuple[list[Handle], Position | None]:
    """One page of our handles in a stable order: by id, or by (updated_at, id) with changed_since, so a
    client that syncs changes sees each change once per page walk. Returns the rows and the next position."""
    queryset = visible(handles(), prefix_ids)
    if prefix is not None:
        queryset = queryset.filter(prefix=prefix)
    if status:
        queryset = queryset.filter(status=status)
    if asset_source:
        queryset = queryset.filter(asset__source_system=asset_source)
    if external_id:
        queryset = queryset.filter(asset__external_id=external_id)
    if changed_since is not None:
        queryset = queryset.filter(updated_at__gte=changed_since).order_by("updated_at", "pk")
        if after is not None:
            queryset = queryset.filter(Q(updated_at__gt=after.updated_at) | Q(updated_at=after.updated_at,
                                                                               pk__gt=after.id))
    else:
        queryset = queryset.order_by("pk")
        if after is not None:
            queryset = queryset.filter(pk__gt=after.id)
    rows = list(queryset[: limit + 1])
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last = rows[-1]
    return rows, Position(last.pk, last.updated_at if changed_since is not None else None)
