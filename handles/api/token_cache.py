"""A short per-process memory of verified tokens, so most API calls need no query to authenticate, and of
the default prefix, so a create call that names none needs no query to find it.

Keyed by the SHA-256 of the whole token, so only a token that was verified in full is remembered.
A token revoked or changed is forgotten at once by the process that changed it, and by every other
process within HANDLES_API_TOKEN_CACHE_SECONDS (0: ask the database on every call).
"""

from __future__ import annotations

import time

from django.conf import settings
from django.db import transaction

from handles.api.models import ApiToken
from handles.models import Prefix

_MAX_ENTRIES = 10_000
_entries: dict[str, tuple[float, ApiToken, frozenset[int] | None]] = {}
_default_prefix: tuple[float, Prefix] | None = None


def get(key: str) -> tuple[ApiToken, frozenset[int] | None] | None:
    entry = _entries.get(key)
    if entry is None or entry[0] < time.monotonic():
        return None
    return entry[1], entry[2]


def put(key: str, token: ApiToken, prefix_ids: frozenset[int] | None) -> None:
    seconds = settings.HANDLES_API_TOKEN_CACHE_SECONDS
    if seconds <= 0:
        return
    if len(_entries) >= _MAX_ENTRIES:
        _entries.clear()  # many tokens at once is unusual: start afresh rather than track ages
    _entries[key] = (time.monotonic() + seconds, token, prefix_ids)


def forget() -> None:
    _entries.clear()
    forget_default_prefix()


def get_default_prefix() -> Prefix | None:
    entry = _default_prefix
    if entry is None or entry[0] < time.monotonic():
        return None
    return entry[1]


def put_default_prefix(prefix: Prefix) -> None:
    global _default_prefix
    seconds = settings.HANDLES_API_TOKEN_CACHE_SECONDS
    if seconds > 0:
        _default_prefix = (time.monotonic() + seconds, prefix)


def forget_default_prefix() -> None:
    global _default_prefix
    _default_prefix = None


def prefix_changed(**_signal: object) -> None:
    """A prefix saved or deleted in this process (the default may have moved): ask the database again, now
    and once committed, lest another thread re-read the old row meanwhile."""
    forget_default_prefix()
    if transaction.get_connection().in_atomic_block:
        transaction.on_commit(forget_default_prefix)
