"""Helpers of the outbox's tests."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from handles.handle_server.client import client_for
from handles.models import Handle, HandleRequest
from handles.services import handles as handle_services


def server_url(prefix, handle: Handle) -> str | None:
    return client_for(prefix.server_config()).get_url(handle.full_handle)[0]


def make_due(request: HandleRequest) -> None:
    """Let the backoff time pass: the request was handed over a while ago and its retry time has come."""
    now = timezone.now()
    HandleRequest.objects.filter(pk=request.pk).update(enqueued_at=now - timedelta(minutes=2),
                                                       next_attempt_at=now - timedelta(seconds=1))


# --- Batches: one claim and one finish transaction for many handles, and the drain that uses them ------
def record_unpushed(prefix, unique_suffix, django_capture_on_commit_callbacks, changes: int = 1) -> list[HandleRequest]:
    """Mint a handle and redirect it `changes - 1` times; nothing is handed to the queue."""
    with django_capture_on_commit_callbacks():
        req = handle_services.handle_mint(prefix=prefix, suffix=unique_suffix("b"), target_url="https://example.org/b0")
        reqs = [req] + [handle_services.handle_redirect(handle=req.handle, target_url=f"https://example.org/b{i}")
                        for i in range(1, changes)]
    return reqs
