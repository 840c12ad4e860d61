"""What a worker does with a claimed request: bring the server to the handle's current state, then read
it back. Talks to the server through the client only; writes nothing to the database (`finish` records it).

Every push sends the state the handle has *now*, so running a request twice, or an old request after a
newer one, converges on the newest state instead of replaying history.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from handles.handle_server import records
from handles.handle_server.client import (
    AuthenticationFailed,
    HandleAlreadyExists,
    HandleNotFound,
    HandleServerClient,
    HandleServerError,
    ServerAnswer,
)
from handles.models import HandleRequest, Prefix
from handles.outbox.claims import Claim
from handles.outbox.finish import Outcome

logger = logging.getLogger(__name__)
Op = HandleRequest.Op


class _Transcript:
    """Collects one line per server call: the request log's `javastdout`."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def call(self, fn: Callable[..., ServerAnswer], *args: Any, **kwargs: Any) -> ServerAnswer:
        try:
            answer = fn(*args, **kwargs)
        except HandleServerError as exc:
            if exc.exchange:
                self.lines.append(exc.exchange)
            raise
        self.lines.append(answer.exchange)
        return answer

    def text(self, *extra: str) -> str:
        return "\n".join([*self.lines, *extra])


def push(claim: Claim, prefix: Prefix, client: HandleServerClient) -> Outcome:
    log = _Transcript()
    try:
        if claim.op == Op.VERIFY:
            return _verify(claim, client, log)
        if not claim.exists:
            if claim.op != Op.DELETE:
                return Outcome("success", output="Superseded: the handle has since been deleted; nothing sent.",
                               pushed=False)
            return _delete(claim, client, log)
        if claim.op == Op.DELETE:
            return Outcome("permanent", error="Internal error: a delete request for a handle that should exist.")
        if claim.op == Op.CREATE:
            return _create(claim, prefix, client, log)
        return _update(claim, client, log)
    except AuthenticationFailed as exc:
        # The server refused our credentials, not this request: the prefix pauses, the request waits.
        return Outcome("auth", output=log.text(), server_error=exc.body or exc.exchange, error=str(exc))
    except HandleServerError as exc:
        return Outcome("transient" if exc.transient else "permanent", output=log.text(),
                       server_error=exc.body or exc.exchange, error=str(exc))
    except Exception as exc:  # a bug must end visibly in the log, not leave the request running
        logger.exception("push of request %s failed", claim.request_id)
        return Outcome("permanent", output=log.text(), error=f"Internal error: {exc.__class__.__name__}: {exc}")


def _create(claim: Claim, prefix: Prefix, client: HandleServerClient, log: _Transcript) -> Outcome:
    values = records.new_record(claim.url, admin_handle=prefix.hs_admin_handle, admin_index=prefix.hs_admin_index,
                                permissions=prefix.hs_admin_permissions)
    try:
        log.call(client.create_handle, claim.full_handle, values)
    except HandleAlreadyExists:
        if claim.attempts <= 1:
            # On a first attempt, 409 means somebody else holds this handle: never overwrite it.
            found = _server_url(claim, client, log)
            raise HandleAlreadyExists(
                f"{claim.full_handle} already exists on the Handle server (resolving to {found or 'no URL'}); "
                "it was not created by this request. Import it or choose another suffix.",
                exchange="",
            ) from None
        # A retry: our earlier attempt may have landed before its answer was lost. Bring its URL up to date.
        log.call(client.update_values, claim.full_handle, [records.url_value(claim.url)])
    return _read_back(claim, client, log)


def _update(claim: Claim, client: HandleServerClient, log: _Transcript) -> Outcome:
    try:
        log.call(client.update_values, claim.full_handle, [records.url_value(claim.url)])
    except HandleNotFound:
        raise HandleNotFound(
            f"{claim.full_handle} is not on the Handle server, so its URL cannot be updated. "
            "Retry its create request, or repair it from reconciliation.", exchange="",
        ) from None
    return _read_back(claim, client, log)


def _delete(claim: Claim, client: HandleServerClient, log: _Transcript) -> Outcome:
    note = ""
    try:
        log.call(client.delete_handle, claim.full_handle)
    except HandleNotFound:
        note = "Already absent from the server."
    try:
        log.call(client.get_handle, claim.full_handle, indexes=[1])
    except HandleNotFound:
        return Outcome("success", output=log.text(note, "Verified: the server no longer has the handle."))
    return Outcome("transient", output=log.text(), error="The handle is still on the server after DELETE.")


def _server_url(claim: Claim, client: HandleServerClient, log: _Transcript) -> str | None:
    url, answer = client.get_url(claim.full_handle)
    log.lines.append(answer.exchange)
    return url


def _read_back(claim: Claim, client: HandleServerClient, log: _Transcript) -> Outcome:
    """Success means the server holds what we intended, never merely that it accepted the write."""
    found = _server_url(claim, client, log)
    if found == claim.url:
        return Outcome("success", output=log.text(f"Verified: the server resolves to {found}."))
    return Outcome("transient", output=log.text(),
                   error=f"After the write the server resolves to {found!r}, not {claim.url!r}.")


def _verify(claim: Claim, client: HandleServerClient, log: _Transcript) -> Outcome:
    try:
        found = _server_url(claim, client, log)
    except HandleNotFound as exc:
        if exc.exchange:
            log.lines.append(exc.exchange)
        if not claim.exists:
            return Outcome("success", output=log.text("Verified: deleted here and absent on the server."))
        return Outcome("permanent", output=log.text(), error=f"{claim.full_handle} is missing on the Handle server.")
    if not claim.exists:
        return Outcome("permanent", output=log.text(),
                       error=f"{claim.full_handle} is deleted here but still on the server ({found}).")
    if found != claim.url:
        return Outcome("permanent", output=log.text(),
                       error=f"Drift: the server resolves to {found!r}; we intend {claim.url!r}.")
    return Outcome("success", output=log.text(f"Verified: the server resolves to {found}."))
