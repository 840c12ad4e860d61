"""Who is calling, what they may do, and how often.

Two ways in, the Ninja auth classes of READ and WRITE, asked in turn: `Authorization: Bearer <token>`
(scripts, the DAMS, ArchivesSpace), or a staff session (the browser, e.g. the docs page): staff with
handles.view_handle read, and those with handles.change_handle also write, with Django's CSRF check. A read token never writes; a token
restricted to some prefixes cannot read or change handles under others.

Throttling counts calls per token (or staff user) and, for calls without valid credentials, per client
IP, in fixed windows kept in Django's cache (see HANDLES_CACHE_URL for a cache shared by all processes).
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NoReturn, Protocol

from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.db import router
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware

from handles.api import services, token_cache
from handles.api.errors import ApiError
from handles.api.models import TOKEN_RE, ApiToken, hash_secret


class NamedPrefix(Protocol):
    """A prefix as a model (Prefix) or as a lookup's row (handles.api.queries.LookupPrefix) gives it."""

    @property
    def pk(self) -> Any: ...

    @property
    def prefix(self) -> str: ...


@dataclass(frozen=True)
class Caller:
    token: ApiToken | None
    user: User | None
    can_write: bool
    prefix_ids: frozenset[int] | None  # None: every prefix

    @property
    def key(self) -> str:
        """Names the caller for throttling and for scoping Idempotency-Keys."""
        if self.token is not None:
            return f"token:{self.token.pk}"
        assert self.user is not None, "a caller is a token or a signed-in user"
        return f"user:{self.user.pk}"

    @property
    def via(self) -> str:
        """The request log's `requested_via`."""
        return f"api:token {self.token.name}"[:100] if self.token else "api:session"

    def may_use(self, prefix: NamedPrefix) -> bool:
        return self.prefix_ids is None or prefix.pk in self.prefix_ids

    def require_prefix(self, prefix: NamedPrefix) -> None:
        if not self.may_use(prefix):
            raise ApiError(403, "prefix_forbidden", f"This token is not allowed to use prefix {prefix.prefix}.")


class ApiRequest(HttpRequest):
    """A request Ninja has authenticated (for the type checker: Ninja sets `auth` to what READ or WRITE
    returned)."""

    auth: Caller


class BearerToken:
    """Ninja auth: `Authorization: Bearer <token>`. Without that header it passes (None), so StaffSession,
    the next in the list, is asked. `write`: the operation changes handles."""

    openapi_security_schema = {"type": "http", "scheme": "bearer", "bearerFormat": "hdl_<lookup>_<secret>"}

    def __init__(self, *, write: bool) -> None:
        self.write = write

    def __call__(self, request: HttpRequest) -> Caller | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        caller = _token_caller(request, header)
        if self.write:
            require_write(request, caller)
        return caller


class StaffSession:
    """Ninja auth: a logged-in staff user (the browser, e.g. the docs page); writes are CSRF-checked."""

    def __init__(self, *, write: bool) -> None:
        self.write = write

    @property
    def openapi_security_schema(self) -> dict[str, str]:
        return {"type": "apiKey", "in": "cookie", "name": settings.SESSION_COOKIE_NAME}

    def __call__(self, request: HttpRequest) -> Caller:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            _refuse(request, "authentication_required", "Send 'Authorization: Bearer <token>' (tokens are created "
                    "by an administrator), or log in as staff.")
        caller = Caller(token=None, user=user, can_write=user.has_perm("handles.change_handle"), prefix_ids=None)
        throttle(caller.key, settings.HANDLES_API_RATE)
        if not (user.is_active and user.is_staff and user.has_perm("handles.view_handle")):
            raise ApiError(403, "permission_denied", "Your account may not use the handle API.")
        if self.write:
            require_write(request, caller)
        return caller


Authenticator = Callable[[HttpRequest], Caller | None]
READ: list[Authenticator] = [BearerToken(write=False), StaffSession(write=False)]
WRITE: list[Authenticator] = [BearerToken(write=True), StaffSession(write=True)]


def _token_caller(request: HttpRequest, header: str) -> Caller:
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "bearer":
        _refuse(request, "invalid_token", "Use 'Authorization: Bearer <token>'.")
    plain = credentials.strip()
    cache_key = hash_secret(plain)
    remembered = token_cache.get(cache_key)
    if remembered is not None:
        token, prefix_ids = remembered
    else:
        match = TOKEN_RE.match(plain)
        found, prefix_ids = _token_and_prefixes(match["lookup"]) if match else (None, None)
        if match is None or found is None or not found.secret_matches(match["secret"]):
            _refuse(request, "invalid_token", "The token is not valid.")
        token = found
        if token.is_revoked:
            _refuse(request, "token_revoked", "The token was revoked; ask an administrator for a new one.")
        token_cache.put(cache_key, token, prefix_ids)
    caller = Caller(token=token, user=None, can_write=token.can_write, prefix_ids=prefix_ids)
    throttle(caller.key, settings.HANDLES_API_RATE)
    services.token_touch(token=token)
    return caller


def _token_and_prefixes(lookup: str) -> tuple[ApiToken | None, frozenset[int] | None]:
    """The token and the prefixes it is restricted to (None: all), in one query."""
    names = [f.attname for f in ApiToken._meta.concrete_fields]
    rows = list(ApiToken.objects.filter(lookup=lookup).values_list(*names, "prefixes__id"))
    if not rows:
        return None, None
    token = ApiToken.from_db(router.db_for_read(ApiToken), names, rows[0][:-1])
    return token, frozenset(row[-1] for row in rows if row[-1] is not None) or None


def _refuse(request: HttpRequest, code: str, message: str) -> NoReturn:
    """401; failed attempts count against the client's IP, so guessing tokens is throttled too."""
    throttle(f"ip:{client_ip(request)}", settings.HANDLES_API_ANON_RATE)
    raise ApiError(401, code, message, headers={"WWW-Authenticate": 'Bearer realm="handles"'})


def client_ip(request: HttpRequest) -> str:
    header = settings.HANDLES_API_CLIENT_IP_HEADER
    if header and request.META.get(header):
        return request.META[header].split(",")[-1].strip()  # the hop our own proxy added
    return request.META.get("REMOTE_ADDR", "")


# --- Writes ---------------------------------------------------------------------------------------
class _CsrfCheck(CsrfViewMiddleware):
    def _reject(self, request: HttpRequest, reason: str) -> str:
        return reason


def _no_view(request: HttpRequest) -> HttpResponse:
    """What the CSRF check is given as the view: it only reads whether the view is exempt (it is not)."""
    return HttpResponse(status=204)


def require_write(request: HttpRequest, caller: Caller) -> None:
    if not caller.can_write:
        if caller.token:
            raise ApiError(403, "insufficient_scope", "This token may only read; writing needs a write token.")
        raise ApiError(403, "permission_denied", "Your account may not change handles.")
    if caller.token is None:  # a browser session: cookies are sent automatically, so check CSRF
        check = _CsrfCheck(_no_view)
        check.process_request(request)
        reason = check.process_view(request, _no_view, (), {})
        if reason:
            raise ApiError(403, "csrf_failed", f"CSRF check failed: {reason}. Send the X-CSRFToken header.")


# --- Throttling -----------------------------------------------------------------------------------
_PERIODS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600,
            "d": 86400, "day": 86400}


@lru_cache
def parse_rate(rate: str) -> tuple[int, int]:
    """'1200/minute' -> (1200, 60)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*([a-z]+)\s*", rate)
    if not match or match[2] not in _PERIODS:
        raise ImproperlyConfigured(f"Invalid API rate {rate!r}; use e.g. '1200/minute'.")
    return int(match[1]), _PERIODS[match[2]]


def throttle(ident: str, rate: str) -> None:
    """Count one call in the current window; over the limit, a 429 with Retry-After."""
    limit, period = parse_rate(rate)
    now = time.time()
    window = int(now // period)
    if settings.CACHES["default"]["BACKEND"] == _PROCESS_CACHE:
        count = _count_in_process(ident, period, window)
    else:
        count = _count_in_cache(f"handles-api:rate:{ident}:{period}:{window}", period)
    if count > limit:
        retry_after = max(1, math.ceil((window + 1) * period - now))
        raise ApiError(429, "throttled", f"Too many requests: at most {limit} per {period} s. "
                       f"Retry in {retry_after} s.", headers={"Retry-After": str(retry_after)})


# Django's local-memory cache is private to each process: counting in a dict of the process counts the
# same calls, without the cache's key checks, lock and pickling (a tenth of an ArchivesSpace lookup's CPU).
_PROCESS_CACHE = "django.core.cache.backends.locmem.LocMemCache"
_windows: dict[int, tuple[int, dict[str, int]]] = {}  # period -> (its current window, counts per caller)


_windows_lock = threading.Lock()  # for threaded workers (gunicorn gthread)


def _count_in_process(ident: str, period: int, window: int) -> int:
    with _windows_lock:
        current, counts = _windows.get(period, (None, None))
        if current != window or counts is None:
            counts = {}
            _windows[period] = (window, counts)  # the previous window's counts are dropped with it
        counts[ident] = count = counts.get(ident, 0) + 1
    return count


def forget_counts() -> None:
    """Start every caller's in-process count afresh (tests; the cache's counters are cleared with it)."""
    _windows.clear()


def _count_in_cache(key: str, period: int) -> int:
    """A counter shared by every process that uses the cache (HANDLES_CACHE_URL=redis://...)."""
    try:
        count = cache.incr(key)  # most calls: the window's counter exists, so one cache call, not two
    except ValueError:  # the window's first call
        if cache.add(key, 1, period + 5):
            count = 1
        else:  # another process added it meanwhile
            try:
                count = cache.incr(key)
            except ValueError:  # and it expired since
                cache.set(key, 1, period + 5)
                count = 1
    return count
