"""Every write to our models goes through this module.

A change to a handle locks its row, updates it, bumps its version and records one HandleRequest; the
request is handed to the task queue as the transaction commits (never before). The task pushes the handle's
*current* state and reads it back, so duplicates converge and a stale push cannot win.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import NamedTuple

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Min, Model, Q, QuerySet, TextField, Value
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce, Concat
from django.utils import timezone

from handles import tasks
from handles.exceptions import HandleExists, HandleServiceError, HandleStateError, PrefixForbidden
from handles.labels import counted
from handles.models import Asset, Handle, HandleRequest, Prefix
from handles.notify import hooks as notify_hooks
from handles.validators import ascii_upper, validate_new_suffix, validate_target_url

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
    handed_over_now = tasks.queue_in_our_database()  # handed over in this transaction: marked as it is recorded
    request = HandleRequest.objects.create(
        handle=handle, op=op, action=action, full_handle=handle.full_handle,
        url="" if op == Op.DELETE else handle.resolver_target,
        from_url=from_url, from_status=from_status, to_status=handle.status, reason=reason,
        handle_version=handle.version, requested_by=_user(actor), requested_via=via,
        max_attempts=settings.HANDLES_MAX_ATTEMPTS, enqueued_at=timezone.now() if handed_over_now else None,
    )
    tasks.enqueue_request_on_commit(request.pk, marked=handed_over_now)
    return request


def _locked(handle: Handle) -> Handle:
    # of=("self",): lock the handle's row only. A join's FOR UPDATE would lock the prefix row too,
    # making every change and claim of a prefix wait on each other and on an import holding that row.
    return Handle.objects.select_for_update(of=("self",)).select_related("prefix").get(pk=handle.pk)


def _save_change(handle: Handle, fields: list[str]) -> None:
    handle.version = F("version") + 1
    handle.save(update_fields=[*fields, "version", "updated_at"])
    handle.refresh_from_db(fields=["version"])


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
        raise _validation(exc) from exc
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
        raise _validation(exc) from exc
    for _ in range(RANDOM_DRAWS):
        chosen = _random_suffix(prefix)
        try:
            validate_new_suffix(chosen)
        except ValidationError as exc:
            raise _validation(exc) from exc
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
                asset=asset, created_by=_user(actor), status=HStatus.PENDING,
            )
    except IntegrityError as exc:
        raise HandleExists(f"{prefix.prefix}/{chosen} already exists.") from exc
    return _record_request(handle, op=Op.CREATE, action=Action.MINT, actor=actor, via=via)


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
            raise _validation(exc) from exc
        key = ascii_upper(suffix)
        if key in seen:
            raise HandleExists(f"{prefix.prefix}/{suffix} is named twice in one batch.")
        suffixes.append(suffix)
        keys.append(key)
        seen.add(key)
    for chunk in _chunks(keys):
        existing = Handle.objects.filter(prefix=prefix, suffix_key__in=chunk).select_related("prefix").first()
        if existing is not None:
            raise HandleExists(_taken_message(existing))
    now = timezone.now()
    creator = _user(actor)
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
    transaction.on_commit(partial(tasks.enqueue_request_batches, request_ids))
    return request_ids


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


def _retried_note(actor: User, now: datetime) -> str:
    who = getattr(_user(actor), "get_username", lambda: "system")()
    return f"\n[{now:%Y-%m-%d %H:%M:%S}] retried by {who}"


@transaction.atomic
def request_retry(*, request: HandleRequest, actor: User = None) -> HandleRequest:
    """Give a failed request a fresh set of attempts. Safe: a push always sends the current state."""
    request = HandleRequest.objects.select_for_update().get(pk=request.pk)
    if request.status != RStatus.ERROR:
        raise HandleStateError(f"Request #{request.pk} is {request.status}; only failed requests are retried.")
    request.status = RStatus.QUEUED
    request.max_attempts = request.attempts + settings.HANDLES_MAX_ATTEMPTS
    request.next_attempt_at = None
    request.finished_at = None
    request.server_output += _retried_note(actor, timezone.now())
    request.save(update_fields=["status", "max_attempts", "next_attempt_at", "finished_at", "server_output",
                                "updated_at"])
    tasks.enqueue_request_on_commit(request.pk)
    return request


def requests_retry_bulk(*, request_ids: Iterable[int], actor: User = None) -> int:
    """request_retry for many requests (the failed requests of a job): each failed one among them gets a
    fresh set of attempts and a note in its output, and is handed to the queue after commit. Others are
    left alone. A chunk per transaction (savepoints inside a caller's transaction). Returns how many."""
    retried = 0
    now = timezone.now()
    note = _retried_note(actor, now)
    for chunk in _chunks(sorted(set(request_ids))):
        with transaction.atomic():
            failed = list(HandleRequest.objects.select_for_update().filter(pk__in=chunk, status=RStatus.ERROR)
                          .order_by("pk").values_list("pk", flat=True))
            HandleRequest.objects.filter(pk__in=failed).update(
                status=RStatus.QUEUED, max_attempts=F("attempts") + settings.HANDLES_MAX_ATTEMPTS,
                next_attempt_at=None, finished_at=None, updated_at=now,
                server_output=Concat("server_output", Value(note), output_field=TextField()))
            if failed:
                transaction.on_commit(partial(tasks.enqueue_request_ids, failed))
        retried += len(failed)
    return retried


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
    kind: str  # "success" | "transient" | "permanent" | "auth" (credentials refused: the prefix pauses)
    output: str = ""
    server_error: str = ""
    error: str = ""
    pushed: bool = True  # False: nothing was sent (superseded by a later change)


def _take(request_ids: list[int], now: datetime) -> uuid.UUID:
    """Mark requests running under one new lease (the caller holds their handles' locks)."""
    token = uuid.uuid4()
    HandleRequest.objects.filter(pk__in=request_ids).update(
        status=RStatus.RUNNING, attempts=F("attempts") + 1, lease_token=token,
        lease_until=now + timedelta(seconds=settings.HANDLES_LEASE_SECONDS),
        started_at=Coalesce("started_at", Value(now)), updated_at=now,
    )
    return token


def _claim_of(request: HandleRequest, handle: Handle, token: uuid.UUID) -> Claim:
    return Claim(
        request_id=request.pk, lease_token=token, op=request.op, attempts=request.attempts + 1,
        handle_id=handle.pk, full_handle=handle.full_handle, prefix_id=handle.prefix_id,
        url=handle.resolver_target, exists=handle.exists_on_server, version=handle.version,
    )


def request_claim(request_id: int, *, now: datetime | None = None) -> Claim | str:
    """Take a request if it is due and is its handle's oldest unfinished one (per-handle order).

    Returns a Claim, or a short reason why not. The handle row lock serialises claims across workers.
    """
    with transaction.atomic():
        handle_id = HandleRequest.objects.filter(pk=request_id).values_list("handle_id", flat=True).first()
        if handle_id is None:
            return "missing"
        handle = Handle.objects.select_for_update(of=("self",)).select_related("prefix").get(pk=handle_id)
        now = now or timezone.now()  # after the lock: a claim waiting on it starts when the lock is ours
        request = HandleRequest.objects.get(pk=request_id)
        if request.finished:
            return "finished"
        if request.status == RStatus.RUNNING and request.lease_until and request.lease_until > now:
            return "running"
        if request.status == RStatus.QUEUED and request.next_attempt_at and request.next_attempt_at > now:
            return "not due"
        if request.status == RStatus.QUEUED and handle.prefix.auth_failing:
            return "paused"
        if _next_request_of(handle_id) != request.pk:
            return "waiting"
        if request.status == RStatus.RUNNING:  # its lease ran out: the worker that held it stopped
            HandleRequest.objects.filter(pk=request.pk).update(server_output=_with_abandoned_note(request, now))
        return _claim_of(request, handle, _take([request.pk], now))


def _with_abandoned_note(request: HandleRequest, now: datetime) -> str:
    """The request's output with its cut-off attempt on record (a crashed worker's, taken back)."""
    note = _stamp(f"attempt {request.attempts} abandoned: the worker stopped before finishing", now)
    return "\n".join(filter(None, [request.server_output, note]))


def _heads_of(handle_ids: Iterable[int]) -> dict[int, int]:
    """Each handle's oldest unfinished request id: the only one of its requests that may be pushed."""
    rows = (HandleRequest.objects.unfinished().filter(handle_id__in=list(handle_ids)).values("handle_id")
            .annotate(first=Min("id")).values_list("handle_id", "first"))
    return dict(rows)


def requests_claim_batch(limit: int, *, now: datetime | None = None, among: list[int] | None = None) -> list[Claim]:
    """Take up to `limit` due head requests of different handles in one transaction, oldest first.

    Handles another transaction holds (a worker claiming or finishing, a change being recorded) are
    skipped, so two workers never take the same handle and neither waits. Only the oldest due requests
    are looked at: a handle's head is found per candidate handle, which stays cheap however the planner
    guesses (a NOT EXISTS over the whole queue became a quadratic join on a fresh table).
    `among`: only these requests (a task's own list)."""
    with transaction.atomic():
        given_now = now
        now = now or timezone.now()
        due = HandleRequest.objects.due(now)
        if among is not None:
            due = due.filter(pk__in=among)
        due = list(due.order_by("pk").values_list("pk", "handle_id")[:4 * limit])
        heads = _heads_of({handle_id for _, handle_id in due})
        candidates = [pk for pk, handle_id in due if heads.get(handle_id) == pk]
        locked = list(HandleRequest.objects.filter(pk__in=candidates).select_related("handle__prefix")
                      .select_for_update(of=("handle",), skip_locked=True).order_by("pk")[:limit])
        # The head test ran before the locks: check again now that the handles are ours.
        heads = _heads_of(r.handle_id for r in locked)
        still_due = set(HandleRequest.objects.due(now).filter(pk__in=[r.pk for r in locked])
                        .values_list("pk", flat=True))
        requests = [r for r in locked if r.pk in still_due and heads.get(r.handle_id) == r.pk]
        if not requests:
            return []
        # Started now that the handles are ours: a request finished by another worker while this one was
        # looking must never seem to have been started before it (its started_at after that finish).
        token = _take([r.pk for r in requests], given_now or timezone.now())
        return [_claim_of(r, r.handle, token) for r in requests]


def _backoff(attempts: int) -> timedelta:
    seconds = settings.HANDLES_BACKOFF_BASE_SECONDS * (2 ** max(0, attempts - 1))
    return timedelta(seconds=min(seconds, settings.HANDLES_BACKOFF_MAX_SECONDS))


def _stamp(text: str, now: datetime) -> str:
    return f"[{now:%Y-%m-%d %H:%M:%S}] {text}" if text else ""


def _next_request_of(handle_id: int) -> int | None:
    return _heads_of([handle_id]).get(handle_id)


_FINISH_FIELDS = ["server_output", "lease_token", "lease_until", "status", "updated_at", "finished_at", "error",
                  "server_error", "pushed_version", "next_attempt_at"]
_SYNC_FIELDS = ["synced_version", "synced_at", "status"]


def _apply_outcome(request: HandleRequest, handle: Handle, claim: Claim, outcome: Outcome | None,
                   now: datetime) -> bool:
    """Set on `request` (and `handle`) what the outcome means; the caller saves _FINISH_FIELDS and, when
    this returns True, the handle's _SYNC_FIELDS. No outcome: the push was never tried, the request goes
    back to the queue without spending the attempt."""
    request.lease_token = None
    request.lease_until = None
    request.updated_at = now
    if outcome is None:
        request.status = RStatus.QUEUED
        request.attempts -= 1
        request.next_attempt_at = now + _backoff(1)  # past enqueued_at, so the sweep hands it over when due
        return False
    request.server_output = "\n".join(filter(None, [request.server_output, _stamp(outcome.output, now)]))
    if outcome.kind == "success":
        request.status = RStatus.SUCCESS
        request.finished_at = now
        request.error = ""
        request.server_error = ""
        if outcome.pushed:
            request.pushed_version = claim.version
            if claim.version >= handle.synced_version:
                handle.synced_version = claim.version
                handle.synced_at = now
                if handle.status == HStatus.PENDING and claim.exists:
                    handle.status = HStatus.ACTIVE
                return True
    elif outcome.kind == "auth":
        # Not this request's failure: it waits for its prefix's probe, its attempt not spent.
        request.status = RStatus.QUEUED
        request.attempts -= 1
        request.next_attempt_at = None
        request.error = f"Waiting: {outcome.error}"
        request.server_error = outcome.server_error
    elif outcome.kind == "transient" and request.attempts < request.max_attempts:
        request.status = RStatus.QUEUED
        request.next_attempt_at = now + _backoff(request.attempts)
        request.error = outcome.error
        request.server_error = outcome.server_error
    else:
        request.status = RStatus.ERROR
        request.finished_at = now
        request.error = outcome.error
        if outcome.kind == "transient":
            request.error = f"Gave up after {counted(request.attempts, 'attempt')}. Last error: {outcome.error}"
        request.server_error = outcome.server_error
    return False


def _save_rows(objs: list[Model], fields: list[str]) -> None:
    """Save `fields` of many rows in one UPDATE, like bulk_update but with a CASE only for a field whose
    values differ: building one When per row and field made bulk_update cost more than the pushes."""
    if not objs:
        return
    model = type(objs[0])
    values = {}
    for name in fields:
        field = model._meta.get_field(name)
        by_pk = {obj.pk: getattr(obj, field.attname) for obj in objs}
        if len(set(by_pk.values())) == 1:
            values[name] = Value(next(iter(by_pk.values())), output_field=field)
        else:  # a plain SQL CASE: Case(When(pk=...)) costs a filter resolution per row
            pk_column = connection.ops.quote_name(model._meta.pk.column)
            whens = " ".join(["WHEN %s THEN %s"] * len(by_pk))
            params = [p for pk, v in by_pk.items() for p in (pk, field.get_db_prep_value(v, connection))]
            values[name] = RawSQL(f"CASE {pk_column} {whens} END", params, output_field=field)
    model._default_manager.filter(pk__in=[obj.pk for obj in objs]).update(**values)


def _hand_over_next(handle_ids: list[int]) -> None:
    """As finished requests commit, hand each handle's next unfinished request to the queue."""
    for request_id in sorted(_heads_of(handle_ids).values()):
        tasks.enqueue_request_on_commit(request_id)


def request_finish(claim: Claim, outcome: Outcome, *, now: datetime | None = None) -> HandleRequest | None:
    """Record what a push achieved. Ignored if the lease was lost (another worker took the request over)."""
    finished = requests_finish_batch([(claim, outcome)], now=now)
    return finished[0] if finished else None


def requests_finish_batch(results: list[tuple[Claim, Outcome | None]], *,
                          now: datetime | None = None) -> list[HandleRequest]:
    """Record what a batch of pushes achieved, in one transaction. A result whose lease was lost (the
    sweep took the request back) is ignored; an outcome of None gives a claim back unpushed.
    Returns the requests recorded."""
    if not results:
        return []
    with transaction.atomic():
        handles = {h.pk: h for h in Handle.objects.select_for_update().filter(
            pk__in=sorted({claim.handle_id for claim, _ in results})).order_by("pk")}
        now = now or timezone.now()
        requests = HandleRequest.objects.select_for_update().in_bulk([claim.request_id for claim, _ in results])
        recorded, synced = [], []
        for claim, outcome in results:
            request = requests[claim.request_id]
            if request.status != RStatus.RUNNING or request.lease_token != claim.lease_token:
                continue
            handle = handles[claim.handle_id]
            if _apply_outcome(request, handle, claim, outcome, now):
                synced.append(handle)
            recorded.append(request)
        _save_rows(recorded, [*_FINISH_FIELDS, "attempts"])
        _save_rows(synced, _SYNC_FIELDS)
        _hand_over_next([r.handle_id for r in recorded if r.finished])
        notify_hooks.requests_failed(recorded)
        return recorded


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
            request.server_output = _with_abandoned_note(request, now)
            if request.attempts >= request.max_attempts:
                request.status = RStatus.ERROR
                request.finished_at = now
                request.error = f"Gave up after {counted(request.attempts, 'attempt')}: the worker stopped each time."
                notify_hooks.requests_failed([request])
            else:
                request.status = RStatus.QUEUED
                request.next_attempt_at = None  # due at once
                request.enqueued_at = None  # so the hand-out below sends it now, not REENQUEUE_AFTER later
            request.save()
            reclaimed += 1

    stale = now - timedelta(seconds=settings.HANDLES_REENQUEUE_AFTER_SECONDS)
    heads = (HandleRequest.objects.unfinished().values("handle_id").annotate(first=Min("id"))
             .values_list("first", flat=True))
    not_handed_out = Q(enqueued_at__isnull=True)
    if tasks.broker_backlog() == 0:
        # Tasks still waiting in the broker drain due requests when they run, so only an empty broker says
        # that a request handed out long ago (or one whose backoff is over) has no task coming for it.
        # Without this, a backlog older than HANDLES_REENQUEUE_AFTER_SECONDS would be handed out twice.
        not_handed_out |= Q(enqueued_at__lt=stale) | Q(enqueued_at__lt=F("next_attempt_at"))
    due = (HandleRequest.objects.due(now).filter(pk__in=heads).filter(not_handed_out)
           .order_by("pk").values_list("pk", flat=True)[:limit])
    # The sweep is one task: it hands out for at most a quarter of HANDLES_TASK_TIMEOUT, the rest next minute.
    # Handing out thousands one by one (a backlog after a server outage; SQLite) outlasted a 10 s timeout, the
    # cluster killed the sweep every minute, and the job resume and settle after it never ran.
    hand_out_until = time.monotonic() + settings.HANDLES_TASK_TIMEOUT / 4
    enqueued = 0
    for request_id in due:
        tasks.enqueue_request(request_id)
        enqueued += 1
        if time.monotonic() >= hand_out_until:
            break
    return {"reclaimed": reclaimed, "enqueued": enqueued}


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
    seconds per prefix, so many workers do not queue up on one row; skipped while another transaction
    holds the row (an import locks its prefix for its whole run), so a worker never waits for it."""
    now = now or timezone.now()
    recent = now - timedelta(seconds=5)
    with transaction.atomic():
        stale = Prefix.objects.select_for_update(skip_locked=True).filter(pk=prefix_id).filter(
            Q(last_contact_at__isnull=True) | Q(last_contact_at__lt=recent) | ~Q(last_contact_ok=ok))
        Prefix.objects.filter(pk__in=stale.values("pk")).update(
            last_contact_at=now, last_contact_ok=ok, last_contact_error=error[:2000])


# --- Authentication failures: the prefix's, not a request's ----------------------------------------------
# A 401/402 means the server refuses our credentials for now (it is shutting down, its admin handle is being
# restored, the secret was rotated): no request is spent or ended for it. The prefix's queue pauses, a probe
# checks the credentials with backoff (tasks.probe_prefix_auth), and the queue resumes when they work.
# prefix_auth_failed and prefix_auth_recovered are the two transitions: hook notifications there.
def _probe_delay(failed_probes: int) -> timedelta:
    seconds = settings.HANDLES_AUTH_PROBE_BASE_SECONDS * (2 ** failed_probes)
    return timedelta(seconds=min(seconds, settings.HANDLES_AUTH_PROBE_MAX_SECONDS))


def prefix_auth_failed(*, prefix_id: int, error: str, now: datetime | None = None) -> bool:
    """The server refused the prefix's credentials: pause its queue and schedule a probe. Returns True if
    this call started the pause (many workers may report the same refusal; one starts it)."""
    now = now or timezone.now()
    probe_at = now + _probe_delay(0)
    with transaction.atomic():
        started = Prefix.objects.filter(pk=prefix_id, auth_failing_since__isnull=True).update(
            auth_failing_since=now, auth_error=error[:2000], auth_probes=0, auth_probe_at=probe_at)
        if started:
            transaction.on_commit(partial(tasks.schedule_auth_probe, prefix_id, probe_at))
            notify_hooks.prefix_auth_failed(prefix_id=prefix_id, error=error)
    return bool(started)


def prefix_auth_probe_claim(*, prefix_id: int, now: datetime | None = None) -> bool:
    """Take the prefix's due probe: its next time moves past the probe's longest run, so a second probe
    (the schedule and the sweep may both fire) finds it not due and schedules nothing."""
    now = now or timezone.now()
    busy_until = now + timedelta(seconds=2 * settings.HANDLES_SERVER_TIMEOUT)
    return bool(Prefix.objects.filter(pk=prefix_id, auth_failing_since__isnull=False, auth_probe_at__lte=now)
                .update(auth_probe_at=busy_until))


def prefix_auth_probe_failed(*, prefix_id: int, error: str, now: datetime | None = None) -> None:
    """A probe was refused too (or could not reach the server): probe again later, waiting twice as long."""
    now = now or timezone.now()
    with transaction.atomic():
        prefix = Prefix.objects.select_for_update().filter(pk=prefix_id, auth_failing_since__isnull=False).first()
        if prefix is None:
            return
        prefix.auth_probes += 1
        prefix.auth_error = error[:2000]
        prefix.auth_probe_at = now + _probe_delay(prefix.auth_probes)
        prefix.save(update_fields=["auth_probes", "auth_error", "auth_probe_at", "updated_at"])
        transaction.on_commit(partial(tasks.schedule_auth_probe, prefix_id, prefix.auth_probe_at))


def prefix_auth_recovered(*, prefix_id: int) -> bool:
    """The credentials work again: end the pause and hand the prefix's waiting requests to the queue.
    Returns True if this call ended a pause."""
    with transaction.atomic():
        ended = Prefix.objects.filter(pk=prefix_id, auth_failing_since__isnull=False).update(
            auth_failing_since=None, auth_error="", auth_probes=0, auth_probe_at=None)
        if ended:
            heads = (HandleRequest.objects.unfinished().filter(handle__prefix_id=prefix_id).values("handle_id")
                     .annotate(first=Min("id")).values_list("first", flat=True))
            ids = list(HandleRequest.objects.due().filter(pk__in=heads).order_by("pk").values_list("pk", flat=True))
            transaction.on_commit(partial(tasks.enqueue_request_ids, ids))
            notify_hooks.prefix_auth_recovered(prefix_id=prefix_id)
    return bool(ended)


def prefixes_auth_probe_due(*, now: datetime | None = None) -> list[int]:
    """Paused prefixes whose probe time has come (the sweep's safety net for a lost probe schedule)."""
    return list(Prefix.objects.filter(auth_failing_since__isnull=False, auth_probe_at__lte=now or timezone.now())
                .values_list("pk", flat=True))


def requests_cancel(*, request_ids: Iterable[int], actor: User = None, now: datetime | None = None) -> int:
    """Staff give up on queued requests (e.g. while their prefix's authentication fails): they end in
    error, never pushed by this request, and can be retried later like any failed request. Running ones
    are left to finish. Returns how many were cancelled."""
    now = now or timezone.now()
    who = getattr(_user(actor), "username", "") or "staff"
    with transaction.atomic():
        requests = list(HandleRequest.objects.select_for_update().filter(
            pk__in=list(request_ids), status=RStatus.QUEUED).order_by("pk"))
        for request in requests:
            request.status = RStatus.ERROR
            request.finished_at = now
            request.updated_at = now
            request.error = f"Cancelled by {who} before it reached the server." + (
                f" Last error: {request.error}" if request.error else "")
            request.server_output = "\n".join(filter(None, [request.server_output,
                                                            _stamp(f"cancelled by {who}", now)]))
        _save_rows(requests, ["status", "finished_at", "updated_at", "error", "server_output"])
        _hand_over_next([r.handle_id for r in requests])
    return len(requests)


# --- Import and repair (bulk) -----------------------------------------------------------------------
# Legacy imports and repairs touch up to a million handles at once, so these functions write in bulk
# (COPY on PostgreSQL, bulk_create elsewhere; one transaction) instead of calling the per-handle services
# in a loop. The per-handle rules still hold: every change the server must see is a HandleRequest, a
# change bumps the handle's version, and the queue's worker pushes the handle's current state and reads
# it back. The callers (handles.repair) hand the returned request ids to the queue after commit, in
# background chunks; the minute sweep is the safety net for any id never handed over.
BULK_BATCH_SIZE = 2000


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


def _chunks(items: list, size: int = BULK_BATCH_SIZE):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def insert_rows(model: type[Model], columns: list[str], rows: list[tuple]) -> list[int]:
    """Insert rows given as tuples of values for `columns` (field attnames); the model's other fields
    take their defaults, evaluated once. Returns the new ids in order.

    On PostgreSQL by COPY, several times faster than INSERT and without building model instances: the
    ids are drawn from the table's sequence first, so nothing needs RETURNING. Values travel as Python
    values (text, numbers, booleans, datetimes, None), so not for JSON fields. A unique violation raises
    IntegrityError, as bulk_create does.
    """
    if not rows:
        return []
    meta = model._meta
    now = timezone.now()
    rest = [f for f in meta.concrete_fields if f.attname not in columns and not f.primary_key]
    defaults = tuple(now if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False) else f.get_default()
                     for f in rest)
    names = [*columns, *(f.attname for f in rest)]
    db = transaction.get_connection()
    if db.vendor != "postgresql":
        objects = [model(**dict(zip(names, (*row, *defaults), strict=True))) for row in rows]
        model.objects.bulk_create(objects, batch_size=BULK_BATCH_SIZE)
        return [obj.pk for obj in objects]
    fields = {f.attname: f for f in meta.concrete_fields}
    column_list = ", ".join(db.ops.quote_name(fields[name].column) for name in [meta.pk.attname, *names])
    with db.cursor() as cursor:
        cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
                       [meta.db_table, meta.pk.column, len(rows)])
        ids = [pk for (pk,) in cursor.fetchall()]
        with db.wrap_database_errors, cursor.cursor.copy(
                f"COPY {db.ops.quote_name(meta.db_table)} ({column_list}) FROM STDIN") as copy:
            for pk, row in zip(ids, rows, strict=True):
                copy.write_row((pk, *row, *defaults))
    return ids


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
        for chunk in _chunks(external_ids):
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
    creator = _user(actor)
    creator_id = creator.pk if creator is not None else None
    status = HStatus.ACTIVE if adopt else HStatus.PENDING
    prefixes = dict(Prefix.objects.filter(pk__in={i.prefix_id for i in items}).values_list("pk", "prefix"))
    result: dict[tuple[int, str], tuple[int, int | None]] = {}
    for chunk in _chunks(items):
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
        request_ids: list[int | None] = [None] * len(chunk)
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
    requester = _user(actor)
    result: dict[int, int] = {}
    for chunk in _chunks(sorted(wanted)):
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


@transaction.atomic
def handle_make_primary(*, handle: Handle, actor: User = None, via: str = "admin") -> list[HandleRequest]:
    """Make this the handle to cite for its asset. The asset's other live handles keep resolving, to the
    same target: any of them pointing elsewhere is redirected (queued) to the primary's target URL, so a
    cited handle is never broken."""
    handle = _locked(handle)
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


# --- Asset lifecycle (DAMS) -----------------------------------------------------------------------
# The DAMS tells us what happened to an asset and its handles follow (shared/context/002, "DAMS"). Each
# call locks the asset's row and changes handles only through the handle services above, in one
# transaction: a retried or concurrent call cannot mint twice, and a refused change leaves nothing behind.
# `permitted_prefix_ids` is the set of prefixes the caller may change (None: all); a call that would touch
# a handle under another prefix is refused whole.
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
        raise _validation(exc) from exc
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
        raise _validation(exc) from exc
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
        raise _validation(exc) from exc
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
        raise _validation(exc) from exc
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
