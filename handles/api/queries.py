"""The API's reads: QuerySets over our database (the Handle server is asked only by resolve and the
remote listing). Lists use keyset paging, so page 5,000 costs what page 1 does."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q, QuerySet
from django.utils.dateparse import parse_datetime

from handles.api.errors import ApiError
from handles.models import Asset, Handle, Prefix

LIVE = (Handle.Status.PENDING, Handle.Status.ACTIVE)


def handles() -> QuerySet[Handle]:
    return Handle.objects.select_related("prefix", "asset")


def visible(queryset: QuerySet[Handle], prefix_ids: Collection[int] | None) -> QuerySet[Handle]:
    return queryset if prefix_ids is None else queryset.filter(prefix_id__in=prefix_ids)


def citation_order(rows: Iterable[Handle]) -> list[Handle]:
    """The handle to cite first: the primary one, then live ones, then the oldest. Sorted here, not in
    SQL: an asset has a few handles, and the lookups stay cheap to build and plan."""
    return sorted(rows, key=lambda h: (not h.is_primary, h.status not in LIVE, h.pk))


def prefix_named(name: str) -> Prefix | None:
    return Prefix.objects.filter(prefix__iexact=name).first()


def handle_named(prefix: str, suffix: str) -> Handle | None:
    # Unique per prefix: no ORDER BY to build and plan (the hottest ArchivesSpace lookup).
    return next(iter(handles().by_name(prefix, suffix).order_by()[:1]), None)


def asset_named(source_system: str, external_id: str) -> Asset | None:
    return Asset.objects.filter(source_system=source_system, external_id=external_id).first()


def handles_of_asset(asset: Asset, prefix_ids: Collection[int] | None) -> list[Handle]:
    return citation_order(visible(handles().filter(asset=asset), prefix_ids))


def handles_of_asset_named(source_system: str, external_id: str, prefix_ids: Collection[int] | None) -> list[Handle]:
    named = handles().filter(asset__source_system=source_system, asset__external_id=external_id)
    return citation_order(visible(named, prefix_ids))


def handles_with_url(url: str, prefix_ids: Collection[int] | None, limit: int) -> list[Handle]:
    return citation_order(visible(handles().filter(target_url=url), prefix_ids).order_by("pk")[:limit])


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
