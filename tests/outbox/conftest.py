"""Fixtures of the outbox's tests."""

from __future__ import annotations

import pytest

from handles.outbox import handover


@pytest.fixture
def no_enqueue(monkeypatch):
    """Outside a test transaction on_commit runs at once (inline tasks): let the test's workers push instead."""
    monkeypatch.setattr(handover, "enqueue_request", lambda request_id: None)
