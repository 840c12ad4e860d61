"""A short per-process memory of verified tokens, so most API calls need no query to authenticate.

Keyed by the SHA-256 of the whole token, so only a token that was verified in full is remembered.
A token revoked or changed is forgotten at once by the process that changed it, and by every other
process within HANDLES_API_TOKEN_CACHE_SECONDS (0: ask the database on every call).
"""

from __future__ import annotations

import time

from django.conf import settings

from handles.api.models import ApiToken

_MAX_ENTRIES = 10_000
_entries: dict[str, tuple[float, ApiToken, frozenset[int] | None]] = {}


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
