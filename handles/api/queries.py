"""The API's reads: QuerySets over our database (the Handle server is asked only by resolve and the
remote listing). Lists use keyset paging, so page 5,000 costs what page 1 does; the ArchivesSpace
lookups are one constant SQL statement each, prepared once per connection (see their section). The list of
handles selects with the one handle filter (handles.desk.filters) and pages with the one keyset codec
(handles.keyset)."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any, TypeVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, OperationalError, connection, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import QuerySet

from handles.api import token_cache
from handles.desk.filters import ApiSelection
from handles.models import Asset, Handle, HandleQuerySet, Prefix
from handles.validators import ascii_upper

LIVE = (Handle.Status.PENDING, Handle.Status.ACTIVE)
HandleLike = TypeVar("HandleLike", bound="Handle | LookupHandle")


def handles() -> HandleQuerySet:
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


# --- ArchivesSpace lookups: the hot path -----------------------------------------------------------
# Each lookup is one constant SQL statement run through Django's cursor, so it shows in
# CaptureQueriesContext, the debug toolbar and database tracing like any query, and Django builds no
# QuerySet per request. On PostgreSQL it runs on the "lookups" alias (handles_project/settings.py): the same
# database, with psycopg's server-side binding and automatic prepared statements, so PostgreSQL plans each
# statement once per connection, not per request. The QuerySets that say the same (handles_of_asset,
# handle_named) are what the tests compare the answers with, on PostgreSQL and on SQLite.
LOOKUPS_DB = "lookups"
MAX_URL_MATCHES = 1000

# Timestamps are read as text and parsed by datetime.fromisoformat, a few times cheaper than psycopg's
# loader for them under Django (a Python subclass that sets the time zone). PostgreSQL writes them in ISO
# form with their offset (the DateStyle that psycopg itself needs); SQLite keeps them as UTC text without one.
_SELECT = """SELECT h.id, h.suffix, h.target_url, h.status, h.is_primary, CAST(h.created_at AS TEXT),
 CAST(h.updated_at AS TEXT), h.version, h.synced_version, h.prefix_id, p.prefix, h.asset_id, a.source_system,
 a.external_id, a.title, a.url, a.state, CAST(a.created_at AS TEXT), CAST(a.updated_at AS TEXT)
FROM handles_handle h INNER JOIN handles_prefix p ON p.id = h.prefix_id"""
# HandleQuerySet.by_name, with the suffix folded by the caller (ascii_upper), so the value is bound as given.
BY_NAME_SQL = f"""{_SELECT} LEFT OUTER JOIN handles_asset a ON a.id = h.asset_id
WHERE UPPER(p.prefix) = UPPER(%s) AND h.suffix_key = %s LIMIT 1"""
OF_ASSET_SQL = f"""{_SELECT} INNER JOIN handles_asset a ON a.id = h.asset_id
WHERE a.source_system = %s AND a.external_id = %s"""
WITH_URL_SQL = f"""{_SELECT} LEFT OUTER JOIN handles_asset a ON a.id = h.asset_id
WHERE h.target_url = %s ORDER BY h.id LIMIT {MAX_URL_MATCHES}"""


def lookup_database() -> BaseDatabaseWrapper:
    """The connection a lookup runs on. Inside a transaction on the default connection (never so in the
    API's views) the lookup reads within it, so it sees what the transaction wrote; without PostgreSQL
    (SQLite in development) there is only the default connection."""
    default = connections[DEFAULT_DB_ALIAS]
    if default.in_atomic_block or LOOKUPS_DB not in settings.DATABASES:
        return default
    return connections[LOOKUPS_DB]


def _lookup(sql: str, params: tuple[str, ...], prefix_ids: Collection[int] | None) -> list[LookupHandle]:
    db = lookup_database()
    try:
        rows = _fetch(db, sql, params)
    except OperationalError:
        # A connection that died since the last request (the database restarted). Instead of Django's health
        # check (a SELECT 1 before every request; the lookups alias has it off), a read is tried again once,
        # on a new connection. Any other failure is raised as it is.
        if db.in_atomic_block or (db.connection is not None and db.is_usable()):
            raise
        db.close()
        rows = _fetch(db, sql, params)
    # The caller's prefixes are applied here, not in SQL: each statement stays one text, prepared once.
    return [_from_row(row, db.timezone) for row in rows
            if prefix_ids is None or row[9] in prefix_ids]  # row[9]: h.prefix_id


def _fetch(db: BaseDatabaseWrapper, sql: str, params: tuple[str, ...]) -> list[tuple[Any, ...]]:
    with db.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _timestamp(text: str, naive_zone: tzinfo | None) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo is not None else value.replace(tzinfo=naive_zone)


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
    """A lookup's row: the fields of a handle, its prefix and its asset that the representations read, in a
    plain value instead of three model instances. The tests compare both answers."""

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


def _from_row(row: tuple[Any, ...], zone: tzinfo | None) -> LookupHandle:
    (pk, suffix, target_url, status, is_primary, created_at, updated_at, version, synced_version, prefix_id,
     prefix, asset_id, source_system, external_id, title, url, state, asset_created_at, asset_updated_at) = row
    asset = None
    if asset_id is not None:
        asset = LookupAsset(asset_id, source_system, external_id, title, url, state,
                            _timestamp(asset_created_at, zone), _timestamp(asset_updated_at, zone))
    return LookupHandle(pk, suffix, target_url, status, bool(is_primary), _timestamp(created_at, zone),
                        _timestamp(updated_at, zone), version, synced_version, LookupPrefix(prefix_id, prefix), asset)


def lookup_by_name(prefix: str, suffix: str) -> LookupHandle | None:
    found = _lookup(BY_NAME_SQL, (prefix, ascii_upper(suffix)), None)
    return found[0] if found else None


def lookup_of_asset(source_system: str, external_id: str,
                    prefix_ids: Collection[int] | None) -> list[LookupHandle]:
    return citation_order(_lookup(OF_ASSET_SQL, (source_system, external_id), prefix_ids))


def lookup_with_url(url: str, prefix_ids: Collection[int] | None) -> list[LookupHandle]:
    """At most MAX_URL_MATCHES handles (the oldest), of those this caller may see."""
    return citation_order(_lookup(WITH_URL_SQL, (url,), prefix_ids))


# --- Local listing (keyset paging) ----------------------------------------------------------------
def handles_page(selection: ApiSelection, *, prefix_ids: Collection[int] | None, cursor: str | None,
                 limit: int) -> tuple[list[Handle], str | None]:
    """One page of the handles the one filter selected, in its stable order (by id; by change time and id with
    changed_since, so a client that syncs changes sees each change once per page walk), after `cursor`; and
    the cursor of the next page, if there is one. An unreadable cursor raises InvalidCursor."""
    rows = visible(selection.handles.select_related("prefix", "asset"), prefix_ids)
    if cursor:
        rows = rows.filter(selection.keyset.after(selection.keyset.decode(cursor)))
    page = list(rows[: limit + 1])
    following = selection.keyset.encode_row(page[limit - 1]) if len(page) > limit else None
    return page[:limit], following
