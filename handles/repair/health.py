"""Resolution health: does each handle, followed end to end, land on its object?

For each live handle: ask the Handle server (or a proxy resolver such as hdl.handle.net) for its URL,
follow that URL with redirects, and classify: resolves correctly; broken (not on the server, no URL,
HTTP error, refused or unreachable target); resolves to the wrong object (the final page is neither the
asset's expected URL nor names its external id, or its title is another object's); timeout (no answer
after the retries: reported apart, as it is often the site's bad moment, not a broken handle).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from difflib import SequenceMatcher

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from handles.handle_server.client import HandleNotFound, HandleServerError, client_for
from handles.labels import counted
from handles.models import Handle
from handles.repair import services
from handles.repair.http_check import FetchResult, PageFetcher
from handles.repair.models import HandleCheck, HealthOutcome, HealthRun
from handles.repair.rules import names_id, same_page

logger = logging.getLogger(__name__)
CHUNK = 200


@dataclass
class Verdict:
    outcome: str
    detail: str
    server_url: str = ""
    fetch: FetchResult | None = None


def selection(filters: dict) -> QuerySet[Handle]:
    """The live handles a health check covers, in a stable order."""
    handles = Handle.objects.live().select_related("prefix", "asset").order_by("pk")
    if filters.get("prefix_ids"):
        handles = handles.filter(prefix_id__in=filters["prefix_ids"])
    if filters.get("source_system"):
        handles = handles.filter(asset__source_system=filters["source_system"])
    if filters.get("status"):
        handles = handles.filter(status=filters["status"])
    if filters.get("handle_ids"):
        handles = handles.filter(pk__in=filters["handle_ids"])
    return handles


def _batches(handles: QuerySet[Handle], limit: int | None) -> Iterator[list[Handle]]:
    """The handles CHUNK at a time by primary key, each batch one short query: no cursor stays open while
    the checks are recorded (on SQLite, a connection closed in between would end it)."""
    last, left = 0, limit
    while left is None or left > 0:
        chunk = list(handles.filter(pk__gt=last)[: CHUNK if left is None else min(CHUNK, left)])
        if not chunk:
            return
        last = chunk[-1].pk
        left = None if left is None else left - len(chunk)
        yield chunk


def run(run_id: int, on_progress: Callable[[int, int, str], None] | None = None) -> HealthRun:
    """Check the selection, a chunk at a time, recording each handle's last check as it goes."""
    if not services.job_claim(HealthRun, run_id):
        return HealthRun.objects.get(pk=run_id)  # a second delivery of the task: already taken
    filters = HealthRun.objects.get(pk=run_id).filters
    handles = selection(filters)
    limit = int(filters["limit"]) if filters.get("limit") else None
    total = handles[:limit].count() if limit else handles.count()
    services.health_begin(run_id, total=total)
    fetcher = PageFetcher.from_settings()
    counts: Counter[str] = Counter()
    done = 0
    try:
        with ThreadPoolExecutor(max_workers=settings.HANDLES_HEALTH_WORKERS) as pool:
            # The pool's threads only ask the network; every database read and write is in this thread.
            for chunk in _batches(handles, limit):
                verdicts = list(pool.map(lambda h: check(h, fetcher, via_proxy=bool(filters.get("via_proxy")),
                                                         title_check=bool(filters.get("title_check"))), chunk))
                now = timezone.now()
                services.health_record([_check_row(h, v, run_id, now) for h, v in zip(chunk, verdicts, strict=True)])
                counts.update(v.outcome for v in verdicts)
                done += len(chunk)
                services.job_progress(HealthRun, run_id, done=done, counts=dict(counts))
                if on_progress:
                    on_progress(done, total, ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    except Exception as exc:
        logger.exception("health check %s failed", run_id)
        return services.health_finish(run_id, counts=dict(counts), error=f"Stopped by an internal error: {exc}")
    finally:
        fetcher.close()
    return services.health_finish(run_id, counts=dict(counts))


def _check_row(handle: Handle, verdict: Verdict, run_id: int, now) -> HandleCheck:
    fetch = verdict.fetch
    return HandleCheck(
        handle_id=handle.pk, run_id=run_id, checked_at=now, outcome=verdict.outcome,
        server_url=verdict.server_url[:2000], final_url=(fetch.final_url if fetch else "")[:2000],
        http_status=fetch.status if fetch else None, hops=fetch.hops if fetch else 0,
        attempts=fetch.attempts if fetch else 1, elapsed_ms=fetch.elapsed_ms if fetch else 0,
        page_title=(fetch.title if fetch else "")[:500], detail=verdict.detail[:1000])


def check(handle: Handle, fetcher: PageFetcher, *, via_proxy: bool = False, title_check: bool = False) -> Verdict:
    server_url, problem = _server_url(handle, fetcher, via_proxy)
    if problem == "timeout":
        return Verdict(HealthOutcome.TIMEOUT, "The resolver did not answer in time, after retries.")
    if problem:
        return Verdict(HealthOutcome.BROKEN, problem)
    fetch = fetcher.follow(server_url, read_title=title_check)
    verdict = _classify(handle, server_url, fetch, title_check)
    verdict.server_url, verdict.fetch = server_url, fetch
    return verdict


def _server_url(handle: Handle, fetcher: PageFetcher, via_proxy: bool) -> tuple[str, str]:
    """The URL the world's resolver hands out for this handle, or ('', why not)."""
    if via_proxy:
        url, problem = fetcher.resolve_via_proxy(settings.HANDLES_HEALTH_PROXY_BASE, handle.full_handle)
        if problem:
            return "", problem
        if url is None:
            return "", "The proxy resolver does not know this handle."
        return url, ""
    client = client_for(handle.prefix.server_config())
    for attempt in range(settings.HANDLES_HEALTH_TIMEOUT_RETRIES + 1):
        try:
            url, _ = client.get_url(handle.full_handle)
        except HandleNotFound:
            return "", "The handle is not on the Handle server."
        except HandleServerError as exc:
            if exc.transient and attempt < settings.HANDLES_HEALTH_TIMEOUT_RETRIES:
                continue
            return "", "timeout" if exc.transient else f"The Handle server refused the lookup: {exc}"
        if not url:
            return "", "The Handle server's record has no URL."
        return url, ""
    return "", "timeout"


def _classify(handle: Handle, server_url: str, fetch: FetchResult, title_check: bool) -> Verdict:
    expected = handle.resolver_target
    asset = handle.asset
    if fetch.timed_out:
        return Verdict(HealthOutcome.TIMEOUT, f"No answer from {fetch.final_url} after {counted(fetch.attempts, 'attempt')}.")
    if fetch.error:
        return Verdict(HealthOutcome.BROKEN, fetch.error)
    if handle.status == Handle.Status.TOMBSTONED:
        if same_page(fetch.final_url, expected) or same_page(server_url, expected):
            return Verdict(HealthOutcome.CORRECT, "Resolves to its tombstone page.")
        return Verdict(HealthOutcome.WRONG_OBJECT, f"Tombstoned, but resolves to {fetch.final_url}, not to its "
                                                   "tombstone page.")
    if fetch.status is not None and fetch.status >= 400:
        return Verdict(HealthOutcome.BROKEN, f"HTTP {fetch.status} at {fetch.final_url}.")
    external_id = asset.external_id if asset else ""
    if title_check and asset and asset.title and fetch.title and not titles_match(fetch.title, asset.title):
        return Verdict(HealthOutcome.WRONG_OBJECT, f"The page's title is {fetch.title!r}, the object's is "
                                                   f"{asset.title!r}.")
    targets = [expected] + ([asset.url] if asset and asset.url else [])
    if any(same_page(fetch.final_url, t) for t in targets) or names_id(fetch.final_url, external_id):
        return Verdict(HealthOutcome.CORRECT, "")
    if same_page(server_url, expected):
        # The handle points where we intend; the site itself redirected on (a path alias, a login page).
        return Verdict(HealthOutcome.CORRECT, f"The site redirected from {server_url} to {fetch.final_url}.")
    wanted = f"{expected}" + (f" or a URL naming {external_id}" if external_id else "")
    return Verdict(HealthOutcome.WRONG_OBJECT, f"Lands on {fetch.final_url}; expected {wanted}.")


_NOT_WORD = re.compile(r"[\W_]+")


def titles_match(page_title: str, asset_title: str) -> bool:
    """Page titles carry the site's name ("Letter Five | Grinnell College"): containment or a close match."""
    page = _NOT_WORD.sub(" ", page_title.casefold()).strip()
    asset = _NOT_WORD.sub(" ", asset_title.casefold()).strip()
    if not page or not asset:
        return True
    return asset in page or page in asset or SequenceMatcher(None, page, asset).ratio() >= 0.8
