"""Reads over the core models shared by every list: capped counts, the handle and request searches, the
asset source systems, failed requests and their error groups.

Everything here must stay fast at a million handles on PostgreSQL: searches are shaped so that every
branch of the OR can use an index on the handles table (the trigram indexes of migration
handles_desk.0002), and counts are capped.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, cast

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.paginator import EmptyPage, Page, Paginator
from django.db import connection
from django.db.models import Count, Exists, Max, Min, OuterRef, Q, QuerySet
from django.utils.functional import cached_property

from handles.models import Asset, ErrorSignature, HandleRequest, Prefix
from handles.validators import ascii_upper, split_handle

RStatus = HandleRequest.Status
UNFINISHED = [RStatus.QUEUED, RStatus.RUNNING]

# Up to this many matching assets, the search hands PostgreSQL their ids (an index probe each); more, and
# the term is so common (1 % of a million assets) that walking the list in order finds a page at once.
SEARCH_ASSET_IDS = 10_000
ASSET_KEY = re.compile(r"^(?P<source>[a-z0-9][a-z0-9_.-]*):(?P<external_id>\S.*)$")


# --- Counting -------------------------------------------------------------------------------------
def capped_count(queryset: QuerySet, cap: int | None = None) -> tuple[int, bool]:
    """(count, capped): counts at most cap + 1 rows, so a million-row list costs what 10,001 rows cost."""
    cap = cap or settings.HANDLES_DESK_COUNT_LIMIT
    count = queryset.order_by().values("pk")[: cap + 1].count()  # no annotations: count rows, not health
    return min(count, cap), count > cap


class CappedCountPaginator(Paginator):
    """A paginator that never counts more than HANDLES_DESK_COUNT_LIMIT rows. Past the cap, pages are
    still served (by OFFSET); the list says "more than 1000" and asks for a narrower filter."""

    @cached_property
    def _capped(self) -> tuple[int, bool]:
        # Every list it pages is a queryset (the desk's and the admin's changelists).
        return capped_count(cast(QuerySet[Any], self.object_list))

    @cached_property
    def count(self) -> int:
        count, capped = self._capped
        return count + 1 if capped else count

    @property
    def count_capped(self) -> bool:
        return self._capped[1]

    @property
    def count_limit(self) -> int:
        return self._capped[0]

    def validate_number(self, number: int | float | str) -> int:
        try:
            return super().validate_number(number)
        except EmptyPage:
            if self.count_capped and int(number) >= 1:
                return int(number)
            raise

    def page(self, number: int | str) -> Page[Any]:
        number = self.validate_number(number)
        if not self.count_capped:
            return super().page(number)
        bottom = (number - 1) * self.per_page
        return Page(self.object_list[bottom:bottom + self.per_page], number, self)


# --- Search ---------------------------------------------------------------------------------------
def _named_handle(term: str) -> tuple[Prefix, str] | None:
    """(prefix, suffix) when the term is a handle of one of our prefixes: 20.500.1/x, hdl:..., resolver URLs."""
    if "/" not in term:
        return None
    try:
        prefix, suffix = split_handle(term)
    except ValidationError:
        return None
    known = Prefix.objects.filter(prefix__iexact=prefix).first()
    return (known, suffix) if known else None


def handle_search(queryset: QuerySet, term: str) -> QuerySet:
    """Full handle, suffix fragment, URL fragment, asset title or external id; case-insensitive.

    A full handle is looked up exactly (then as a suffix beginning, if nothing has that exact name).
    Anything else is an OR of conditions on the handles table that each have an index: the suffix key
    (trigram), the target URL (trigram on upper(target_url)), and the ids of matching assets, found first
    through the assets' own trigram indexes (a join inside the OR would make PostgreSQL read every
    handle). Only for a term in more than SEARCH_ASSET_IDS titles is the join used: matches are then
    dense, and reading the list in its order finds a page of them after a few hundred rows.
    """
    term = (term or "").strip()
    if not term:
        return queryset
    named = _named_handle(term)
    if named is not None:
        prefix, suffix = named
        exact = queryset.filter(prefix=prefix, suffix_key=ascii_upper(suffix))
        if exact.exists():
            return exact
        return queryset.filter(prefix=prefix, suffix_key__startswith=ascii_upper(suffix))
    condition = Q(suffix_key__contains=ascii_upper(term)) | Q(target_url__icontains=term)
    assets = Asset.objects.filter(Q(title__icontains=term) | Q(external_id__icontains=term))
    keyed = ASSET_KEY.match(term)
    if keyed and not term.lower().startswith(("http:", "https:")):
        assets = Asset.objects.filter(
            Q(pk__in=assets.values("pk"))
            | Q(source_system=keyed["source"], external_id=keyed["external_id"])
        )
    asset_ids = list(assets.order_by().values_list("pk", flat=True)[: SEARCH_ASSET_IDS + 1])
    if len(asset_ids) > SEARCH_ASSET_IDS:
        condition |= Q(asset__title__icontains=term) | Q(asset__external_id__icontains=term)
        if keyed:
            condition |= Q(asset__source_system=keyed["source"], asset__external_id=keyed["external_id"])
    elif asset_ids:
        condition |= Q(asset_id__in=asset_ids)
    return queryset.filter(condition)


def request_search(queryset: QuerySet, term: str) -> QuerySet:
    """The request log's search: a full handle finds that handle's requests, anything else is part of a
    handle's name (trigram index on upper(full_handle))."""
    term = (term or "").strip()
    if not term:
        return queryset
    named = _named_handle(term)
    if named is not None:
        prefix, suffix = named
        return queryset.filter(handle__prefix=prefix, handle__suffix_key=ascii_upper(suffix))
    return queryset.filter(full_handle__icontains=term)


def source_systems() -> list[str]:
    """The distinct asset source systems. On PostgreSQL a loose index scan over the (source_system,
    external_id) unique index: a handful of index probes instead of reading a million assets."""
    if connection.vendor != "postgresql":
        return list(Asset.objects.order_by("source_system").values_list("source_system", flat=True).distinct())
    table = Asset._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""WITH RECURSIVE sources AS (
                  (SELECT source_system FROM {table} ORDER BY source_system LIMIT 1)
                  UNION ALL
                  SELECT (SELECT a.source_system FROM {table} a WHERE a.source_system > s.source_system
                          ORDER BY a.source_system LIMIT 1)
                  FROM sources s WHERE s.source_system IS NOT NULL)
                SELECT source_system FROM sources WHERE source_system IS NOT NULL"""
        )
        return [row[0] for row in cursor.fetchall()]



# --- Failed requests, grouped by error ---------------------------------------------------------------
def failed_requests(*, prefix_id: int | None = None, since: datetime | None = None,
                    until: datetime | None = None) -> QuerySet:
    requests = HandleRequest.objects.filter(status=RStatus.ERROR)
    if prefix_id:
        requests = requests.filter(handle__prefix_id=prefix_id)
    if since:
        requests = requests.filter(finished_at__gte=since)
    if until:
        requests = requests.filter(finished_at__lt=until)
    return requests


def failure_groups(requests: QuerySet, limit: int = 100) -> list[dict]:
    """Failed requests grouped by error signature, the largest group first."""
    return list(requests.annotate(signature=ErrorSignature()).order_by().values("signature").annotate(
        count=Count("pk"), handles=Count("handle_id", distinct=True), first=Min("finished_at"),
        last=Max("finished_at"), latest_id=Max("pk"),
    ).order_by("-count", "signature")[:limit])


def commonest_error(requests: QuerySet[HandleRequest]) -> tuple[str, int] | None:
    """The most frequent error among the failed ones of these requests (compared with the handle's name,
    quoted values and URLs taken out, so one outage is one error): one request's own words for it, and
    how many requests it hit."""
    failed = requests.filter(status=HandleRequest.Status.ERROR).annotate(signature=ErrorSignature()).order_by()
    top = failed.values("signature").annotate(n=Count("pk")).order_by("-n", "signature").first()
    if top is None:
        return None
    example = failed.filter(signature=top["signature"]).order_by("pk").values_list("error", flat=True).first()
    return example or top["signature"], top["n"]


def with_signature(requests: QuerySet, signature: str) -> QuerySet:
    return requests.annotate(signature=ErrorSignature()).filter(signature=signature)


def open_failures_of(handles: QuerySet) -> QuerySet:
    """The failed requests that still stand for these handles (nothing was asked of the handle since)."""
    return latest_failed_requests().filter(handle__in=handles.values("pk"))


def latest_failed_requests() -> QuerySet:
    """Failed requests that are the latest request of their handle (nothing was asked of it since)."""
    later = HandleRequest.objects.filter(handle_id=OuterRef("handle_id"), pk__gt=OuterRef("pk"))
    return HandleRequest.objects.filter(status=RStatus.ERROR).filter(~Exists(later))
