"""Every write to our models goes through this module.

A change to a handle locks its row, updates it, bumps its version and records one HandleRequest; the
request is handed to the task queue only after the transaction commits. The task pushes the handle's
*current* state and reads it back, so duplicates converge and a stale push cannot win.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Min, Q
from django.utils import timezone

from handles import tasks
from handles.exceptions import HandleExists, HandleServiceError, HandleStateError
from handles.models import Asset, Handle, HandleRequest, Prefix
from handles.validators import ascii_upper, validate_suffix, validate_target_url

User = AbstractBaseUser | AnonymousUser | None
Op = HandleRequest.Op
Action = HandleRequest.Action
RStatus = HandleRequest.Status
HStatus = Handle.Status


def _user(actor: User) -> AbstractBaseUser | None:
    return actor if actor is not None and getattr(actor, "is_authenticated", False) else None


def _validation(exc: ValidationError) -> HandleServiceError:
    return HandleServiceError(" ".join(exc.messages), code=getattr(exc, "code", None) or "invalid")


def _record_request(handle: Handle, *, op: str, action: str, actor: User, via: str, from_url: str = "",
                    from_status: str = "", reason: str = "") -> HandleRequest:
    request = HandleRequest.objects.create(
        handle=handle, op=op, action=action, full_handle=handle.full_handle,
        url="" if op == Op.DELETE else handle.resolver_target,
        from_url=from_url, from_status=from_status, to_status=handle.status, reason=reason,
        handle_version=handle.version, requested_by=_user(actor), requested_via=via,
        max_attempts=settings.HANDLES_MAX_ATTEMPTS,
    )
    transaction.on_commit(partial(tasks.enqueue_request, request.pk))
    return request


def _locked(handle: Handle) -> Handle:
    return Handle.objects.select_for_update().select_related("prefix").get(pk=handle.pk)


def _save_change(handle: Handle, fields: list[str]) -> None:
    handle.version = F("version") + 1
    handle.save(update_fields=[*fields, "version", "updated_at"])
    handle.refresh_from_db(fields=["version"])


# --- Minting --------------------------------------------------------------------------------------
def _random_suffix(prefix: Prefix) -> str:
    return "".join(secrets.choice(prefix.suffix_alphabet) for _ in range(prefix.suffix_length))


def _taken_message(existing: Handle) -> str:
    if existing.status == HStatus.DELETED:
        when = existing.deleted_at.date().isoformat() if existing.deleted_at else "earlier"
        return (f"{existing.full_handle} was deleted ({when}). A handle is never reused: "
                "choose another suffix, or restore nothing and cite a new handle.")
    return f"{existing.full_handle} already exists (status: {existing.get_status_display()})."


def _choose_suffix(prefix: Prefix, suffix: str | None, asset: Asset | None) -> str:
    if suffix:
        return suffix
    if prefix.suffix_policy == Prefix.SuffixPolicy.ASSET_ID:
        if asset is None:
            raise HandleServiceError(f"Prefix {prefix.prefix} takes the asset's id as suffix: name the asset.",
                                     code="suffix_required")
        return asset.external_id
    if prefix.suffix_policy == Prefix.SuffixPolicy.GIVEN:
        raise HandleServiceError(f"Prefix {prefix.prefix} needs a suffix from the caller.", code="suffix_required")
    for _ in range(20):  # 27^8 possibilities: a repeat is rare, twenty in a row means a tiny alphabet
        candidate = _random_suffix(prefix)
        if not Handle.objects.filter(prefix=prefix, suffix_key=ascii_upper(candidate)).exists():
            return candidate
    raise HandleServiceError("Could not find a free random suffix; lengthen the prefix's suffixes.",
                             code="suffix_space_exhausted")


@transaction.atomic
def handle_mint(*, prefix: Prefix, target_url: str, suffix: str | None = None, asset: Asset | None = None,
                actor: User = None, via: str = "admin") -> HandleRequest:
    """Create a handle locally (status pending) and queue its creation on the server."""
    try:
        validate_target_url(target_url)
        chosen = _choose_suffix(prefix, (suffix or "").strip() or None, asset)
        validate_suffix(chosen)
    except ValidationError as exc:
        raise _validation(exc) from exc
    existing = Handle.objects.filter(prefix=prefix, suffix_key=ascii_upper(chosen)).select_related("prefix").first()
    if existing is not None:
        raise HandleExists(_taken_message(existing))
    try:
        with transaction.atomic():  # a savepoint: a concurrent mint of the same suffix loses cleanly
            handle = Handle.objects.create(
                prefix=prefix, suffix=chosen, suffix_key=ascii_upper(chosen), target_url=target_url,
                asset=asset, created_by=_user(actor), status=HStatus.PENDING,
            )
    except IntegrityError as exc:
        raise HandleExists(f"{prefix.prefix}/{chosen} already exists.") from exc
    return _record_request(handle, op=Op.CREATE, action=Action.MINT, actor=actor, via=via)


# --- Changes --------------------------------------------------------------------------------------
@transaction.atomic
def handle_redirect(*, handle: Handle, target_url: str, actor: User = None, via: str = "admin") -> HandleRequest:
    handle = _locked(handle)
    try:
        validate_target_url(target_url)
    except ValidationError as exc:
        raise _validation(exc) from exc
    if handle.status == HStatus.DELETED:
        raise HandleStateError(f"{handle} was deleted; a deleted handle cannot be redirected.")
    if handle.status == HStatus.TOMBSTONED:
        raise HandleStateError(f"{handle} is tombstoned; restore it before redirecting it.")
    if target_url == handle.target_url:
        raise HandleStateError(f"{handle} already points to {target_url}.", code="no_change")
    from_url = handle.target_url
    handle.target_url = target_url
    _save_change(handle, ["target_url"])
    return _record_request(handle, op=Op.UPDATE, action=Action.REDIRECT, actor=actor, via=via,
                           from_url=from_url, from_status=handle.status)


@transaction.atomic
def handle_tombstone(*, handle: Handle, reason: str, successor_url: str = "", actor: User = None,
                     via: str = "admin") -> HandleRequest:
    """Withdraw a handle: it keeps resolving, to our tombstone page that says what it was and why."""
    handle = _locked(handle)
    reason = (reason or "").strip()
    if not reason:
        raise HandleServiceError("Give the reason for withdrawing the handle; the tombstone page shows it.",
                                 code="reason_required")
    if successor_url:
        try:
            validate_target_url(successor_url)
        except ValidationError as exc:
            raise _validation(exc) from exc
    if handle.status in (HStatus.DELETED, HStatus.TOMBSTONED):
        raise HandleStateError(f"{handle} is already {handle.status}.")
    from_status, from_url = handle.status, handle.resolver_target
    handle.status = HStatus.TOMBSTONED
    handle.tombstone_reason = reason
    handle.successor_url = successor_url
    handle.tombstoned_at = timezone.now()
    _save_change(handle, ["status", "tombstone_reason", "successor_url", "tombstoned_at"])
    return _record_request(handle, op=Op.UPDATE, action=Action.TOMBSTONE, actor=actor, via=via,
                           from_url=from_url, from_status=from_status, reason=reason)


@transaction.atomic
def handle_restore(*, handle: Handle, actor: User = None, via: str = "admin") -> HandleRequest:
    handle = _locked(handle)
    if handle.status != HStatus.TOMBSTONED:
        raise HandleStateError(f"{handle} is not tombstoned (status: {handle.status}).")
    from_url = handle.resolver_target
    handle.status = HStatus.ACTIVE if handle.synced_version else HStatus.PENDING
    handle.tombstone_reason = ""
    handle.successor_url = ""
    handle.tombstoned_at = None
    _save_change(handle, ["status", "tombstone_reason", "successor_url", "tombstoned_at"])
    return _record_request(handle, op=Op.UPDATE, action=Action.RESTORE, actor=actor, via=via,
                           from_url=from_url, from_status=HStatus.TOMBSTONED)


@transaction.atomic
def handle_delete(*, handle: Handle, reason: str = "", actor: User = None, via: str = "admin") -> HandleRequest:
    """Remove the handle from the server. Our row stays, so the suffix is never minted again."""
    handle = _locked(handle)
    if handle.status == HStatus.DELETED:
        raise HandleStateError(f"{handle} is already deleted.")
    from_status, from_url = handle.status, handle.resolver_target
    handle.status = HStatus.DELETED
    handle.deleted_at = timezone.now()
    _save_change(handle, ["status", "deleted_at"])
    return _record_request(handle, op=Op.DELETE, action=Action.DELETE, actor=actor, via=via,
                           from_url=from_url, from_status=from_status, reason=reason)


@transaction.atomic
def handle_verify(*, handle: Handle, actor: User = None, via: str = "admin") -> HandleRequest:
    """Queue a read of the server's record, compared with what we intend. Changes nothing."""
    handle = _locked(handle)
    return _record_request(handle, op=Op.VERIFY, action=Action.VERIFY, actor=actor, via=via,
                           from_url=handle.resolver_target, from_status=handle.status)


@transaction.atomic
def request_retry(*, request: HandleRequest, actor: User = None) -> HandleRequest:
    """Give a failed request a fresh set of attempts. Safe: a push always sends the current state."""
    request = HandleRequest.objects.select_for_update().get(pk=request.pk)
    if request.status != RStatus.ERROR:
        raise HandleStateError(f"Request #{request.pk} is {request.status}; only failed requests are retried.")
    who = getattr(_user(actor), "get_username", lambda: "system")()
    request.status = RStatus.QUEUED
    request.max_attempts = request.attempts + settings.HANDLES_MAX_ATTEMPTS
    request.next_attempt_at = None
    request.finished_at = None
    request.server_output += f"\n[{timezone.now():%Y-%m-%d %H:%M:%S}] retried by {who}"
    request.save(update_fields=["status", "max_attempts", "next_attempt_at", "finished_at", "server_output",
                                "updated_at"])
    transaction.on_commit(partial(tasks.enqueue_request, request.pk))
    return request


# --- The worker's side: claim, finish, sweep ----------------------------------------------------------
@dataclass(frozen=True)
class Claim:
    """A request taken by one worker, with the handle's state at the moment it was taken."""

    request_id: int
    lease_token: uuid.UUID
    op: str
    attempts: int
    handle_id: int
    full_handle: str
    prefix_id: int
    url: str  # what the server should resolve to now
    exists: bool  # whether the handle should exist on the server now
    version: int


@dataclass(frozen=True)
class Outcome:
    kind: str  # "success" | "transient" | "permanent"
    output: str = ""
    server_error: str = ""
    error: str = ""
    pushed: bool = True  # False: nothing was sent (superseded by a later change)


def request_claim(request_id: int, *, now: datetime | None = None) -> Claim | str:
    """Take a request if it is due and is its handle's oldest unfinished one (per-handle order).

    Returns a Claim, or a short reason why not. The handle row lock serialises claims across workers.
    """
    with transaction.atomic():
        handle_id = HandleRequest.objects.filter(pk=request_id).values_list("handle_id", flat=True).first()
        if handle_id is None:
            return "missing"
        handle = Handle.objects.select_for_update().select_related("prefix").get(pk=handle_id)
        now = now or timezone.now()  # after the lock: a claim waiting on it starts when the lock is ours
        request = HandleRequest.objects.get(pk=request_id)
        if request.finished:
            return "finished"
        if request.status == RStatus.RUNNING and request.lease_until and request.lease_until > now:
            return "running"
        if request.status == RStatus.QUEUED and request.next_attempt_at and request.next_attempt_at > now:
            return "not due"
        first = HandleRequest.objects.filter(handle_id=handle_id).unfinished().aggregate(first=Min("id"))["first"]
        if first != request.pk:
            return "waiting"
        token = uuid.uuid4()
        HandleRequest.objects.filter(pk=request.pk).update(
            status=RStatus.RUNNING, attempts=F("attempts") + 1, lease_token=token,
            lease_until=now + timedelta(seconds=settings.HANDLES_LEASE_SECONDS),
            started_at=request.started_at or now, updated_at=now,
        )
        return Claim(
            request_id=request.pk, lease_token=token, op=request.op, attempts=request.attempts + 1,
            handle_id=handle.pk, full_handle=handle.full_handle, prefix_id=handle.prefix_id,
            url=handle.resolver_target, exists=handle.exists_on_server, version=handle.version,
        )


def _backoff(attempts: int) -> timedelta:
    seconds = settings.HANDLES_BACKOFF_BASE_SECONDS * (2 ** max(0, attempts - 1))
    return timedelta(seconds=min(seconds, settings.HANDLES_BACKOFF_MAX_SECONDS))


def _stamp(text: str, now: datetime) -> str:
    return f"[{now:%Y-%m-%d %H:%M:%S}] {text}" if text else ""


def _next_request_of(handle_id: int) -> int | None:
    return HandleRequest.objects.filter(handle_id=handle_id).unfinished().aggregate(first=Min("id"))["first"]


def request_finish(claim: Claim, outcome: Outcome, *, now: datetime | None = None) -> HandleRequest | None:
    """Record what a push achieved. Ignored if the lease was lost (another worker took the request over)."""
    with transaction.atomic():
        handle = Handle.objects.select_for_update().get(pk=claim.handle_id)
        now = now or timezone.now()
        request = HandleRequest.objects.get(pk=claim.request_id)
        if request.status != RStatus.RUNNING or request.lease_token != claim.lease_token:
            return None
        output = "\n".join(filter(None, [request.server_output, _stamp(outcome.output, now)]))
        request.server_output = output
        request.lease_token = None
        request.lease_until = None
        fields = ["server_output", "lease_token", "lease_until", "status", "updated_at"]
        if outcome.kind == "success":
            request.status = RStatus.SUCCESS
            request.finished_at = now
            request.error = ""
            request.server_error = ""
            fields += ["finished_at", "error", "server_error"]
            if outcome.pushed:
                request.pushed_version = claim.version
                fields.append("pushed_version")
                if claim.version >= handle.synced_version:
                    handle.synced_version = claim.version
                    handle.synced_at = now
                    handle_fields = ["synced_version", "synced_at"]
                    if handle.status == HStatus.PENDING and claim.exists:
                        handle.status = HStatus.ACTIVE
                        handle_fields.append("status")
                    handle.save(update_fields=handle_fields)
        elif outcome.kind == "transient" and request.attempts < request.max_attempts:
            request.status = RStatus.QUEUED
            request.next_attempt_at = now + _backoff(request.attempts)
            request.error = outcome.error
            request.server_error = outcome.server_error
            fields += ["next_attempt_at", "error", "server_error"]
        else:
            request.status = RStatus.ERROR
            request.finished_at = now
            request.error = outcome.error
            if outcome.kind == "transient":
                request.error = f"Gave up after {request.attempts} attempts. Last error: {outcome.error}"
            request.server_error = outcome.server_error
            fields += ["finished_at", "error", "server_error"]
        request.save(update_fields=fields)
        if request.finished:
            following = _next_request_of(handle.pk)
            if following is not None:
                transaction.on_commit(partial(tasks.enqueue_request, following))
        return request


def requests_mark_enqueued(request_ids: list[int], *, now: datetime | None = None) -> None:
    HandleRequest.objects.filter(pk__in=request_ids).update(enqueued_at=now or timezone.now())


def requests_sweep(*, now: datetime | None = None, limit: int = 5000) -> dict[str, int]:
    """The safety net, run every minute: take back requests of crashed workers and hand every due
    request that heads its handle's queue to the task queue again (lost enqueues, retry times)."""
    now = now or timezone.now()
    reclaimed = 0
    for request_id in HandleRequest.objects.lease_expired(now).values_list("pk", flat=True)[:limit]:
        with transaction.atomic():
            request = HandleRequest.objects.select_for_update().get(pk=request_id)
            if request.status != RStatus.RUNNING or not request.lease_until or request.lease_until >= now:
                continue
            request.lease_token = None
            request.lease_until = None
            note = _stamp(f"attempt {request.attempts} abandoned: the worker stopped before finishing", now)
            request.server_output = "\n".join(filter(None, [request.server_output, note]))
            if request.attempts >= request.max_attempts:
                request.status = RStatus.ERROR
                request.finished_at = now
                request.error = f"Gave up after {request.attempts} attempts: the worker stopped each time."
            else:
                request.status = RStatus.QUEUED
                request.next_attempt_at = None  # due at once
            request.save()
            reclaimed += 1

    stale = now - timedelta(seconds=settings.HANDLES_REENQUEUE_AFTER_SECONDS)
    heads = (HandleRequest.objects.unfinished().values("handle_id").annotate(first=Min("id"))
             .values_list("first", flat=True))
    due = (HandleRequest.objects.due(now).filter(pk__in=heads)
           .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=stale) | Q(enqueued_at__lt=F("next_attempt_at")))
           .order_by("pk").values_list("pk", flat=True)[:limit])
    due_ids = list(due)
    for request_id in due_ids:
        tasks.enqueue_request(request_id)
    return {"reclaimed": reclaimed, "enqueued": len(due_ids)}


# --- Configuration records ------------------------------------------------------------------------
@transaction.atomic
def prefix_save(*, prefix: Prefix) -> Prefix:
    """Save a prefix (admin form). Only one prefix is the default."""
    prefix.full_clean()
    if prefix.is_default:
        Prefix.objects.exclude(pk=prefix.pk).filter(is_default=True).update(is_default=False)
    prefix.save()
    return prefix


@transaction.atomic
def asset_save(*, asset: Asset) -> Asset:
    asset.full_clean()
    asset.save()
    return asset


def prefix_record_contact(*, prefix_id: int, ok: bool, error: str = "", now: datetime | None = None) -> None:
    """Remember the last contact with a prefix's server for the dashboard. Written at most every few
    seconds per prefix, so many workers do not queue up on one row."""
    now = now or timezone.now()
    recent = now - timedelta(seconds=5)
    Prefix.objects.filter(pk=prefix_id).filter(
        Q(last_contact_at__isnull=True) | Q(last_contact_at__lt=recent) | ~Q(last_contact_ok=ok)
    ).update(last_contact_at=now, last_contact_ok=ok, last_contact_error=error[:2000])
