"""Import and repair in bulk: legacy handles recorded, adopted or queued by the thousand.

Legacy imports and repairs touch up to a million handles at once, so these functions write in bulk
(`handles.dbwrites`: COPY on PostgreSQL, bulk_create elsewhere; one transaction) instead of calling the
per-handle services in a loop. The per-handle rules still hold: every change the server must see is a
HandleRequest, a change bumps the handle's version, and the queue's worker pushes the handle's current state
and reads it back. The callers (handles.repair) hand the returned request ids to the queue after commit, in
background chunks; the minute sweep is the safety net for any id never handed over.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from handles.dbwrites import chunks, insert_rows
from handles.exceptions import HandleExists, HandleServiceError, HandleStateError
from handles.models import Asset, Handle, HandleRequest, Prefix
from handles.services.common import Action, HStatus, Op, User, user_of
from handles.validators import ascii_upper


class AssetSpec(NamedTuple):
    source_system: str
    external_id: str
    title: str = ""
    url: str = ""


class ImportItem(NamedTuple):
    """One handle to record, with the id of its asset (from assets_get_or_create_bulk) if it has one."""

    prefix_id: int
    suffix: str
    target_url: str
    asset_id: int | None = None
    is_primary: bool = False



@transaction.atomic
def assets_get_or_create_bulk(specs: list[AssetSpec]) -> tuple[dict[tuple[str, str], int], set[int]]:
    """Ids of the assets named by (source_system, external_id), creating the missing ones, and the set of
    ids created now. An existing asset keeps its title and URL: an import never rewrites what a source
    system told us."""
    wanted = {(s.source_system, s.external_id): s for s in specs}
    ids: dict[tuple[str, str], int] = {}
    by_source: dict[str, list[str]] = {}
    for source, external_id in wanted:
        by_source.setdefault(source, []).append(external_id)
    for source, external_ids in by_source.items():
        for chunk in chunks(external_ids):
            ids.update(((source, e), pk) for e, pk in Asset.objects.filter(
                source_system=source, external_id__in=chunk).values_list("external_id", "pk"))
    missing = [s for key, s in wanted.items() if key not in ids]
    try:
        with transaction.atomic():
            created = insert_rows(Asset, ["source_system", "external_id", "title", "url"],
                                  [(s.source_system, s.external_id, s.title[:1000], s.url) for s in missing])
    except IntegrityError as exc:
        raise HandleServiceError("An asset of this import was created meanwhile by someone else; run the dry "
                                 "run again.", code="stale_dry_run") from exc
    ids.update(((s.source_system, s.external_id), pk) for s, pk in zip(missing, created, strict=True))
    return ids, set(created)


@transaction.atomic
def handles_import_bulk(*, items: list[ImportItem], adopt: bool, actor: User = None, via: str = "import",
                        reason: str = "") -> dict[tuple[int, str], tuple[int, int | None]]:
    """Record handles that already exist in the world (a legacy list, or orphans found on the server).

    adopt=True: they already resolve, so they are recorded `active` and each gets a VERIFY request: the
    handle counts as in sync only once the worker has read the server's record and found our URL there.
    adopt=False: they are recorded `pending` with no request yet; the caller reads the server and queues
    a create, update or verify for each (handles_queue_bulk).
    All or nothing: a handle that exists already (a concurrent mint) fails the whole call with HandleExists.
    Returns {(prefix_id, suffix_key): (handle_id, request_id or None)}.
    """
    now = timezone.now()
    creator = user_of(actor)
    creator_id = creator.pk if creator is not None else None
    status = HStatus.ACTIVE if adopt else HStatus.PENDING
    prefixes = dict(Prefix.objects.filter(pk__in={i.prefix_id for i in items}).values_list("pk", "prefix"))
    result: dict[tuple[int, str], tuple[int, int | None]] = {}
    for chunk in chunks(items):
        keys = [ascii_upper(i.suffix) for i in chunk]
        try:
            with transaction.atomic():
                handle_ids = insert_rows(
                    Handle, ["prefix_id", "suffix", "suffix_key", "target_url", "asset_id", "is_primary", "status",
                             "created_by_id", "created_at"],
                    [(i.prefix_id, i.suffix, key, i.target_url, i.asset_id, i.is_primary, status, creator_id, now)
                     for i, key in zip(chunk, keys, strict=True)])
        except IntegrityError as exc:
            taken = Handle.objects.filter(prefix_id__in={i.prefix_id for i in chunk}, suffix_key__in=keys)
            names = ", ".join(h.full_handle for h in taken.select_related("prefix")[:3]) or "a handle"
            raise HandleExists(f"Since the dry run, {names} was created here by someone else. Nothing was "
                               "applied: run the dry run again.") from exc
        request_ids: Sequence[int | None] = [None] * len(chunk)
        if adopt:
            request_ids = insert_rows(
                HandleRequest, ["handle_id", "op", "action", "full_handle", "url", "to_status", "reason",
                                "handle_version", "requested_by_id", "requested_via", "max_attempts", "created_at"],
                [(pk, Op.VERIFY, Action.VERIFY, f"{prefixes[i.prefix_id]}/{i.suffix}", i.target_url, status, reason,
                  1, creator_id, via, settings.HANDLES_MAX_ATTEMPTS, now) for i, pk in zip(chunk, handle_ids, strict=True)])
        for item, key, handle_id, request_id in zip(chunk, keys, handle_ids, request_ids, strict=True):
            result[(item.prefix_id, key)] = (handle_id, request_id)
    return result


# What each repair op asks of the server, and the statuses it fits.
_REPAIR_OPS = {Op.CREATE, Op.UPDATE, Op.DELETE, Op.VERIFY}


@transaction.atomic
def handles_queue_bulk(*, ops: list[tuple[int, str]], actor: User = None, via: str = "repair",
                       reason: str = "", action: str = Action.REPAIR) -> dict[int, int]:
    """Queue one request per (handle id, op) to bring the server to the handle's current state.

    create: the handle is missing on the server; update: the server holds another URL (or not the
    tombstone page); delete: deleted here but still on the server; verify: read and compare only.
    The handle's intended state does not change, but a create/update/delete bumps its version, so the
    handle shows as out of sync until the worker has pushed it and read it back. Rows are locked in id
    order (no deadlock with a concurrent bulk call). All or nothing: an op that does not fit a handle's
    status raises HandleStateError. Returns {handle_id: request_id}.
    """
    wanted = dict(ops)
    if len(wanted) != len(ops):
        raise HandleServiceError("A handle was named twice in one repair.", code="duplicate_handle")
    unknown = set(wanted.values()) - _REPAIR_OPS
    if unknown:
        raise HandleServiceError(f"Unknown repair operation {sorted(unknown)[0]!r}.", code="invalid_op")
    now = timezone.now()
    requester = user_of(actor)
    result: dict[int, int] = {}
    for chunk in chunks(sorted(wanted)):
        handles = list(Handle.objects.select_for_update().filter(pk__in=chunk).order_by("pk"))
        if len(handles) != len(chunk):
            raise HandleServiceError("A handle to repair no longer exists.", code="handle_not_found")
        for handle in handles:
            op = wanted[handle.pk]
            if (op == Op.DELETE) != (handle.status == HStatus.DELETED) and op != Op.VERIFY:
                raise HandleStateError(f"Cannot {op} {handle.suffix}: its status is now {handle.status}; "
                                       "reconcile again to see its current state.")
        changing = [h.pk for h in handles if wanted[h.pk] != Op.VERIFY]
        if changing:
            Handle.objects.filter(pk__in=changing).update(version=F("version") + 1, updated_at=now)
        handles = list(Handle.objects.filter(pk__in=chunk).select_related("prefix").order_by("pk"))
        request_ids = insert_rows(
            HandleRequest, ["handle_id", "op", "action", "full_handle", "url", "from_status", "to_status", "reason",
                            "handle_version", "requested_by_id", "requested_via", "max_attempts", "created_at"],
            [(h.pk, wanted[h.pk], Action.VERIFY if wanted[h.pk] == Op.VERIFY else action, h.full_handle,
              "" if wanted[h.pk] == Op.DELETE else h.resolver_target, h.status, h.status, reason, h.version,
              requester.pk if requester else None, via, settings.HANDLES_MAX_ATTEMPTS, now) for h in handles])
        result.update((h.pk, request_id) for h, request_id in zip(handles, request_ids, strict=True))
    return result

