"""The DAMS asset lifecycle (publish, unpublish, move, delete) and the API's idempotency keys.

The DAMS tells us what happened to an asset and its handles follow. Each call locks the asset's row and
changes handles only through the handle services (handles.services.handles), in one transaction: a retried
or concurrent call cannot mint twice, and a refused change leaves nothing behind. `permitted_prefix_ids` is
the set of prefixes the caller may change (None: all); a call that would touch a handle under another
prefix is refused whole.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import QuerySet

from handles.exceptions import HandleStateError, PrefixForbidden
from handles.models import Asset, Handle, HandleRequest, Prefix
from handles.services.common import HStatus, User, validation_error
from handles.services.handles import (
    handle_delete,
    handle_mint,
    handle_redirect,
    handle_restore,
    handle_tombstone,
)
from handles.validators import validate_target_url

AssetState = Asset.State
LIVE_STATUSES = (HStatus.PENDING, HStatus.ACTIVE)


@dataclass(frozen=True)
class AssetChange:
    asset: Asset
    requests: list[HandleRequest]  # the handle requests this call queued, in order; empty if nothing changed


def _guard_prefixes(prefixes: Iterable[Prefix], permitted: Collection[int] | None) -> None:
    if permitted is None:
        return
    refused = sorted({p.prefix for p in prefixes if p.pk not in permitted})
    if refused:
        raise PrefixForbidden(f"This change would touch handles under {', '.join(refused)}, which this caller "
                              "may not change. Nothing was changed.")


def _asset_locked(asset: Asset) -> Asset:
    return Asset.objects.select_for_update().get(pk=asset.pk)


def _guard_asset(asset: Asset, permitted: Collection[int] | None) -> None:
    """A caller limited to some prefixes changes an asset only if it has a handle there (or none has one):
    an asset whose handles are all another prefix's is that prefix's record."""
    live = Handle.objects.filter(asset=asset).exclude(status=HStatus.DELETED)
    if permitted is not None and live.exists() and not live.filter(prefix_id__in=permitted).exists():
        _guard_prefixes((h.prefix for h in live.select_related("prefix")), permitted)


def _asset_handles(asset: Asset) -> QuerySet[Handle]:
    return Handle.objects.filter(asset=asset).select_related("prefix").order_by("pk")


def _asset_saved(asset: Asset, fields: list[str]) -> None:
    try:
        asset.full_clean(validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        raise validation_error(exc) from exc
    asset.save(update_fields=[*fields, "updated_at"])


def _follow(asset: Asset, old_url: str, *, permitted: Collection[int] | None, actor: User,
            via: str) -> list[HandleRequest]:
    """Redirect the asset's live handles that pointed at its old URL to the new one. A handle that points
    elsewhere (another site's handle for the same object, or one staff redirected) is left alone."""
    if not old_url or old_url == asset.url:
        return []
    followers = list(_asset_handles(asset).filter(status__in=LIVE_STATUSES, target_url=old_url))
    _guard_prefixes((h.prefix for h in followers), permitted)
    return [handle_redirect(handle=h, target_url=asset.url, actor=actor, via=via) for h in followers]


def _asset_get_or_create(source_system: str, external_id: str, url: str, title: str) -> tuple[Asset, bool]:
    asset = Asset.objects.select_for_update().filter(source_system=source_system, external_id=external_id).first()
    if asset is not None:
        return asset, False
    asset = Asset(source_system=source_system, external_id=external_id, url=url, title=title)
    try:
        asset.full_clean(validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        raise validation_error(exc) from exc
    try:
        with transaction.atomic():  # a savepoint: a concurrent first publish of the same asset wins cleanly
            asset.save()
    except IntegrityError:
        return Asset.objects.select_for_update().get(source_system=source_system, external_id=external_id), False
    return asset, True


@transaction.atomic
def asset_publish(*, source_system: str, external_id: str, url: str, prefix: Prefix, title: str | None = None,
                  suffix: str | None = None, permitted_prefix_ids: Collection[int] | None = None,
                  actor: User = None, via: str = "api") -> AssetChange:
    """Publish an asset: record it and give it a handle under `prefix` unless it has a live one there
    (suffix by the prefix's policy; `suffix` is used only for a new handle).

    Safe to repeat: publishing twice gives one handle. A changed URL makes the handles follow. Publishing
    a deleted asset again restores the handles its deletion tombstoned; a deleted handle is never reused.
    """
    _guard_prefixes([prefix], permitted_prefix_ids)
    try:
        validate_target_url(url)
    except ValidationError as exc:
        raise validation_error(exc) from exc
    asset, created = _asset_get_or_create(source_system, external_id, url, title or "")
    requests: list[HandleRequest] = []
    if not created:
        old_url = asset.url
        deleted_at = asset.updated_at if asset.state == AssetState.DELETED else None
        wanted = (url, asset.title if title is None else title, AssetState.PUBLISHED)
        if (asset.url, asset.title, asset.state) != wanted:
            asset.url, asset.title, asset.state = wanted
            _asset_saved(asset, ["url", "title", "state"])
        if deleted_at is not None:
            # Only the tombstones the deletion made: one staff set earlier stays.
            revived = list(_asset_handles(asset).filter(status=HStatus.TOMBSTONED, tombstoned_at__gte=deleted_at))
            _guard_prefixes((h.prefix for h in revived), permitted_prefix_ids)
            requests += [handle_restore(handle=h, actor=actor, via=via) for h in revived]
        requests += _follow(asset, old_url, permitted=permitted_prefix_ids, actor=actor, via=via)
    if not _asset_handles(asset).filter(prefix=prefix).exclude(status=HStatus.DELETED).exists():
        requests.append(handle_mint(prefix=prefix, target_url=asset.url, suffix=suffix, asset=asset, actor=actor,
                                    via=via))
    return AssetChange(asset, requests)


@transaction.atomic
def asset_unpublish(*, asset: Asset, permitted_prefix_ids: Collection[int] | None = None, actor: User = None,
                    via: str = "api") -> AssetChange:
    """The asset left public view. Its handles stay exactly as they are."""
    asset = _asset_locked(asset)
    _guard_asset(asset, permitted_prefix_ids)
    if asset.state == AssetState.DELETED:
        raise HandleStateError(f"Asset {asset.source_system}:{asset.external_id} is deleted; publish it again first.")
    if asset.state != AssetState.UNPUBLISHED:
        asset.state = AssetState.UNPUBLISHED
        _asset_saved(asset, ["state"])
    return AssetChange(asset, [])


@transaction.atomic
def asset_change_url(*, asset: Asset, url: str, permitted_prefix_ids: Collection[int] | None = None,
                     actor: User = None, via: str = "api") -> AssetChange:
    """The asset moved: record its new URL, and the handles that pointed at the old one follow."""
    asset = _asset_locked(asset)
    _guard_asset(asset, permitted_prefix_ids)
    try:
        validate_target_url(url)
    except ValidationError as exc:
        raise validation_error(exc) from exc
    if asset.state == AssetState.DELETED:
        raise HandleStateError(f"Asset {asset.source_system}:{asset.external_id} is deleted; publish it again "
                               "with its new URL instead.")
    old_url = asset.url
    if url == old_url:
        return AssetChange(asset, [])
    asset.url = url
    _asset_saved(asset, ["url"])
    return AssetChange(asset, _follow(asset, old_url, permitted=permitted_prefix_ids, actor=actor, via=via))


@transaction.atomic
def asset_delete(*, asset: Asset, reason: str = "", permitted_prefix_ids: Collection[int] | None = None,
                 actor: User = None, via: str = "api") -> AssetChange:
    """The asset was deleted: each handle is tombstoned or deleted on the server as its prefix's
    `asset_delete_action` says. Our records (asset and handles) stay. Deleting twice changes nothing more."""
    asset = _asset_locked(asset)
    if asset.state == AssetState.DELETED:
        return AssetChange(asset, [])
    handles = [h for h in _asset_handles(asset).exclude(status=HStatus.DELETED)
               if h.prefix.asset_delete_action == Prefix.AssetDeleteAction.DELETE or h.status in LIVE_STATUSES]
    _guard_prefixes((h.prefix for h in handles), permitted_prefix_ids)
    asset.state = AssetState.DELETED
    _asset_saved(asset, ["state"])  # before the tombstones: a later publish revives those made after this
    reason = (reason or "").strip() or f"The object was deleted from {asset.source_system}."
    requests = [
        handle_delete(handle=h, reason=reason, actor=actor, via=via)
        if h.prefix.asset_delete_action == Prefix.AssetDeleteAction.DELETE
        else handle_tombstone(handle=h, reason=reason, actor=actor, via=via)
        for h in handles
    ]
    return AssetChange(asset, requests)


# --- Idempotency keys (the API's Idempotency-Key header) ----------------------------------------------
def _lock_idempotency_key(key: str) -> None:
    """Serialise calls that carry the same key. SQLite needs nothing: its writers already queue up."""
    if connection.vendor == "postgresql":
        lock_id = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big", signed=True)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [lock_id])


@transaction.atomic
def request_once(*, idempotency_key: str, perform: Callable[[], HandleRequest]) -> tuple[HandleRequest, bool]:
    """Run `perform` once per key: a retried call with the same key gets the first call's request back.

    Returns (request, replayed). A call that failed recorded nothing, so retrying it runs it again."""
    _lock_idempotency_key(idempotency_key)
    earlier = HandleRequest.objects.filter(idempotency_key=idempotency_key).order_by("pk").first()
    if earlier is not None:
        return earlier, True
    request = perform()
    request.idempotency_key = idempotency_key
    request.save(update_fields=["idempotency_key", "updated_at"])
    return request, False

