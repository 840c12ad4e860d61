"""django-q2 task functions: thin. They take ids, call services and the push, and return a short status.

This is the one module that hands work to the broker (`async_task`). Services are imported inside the
functions, because services import this module.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from django.conf import settings
from django_q.tasks import async_task

if TYPE_CHECKING:
    from handles import services


def enqueue_request(request_id: int) -> None:
    """Hand a request to the task queue. Called after the transaction that recorded it commits."""
    from handles import services

    services.requests_mark_enqueued([request_id])
    async_task("handles.tasks.push_request", request_id, group="handle-requests",
               task_name=f"handle request {request_id}")


def push_request(request_id: int) -> str:
    """Push one request to the Handle server, then, for up to HANDLES_DRAIN_SECONDS, other due requests
    in batches: one hand-over then carries many pushes. Safe to run twice: the claims admit one worker
    at a time, per handle in request order, and a finished request is skipped."""
    from handles import services

    claimed_at = time.monotonic()
    claim = services.request_claim(request_id)
    if isinstance(claim, str):
        result = claim
    else:
        (kind,) = _push_batch([claim], claimed_at)
        result = kind or "lease lost"
    if result == "transient":
        return result  # the server is in trouble: leave the rest to their backoff and the sweep
    drained = _drain(time.monotonic() + settings.HANDLES_DRAIN_SECONDS)
    return f"{result}; drained {drained}" if drained else result


def _drain(deadline: float) -> int:
    """Push batches of due requests until none is left, the time is up, or the server is in trouble."""
    from handles import services

    pushed = 0
    while time.monotonic() < deadline:
        claimed_at = time.monotonic()
        claims = services.requests_claim_batch(settings.HANDLES_DRAIN_BATCH)
        if not claims:
            break
        kinds = _push_batch(claims, claimed_at)
        pushed += sum(kind is not None for kind in kinds)
        if "transient" in kinds or None in kinds:
            break  # backoff and the sweep take it from here
    return pushed


def _push_batch(claims: list[services.Claim], claimed_at: float) -> list[str | None]:
    """Push claimed requests one after another (no transaction open) and record them in one transaction.
    Once a push fails transiently, or the lease has no room left for a slowest push (3 calls that each
    time out), the rest go back to the queue unpushed: the sweep must never take back a request whose
    push is still running. Returns each claim's outcome kind; None for one not pushed or whose lease
    was lost."""
    from handles import services
    from handles.handle_server.client import client_for
    from handles.models import Prefix
    from handles.push import push

    prefixes = Prefix.objects.in_bulk({claim.prefix_id for claim in claims})
    clients = {pk: client_for(prefix.server_config()) for pk, prefix in prefixes.items()}
    give_back_at = claimed_at + settings.HANDLES_LEASE_SECONDS - 3 * settings.HANDLES_SERVER_TIMEOUT
    results: list[tuple[services.Claim, services.Outcome | None]] = []
    troubled = False
    for claim in claims:
        outcome = None
        if not results or (not troubled and time.monotonic() < give_back_at):  # the first fits, as alone
            outcome = push(claim, prefixes[claim.prefix_id], clients[claim.prefix_id])
            troubled = outcome.kind == "transient"
        results.append((claim, outcome))
    recorded = {request.pk for request in services.requests_finish_batch(results)}
    # Only transient failures (outage, timeout, 5xx) say the server is unreachable.
    for prefix_id in prefixes:
        outcomes = [o for c, o in results if o is not None and c.prefix_id == prefix_id]
        if outcomes:
            errors = [o.error for o in outcomes if o.kind == "transient"]
            services.prefix_record_contact(prefix_id=prefix_id, ok=not errors, error=errors[0] if errors else "")
    return [outcome.kind if outcome and claim.request_id in recorded else None for claim, outcome in results]


def sweep_requests() -> str:
    """Every minute (a django-q2 schedule): recover crashed workers' requests and lost enqueues."""
    from handles import services

    counts = services.requests_sweep()
    return f"reclaimed {counts['reclaimed']}, enqueued {counts['enqueued']}"
