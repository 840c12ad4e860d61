"""django-q2 task functions: thin. They take ids, call services and the push, and return a short status.

This is the one module that hands work to the broker (`async_task`). Services are imported inside the
functions, because services import this module.
"""

from __future__ import annotations

from django_q.tasks import async_task


def enqueue_request(request_id: int) -> None:
    """Hand a request to the task queue. Called after the transaction that recorded it commits."""
    from handles import services

    services.requests_mark_enqueued([request_id])
    async_task("handles.tasks.push_request", request_id, group="handle-requests",
               task_name=f"handle request {request_id}")


def push_request(request_id: int) -> str:
    """Push one request to the Handle server. Safe to run twice: the claim admits one worker at a time,
    per handle in request order, and a finished request is skipped."""
    from handles import services
    from handles.handle_server.client import client_for
    from handles.models import Prefix
    from handles.push import push

    claim = services.request_claim(request_id)
    if isinstance(claim, str):
        return claim
    prefix = Prefix.objects.get(pk=claim.prefix_id)
    outcome = push(claim, prefix, client_for(prefix.server_config()))
    finished = services.request_finish(claim, outcome)
    # Only transient failures (outage, timeout, 5xx) say the server is unreachable.
    services.prefix_record_contact(prefix_id=prefix.pk, ok=outcome.kind != "transient",
                                   error=outcome.error if outcome.kind == "transient" else "")
    return outcome.kind if finished is not None else "lease lost"


def sweep_requests() -> str:
    """Every minute (a django-q2 schedule): recover crashed workers' requests and lost enqueues."""
    from handles import services

    counts = services.requests_sweep()
    return f"reclaimed {counts['reclaimed']}, enqueued {counts['enqueued']}"
