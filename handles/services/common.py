"""What every handle service shares: the acting user, the refusal of bad input, the handle's row lock, its
version bump, and the HandleRequest that records a change and is handed to the queue as it commits."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.models import User as AuthUser
from django.core.exceptions import ValidationError
from django.db.models import F
from django.utils import timezone

from handles.exceptions import HandleServiceError
from handles.models import Handle, HandleRequest
from handles.outbox import handover

# Who acts on a service: a request's user (the project's User, or AnonymousUser), or nobody (a command).
User = AuthUser | AnonymousUser | None
Op = HandleRequest.Op
Action = HandleRequest.Action
RStatus = HandleRequest.Status
HStatus = Handle.Status


def user_of(actor: User) -> AuthUser | None:
    """The user a change records as its author: nobody for an anonymous visitor or no actor."""
    if actor is None or isinstance(actor, AnonymousUser) or not actor.is_authenticated:
        return None
    return actor


def validation_error(exc: ValidationError) -> HandleServiceError:
    return HandleServiceError(" ".join(exc.messages), code=getattr(exc, "code", None) or "invalid")


def record_request(handle: Handle, *, op: str, action: str, actor: User, via: str, from_url: str = "",
                   from_status: str = "", reason: str = "") -> HandleRequest:
    handed_over_now = handover.queue_in_our_database()  # handed over in this transaction: marked as it is recorded
    request = HandleRequest.objects.create(
        handle=handle, op=op, action=action, full_handle=handle.full_handle,
        url="" if op == Op.DELETE else handle.resolver_target,
        from_url=from_url, from_status=from_status, to_status=handle.status, reason=reason,
        handle_version=handle.version, requested_by=user_of(actor), requested_via=via,
        max_attempts=settings.HANDLES_MAX_ATTEMPTS, enqueued_at=timezone.now() if handed_over_now else None,
    )
    handover.enqueue_request_on_commit(request.pk, marked=handed_over_now)
    return request


def locked(handle: Handle) -> Handle:
    # of=("self",): lock the handle's row only. A join's FOR UPDATE would lock the prefix row too,
    # making every change and claim of a prefix wait on each other and on an import holding that row.
    return Handle.objects.select_for_update(of=("self",)).select_related("prefix").get(pk=handle.pk)


def save_change(handle: Handle, fields: list[str]) -> None:
    handle.version = F("version") + 1
    handle.save(update_fields=[*fields, "version", "updated_at"])
    handle.refresh_from_db(fields=["version"])

