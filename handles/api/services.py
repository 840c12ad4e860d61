"""Writes to API tokens. Handle and asset writes live in handles/services.py."""

from __future__ import annotations

import secrets
import string
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from handles.api import token_cache
from handles.api.models import ApiToken, hash_secret
from handles.models import Prefix

_LOOKUP_ALPHABET = string.ascii_lowercase + string.digits
# last_used_at is for people ("is this token still used?"): one write a minute per token is plenty.
_TOUCH_EVERY = timedelta(seconds=60)


@transaction.atomic
def token_create(*, token: ApiToken, prefixes: Iterable[Prefix] = (), created_by: User | None) -> str:
    """Save a new token and return its plain text, which is never stored and cannot be shown again."""
    secret = secrets.token_urlsafe(32)
    for _ in range(10):  # 36^10 lookups: a collision is rare; retry rather than fail
        lookup = "".join(secrets.choice(_LOOKUP_ALPHABET) for _ in range(10))
        if not ApiToken.objects.filter(lookup=lookup).exists():
            break
    token.lookup = lookup
    token.secret_hash = hash_secret(secret)
    token.created_by = created_by
    token.full_clean(exclude=["prefixes"])
    token.save()
    token.prefixes.set(prefixes)
    return f"hdl_{lookup}_{secret}"


@transaction.atomic
def token_update(*, token: ApiToken, prefixes: Iterable[Prefix]) -> ApiToken:
    """Change a token's name, scope or prefixes; its secret stays."""
    token.full_clean(exclude=["prefixes"])
    token.save(update_fields=["name", "scope"])
    token.prefixes.set(prefixes)
    transaction.on_commit(token_cache.forget)
    return token


def token_revoke(*, token: ApiToken, now: datetime | None = None) -> bool:
    """Revoke a token: at once in this process, within HANDLES_API_TOKEN_CACHE_SECONDS in the others.
    Returns False if it was already revoked."""
    revoked = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=now or timezone.now())
    token_cache.forget()
    return bool(revoked)


def token_touch(*, token: ApiToken, now: datetime | None = None) -> None:
    """Remember when a token was last used, at most once a minute, so busy clients do not write per call."""
    now = now or timezone.now()
    if token.last_used_at is not None and now - token.last_used_at < _TOUCH_EVERY:
        return
    ApiToken.objects.filter(pk=token.pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - _TOUCH_EVERY)
    ).update(last_used_at=now)
    token.last_used_at = now
