"""Handles, one at a time or many at once: mint, redirect, tombstone, restore, delete, verify, make primary.

Each change locks the handle's row, changes it, bumps its version and records one HandleRequest, in one
transaction; the request is handed to the queue as it commits.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Iterable
from functools import partial
from typing import NamedTuple

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from handles.dbwrites import chunks, insert_rows
from handles.exceptions import HandleExists, HandleServiceError, HandleStateError
from handles.models import Asset, Handle, HandleRequest, Prefix
from handles.outbox import handover
from handles.services.common import (
    Action,
    HStatus,
    Op,
    User,
    locked,
    record_request,
    save_change,
    user_of,
    validation_error,
)
from handles.validators import ascii_upper, validate_new_suffix, validate_target_url

# --- Minting --------------------------------------------------------------------------------------
RANDOM_DRAWS = 20  # 27^8 possibilities: a repeat is rare, twenty in a row means a tiny alphabet


def _random_suffix(prefix: Prefix) -> str:
    return "".join(secrets.choice(prefix.suffix_alphabet) for _ in range(prefix.suffix_length))


def _taken_message(existing: Handle) -> str:
    if existing.status == HStatus.DELETED:
        when = existing.deleted_at.date().isoformat() if existing.deleted_at else "earlier"
        return (f"{existing.full_handle} was deleted ({when}). A handle is never reused: "
                "choose another suffix, or restore nothing and cite a new handle.")
    return f"{existing.full_handle} already exists (status: {existing.get_status_display()})."


def _choose_suffix(prefix: Prefix, suffix: str | None, asset: Asset | None, taken: Collection[str] = ()) -> str:
    if suffix:
        return suffix
    if prefix.suffix_policy == Prefix.SuffixPolicy.ASSET_ID:
        if asset is None:
            raise HandleServiceError(f"Prefix {prefix.prefix} takes the asset's id as suffix: name the asset.",
                                     code="suffix_required")
        return asset.external_id
    if prefix.suffix_policy == Prefix.SuffixPolicy.GIVEN:
        raise HandleServiceError(f"Prefix {prefix.prefix} needs a suffix from the caller.", code="suffix_required")
    for _ in range(RANDOM_DRAWS):
        candidate = _random_suffix(prefix)
        key = ascii_upper(candidate)
        if key not in taken and not Handle.objects.filter(prefix=prefix, suffix_key=key).exists():
            return candidate
    raise _suffix_space_exhausted()


def _suffix_space_exhausted() -> HandleServiceError:
    return HandleServiceError("Could not find a free random suffix; lengthen the prefix's suffixes.",
                              code="suffix_space_exhausted")


def handle_mint_preview(*, prefix: Prefix, target_url: str, suffix: str | None = None,
                        asset: Asset | None = None) -> str:
    """The suffix handle_mint would use, refused exactly as handle_mint refuses it; changes nothing.
    The admin's mint page shows it, then mints exactly that suffix."""
    given = (suffix or "").strip() or None
    try:
        validate_target_url(target_url)
        chosen = _choose_suffix(prefix, given, asset)
        validate_new_suffix(chosen)
    except ValidationError as exc:
        raise validation_error(exc) from exc
    if given is None and prefix.suffix_policy == Prefix.SuffixPolicy.RANDOM:
        return chosen  # _choose_suffix drew it among the free ones
    # Unordered, one row, the prefix we have: the model's ordering would join the prefix table for nothing.
    existing = next(iter(Handle.objects.filter(prefix=prefix, suffix_key=ascii_upper(chosen)).order_by()[:1]), None)
    if existing is not None:
        existing.prefix = prefix
        raise HandleExists(_taken_message(existing))
    return chosen


def handle_mint(*, prefix: Prefix, target_url: str, suffix: str | None = None, asset: Asset | None = None,
                actor: User = None, via: str = "admin") -> HandleRequest:
    """Create a handle locally (status pending) and queue its creation on the server."""
    if transaction.get_connection().in_atomic_block:
        # Inside a caller's transaction, a savepoint lets a concurrent mint of the same suffix lose cleanly
        # and the caller go on.
        with transaction.atomic():
            chosen = handle_mint_preview(prefix=prefix, target_url=target_url, suffix=suffix, asset=asset)
            return _mint_chosen(prefix, chosen, target_url, asset, actor, via, savepoint=True)
    if (suffix or "").strip() or prefix.suffix_policy != Prefix.SuffixPolicy.RANDOM:
        # A transaction of our own ends with the refusal anyway: no savepoint (two round trips for nothing).
        with transaction.atomic():
            chosen = handle_mint_preview(prefix=prefix, target_url=target_url, suffix=suffix, asset=asset)
            return _mint_chosen(prefix, chosen, target_url, asset, actor, via, savepoint=False)
    # A random suffix in a transaction of our own (an API create): the unique constraint says whether it is
    # free, not a SELECT first; a taken one (rare: 27^8 suffixes by default) is drawn again in a new transaction.
    try:
        validate_target_url(target_url)
    except ValidationError as exc:
        raise validation_error(exc) from exc
    for _ in range(RANDOM_DRAWS):
        chosen = _random_suffix(prefix)
        try:
            validate_new_suffix(chosen)
        except ValidationError as exc:
            raise validation_error(exc) from exc
        try:
            with transaction.atomic():
                return _mint_chosen(prefix, chosen, target_url, asset, actor, via, savepoint=False)
        except HandleExists:
            continue
    raise _suffix_space_exhausted()


def _mint_chosen(prefix: Prefix, chosen: str, target_url: str, asset: Asset | None, actor: User, via: str, *,
                 savepoint: bool) -> HandleRequest:
    """handle_mint's writes, in its transaction, for a suffix already checked."""
    try:
        with transaction.atomic(savepoint=savepoint):
            handle = Handle.objects.create(
                prefix=prefix, suffix=chosen, suffix_key=ascii_upper(chosen), target_url=target_url,
                asset=asset, created_by=user_of(actor), status=HStatus.PENDING,
            )
    except IntegrityError as exc:
        raise HandleExists(f"{prefix.prefix}/{chosen} already exists.") from exc
    return record_request(handle, op=Op.CREATE, action=Action.MINT, actor=actor, via=via)


class MintItem(NamedTuple):
    """One handle for handles_mint_bulk: as handle_mint's arguments."""

    target_url: str
    suffix: str | None = None
    asset: Asset | None = None


@transaction.atomic
def handles_mint_bulk(*, prefix: Prefix, items: Iterable[MintItem], actor: User = None,
                      via: str = "admin") -> list[int]:
    """handle_mint for many handles in one transaction: each is checked as handle_mint checks it, and one
    refused item refuses them all (nothing recorded). Each new handle gets its create request, in the
    items' order, and the requests are handed to the queue after commit. Returns the request ids."""
    items = list(items)
    suffixes: list[str] = []
    keys: list[str] = []
    seen: set[str] = set()
    for item in items:
        try:
            validate_target_url(item.target_url)
            suffix = _choose_suffix(prefix, (item.suffix or "").strip() or None, item.asset, taken=seen)
            validate_new_suffix(suffix)
        except ValidationError as exc:
            raise validation_error(exc) from exc
        key = ascii_upper(suffix)
        if key in seen:
            raise HandleExists(f"{prefix.prefix}/{suffix} is named twice in one batch.")
        suffixes.append(suffix)
        keys.append(key)
        seen.add(key)
    for chunk in chunks(keys):
        existing = Handle.objects.filter(prefix=prefix, suffix_key__in=chunk).select_related("prefix").first()
        if existing is not None:
            raise HandleExists(_taken_message(existing))
    now = timezone.now()
    creator = user_of(actor)
    creator_id = creator.pk if creator is not None else None
    try:
        with transaction.atomic():  # a savepoint: a concurrent mint of one of the suffixes loses cleanly
            handle_ids = insert_rows(
                Handle, ["prefix_id", "suffix", "suffix_key", "target_url", "asset_id", "status", "created_by_id",
                         "created_at"],
                [(prefix.pk, suffix, key, item.target_url, item.asset.pk if item.asset else None, HStatus.PENDING,
                  creator_id, now) for item, suffix, key in zip(items, suffixes, keys, strict=True)])
    except IntegrityError as exc:
        raise HandleExists("One of these handles was minted meanwhile by someone else; nothing was minted.") from exc
    request_ids = insert_rows(
        HandleRequest, ["handle_id", "op", "action", "full_handle", "url", "to_status", "handle_version",
                        "requested_by_id", "requested_via", "max_attempts", "created_at"],
        [(handle_id, Op.CREATE, Action.MINT, f"{prefix.prefix}/{suffix}", item.target_url, HStatus.PENDING, 1,
          creator_id, via, settings.HANDLES_MAX_ATTEMPTS, now)
         for handle_id, item, suffix in zip(handle_ids, items, suffixes, strict=True)])
    transaction.on_commit(partial(handover.enqueue_request_batches, request_ids))
    return request_ids


# --- Changes --------------------------------------------------------------------------------------
@transaction.atomic
def handle_redirect(*, handle: Handle, target_url: str, actor: User = None, via: str = "admin") -> HandleRequest:
    handle = locked(handle)
    try:
        validate_target_url(target_url)
    except ValidationError as exc:
        raise validation_error(exc) from exc
    if handle.status == HStatus.DELETED:
        raise HandleStateError(f"{handle} was deleted; a deleted handle cannot be redirected.")
    if handle.status == HStatus.TOMBSTONED:
        raise HandleStateError(f"{handle} is tombstoned; restore it before redirecting it.")
    if target_url == handle.target_url:
        raise HandleStateError(f"{handle} already points to {target_url}.", code="no_change")
    from_url = handle.target_url
    handle.target_url = target_url
    save_change(handle, ["target_url"])
    return record_request(handle, op=Op.UPDATE, action=Action.REDIRECT, actor=actor, via=via,
                           from_url=from_url, from_status=handle.status)


@transaction.atomic
def handle_tombstone(*, handle: Handle, reason: str, successor_url: str = "", actor: User = None,
                     via: str = "admin") -> HandleRequest:
    """Withdraw a handle: it keeps resolving, to our tombstone page that says what it was and why."""
    handle = locked(handle)
    reason = (reason or "").strip()
    if not reason:
        raise HandleServiceError("Give the reason for withdrawing the handle; the tombstone page shows it.",
                                 code="reason_required")
    if successor_url:
        try:
            validate_target_url(successor_url)
        except ValidationError as exc:
            raise validation_error(exc) from exc
    if handle.status in (HStatus.DELETED, HStatus.TOMBSTONED):
        raise HandleStateError(f"{handle} is already {handle.status}.")
    from_status, from_url = handle.status, handle.resolver_target
    handle.status = HStatus.TOMBSTONED
    handle.tombstone_reason = reason
    handle.successor_url = successor_url
    handle.tombstoned_at = timezone.now()
    save_change(handle, ["status", "tombstone_reason", "successor_url", "tombstoned_at"])
    return record_request(handle, op=Op.UPDATE, action=Action.TOMBSTONE, actor=actor, via=via,
                           from_url=from_url, from_status=from_status, reason=reason)


@transaction.atomic
def handle_restore(*, handle: Handle, actor: User = None, via: str = "admin") -> HandleRequest:
    handle = locked(handle)
    if handle.status != HStatus.TOMBSTONED:
        raise HandleStateError(f"{handle} is not tombstoned (status: {handle.status}).")
    from_url = handle.resolver_target
    handle.status = HStatus.ACTIVE if handle.synced_version else HStatus.PENDING
    handle.tombstone_reason = ""
    handle.successor_url = ""
    handle.tombstoned_at = None
    save_change(handle, ["status", "tombstone_reason", "successor_url", "tombstoned_at"])
    return record_request(handle, op=Op.UPDATE, action=Action.RESTORE, actor=actor, via=via,
                           from_url=from_url, from_status=HStatus.TOMBSTONED)


@transaction.atomic
def handle_delete(*, handle: Handle, reason: str = "", actor: User = None, via: str = "admin") -> HandleRequest:
    """Remove the handle from the server. Our row stays, so the suffix is never minted again."""
    handle = locked(handle)
    if handle.status == HStatus.DELETED:
        raise HandleStateError(f"{handle} is already deleted.")
    from_status, from_url = handle.status, handle.resolver_target
    handle.status = HStatus.DELETED
    handle.deleted_at = timezone.now()
    save_change(handle, ["status", "deleted_at"])
    return record_request(handle, op=Op.DELETE, action=Action.DELETE, actor=actor, via=via,
                           from_url=from_url, from_status=from_status, reason=reason)


@transaction.atomic
def handle_verify(*, handle: Handle, actor: User = None, via: str = "admin") -> HandleRequest:
    """Queue a read of the server's record, compared with what we intend. Changes nothing."""
    handle = locked(handle)
    return record_request(handle, op=Op.VERIFY, action=Action.VERIFY, actor=actor, via=via,
                           from_url=handle.resolver_target, from_status=handle.status)



@transaction.atomic
def handle_make_primary(*, handle: Handle, actor: User = None, via: str = "admin") -> list[HandleRequest]:
    """Make this the handle to cite for its asset. The asset's other live handles keep resolving, to the
    same target: any of them pointing elsewhere is redirected (queued) to the primary's target URL, so a
    cited handle is never broken."""
    handle = locked(handle)
    if handle.asset_id is None:
        raise HandleStateError(f"{handle} belongs to no asset, so it cannot be its asset's primary handle.")
    if handle.status not in (HStatus.ACTIVE, HStatus.PENDING):
        raise HandleStateError(f"{handle} is {handle.status}; only a live handle can be the one to cite.")
    siblings = list(Handle.objects.select_for_update().filter(asset_id=handle.asset_id).exclude(pk=handle.pk)
                    .select_related("prefix").order_by("pk"))
    Handle.objects.filter(pk__in=[s.pk for s in siblings], is_primary=True).update(is_primary=False)
    if not handle.is_primary:
        handle.is_primary = True
        handle.save(update_fields=["is_primary", "updated_at"])
    redirects = []
    for sibling in siblings:
        if sibling.status in (HStatus.ACTIVE, HStatus.PENDING) and sibling.target_url != handle.target_url:
            redirects.append(handle_redirect(handle=sibling, target_url=handle.target_url, actor=actor, via=via))
    return redirects

