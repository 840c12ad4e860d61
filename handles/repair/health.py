"""Resolution health: does each handle, followed end to end, land on its object?

For each live handle: ask the Handle server (or a proxy resolver such as hdl.handle.net) for its URL,
follow that URL with redirects, and classify: resolves correctly; broken (not on the server, no URL,
HTTP error, unreachable target); resolves to the wrong object (the final page is neither the asset's
expected URL nor names its external id, or its title is another object's); timeout (no answer after the
retries: reported apart, as it is often the site's bad moment, not a broken handle); not checked (we
refused to request it: a private or loopback address, a scheme other than http(s)).

A run checks its handles in slices (`check_slice`), each within a time budget, so a job runner can stop
and resume it anywhere: a slice checks the handles of the run that have no result yet. Checks run in
parallel across hosts, each host at its own politeness interval (HANDLES_HEALTH_HOST_INTERVAL): worker
threads only do network I/O, and the slice's own thread schedules them host by host and writes every
result (SQLite, make run's database, wants one writer).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models import Count, Exists, OuterRef, QuerySet
from django.utils import timezone

from handles import jobs
from handles.handle_server.client import HandleNotFound, HandleServerError, client_for
from handles.labels import counted
from handles.models import Asset, Handle
from handles.repair import services
from handles.repair.http_check import FetchResult, PageFetcher, host_of
from handles.repair.models import NOT_ON_SERVER, HandleCheck, HealthOutcome, HealthRun, JobState
from handles.repair.rules import names_id, same_page
from handles.repair.titles import CONTAINED, EXACT, NEAR_MISS, sibling_candidates, title_score

logger = logging.getLogger(__name__)
PAGE = 500  # handles read from the database at a time
LOOKAHEAD = 5000  # handles a slice holds in its per-host queues: enough to keep many hosts busy
FLUSH_SECONDS = 1.0  # results are written (and progress shown) at least this often


@dataclass
class Verdict:
    outcome: str
    detail: str
    server_url: str = ""
    fetch: FetchResult | None = None
    title_score: float | None = None


@dataclass
class Probe:
    """What the network said about one handle (a worker thread's whole job: no database here)."""

    server_url: str = ""
    problem: str = ""  # why there is no server URL ("timeout", or the reason)
    refused: bool = False  # the problem is our refusal to ask (not checked)
    fetch: FetchResult | None = None
    lookup_seconds: float = 0.0  # asking the Handle server, before the target's host is asked


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
    if filters.get("limit"):
        handles = handles.filter(pk__in=handles.values("pk")[: int(filters["limit"])])
    return handles


def remaining(run: HealthRun) -> QuerySet[Handle]:
    """The run's handles that have no result in it yet (what a resumed run still has to check)."""
    return selection(run.filters).exclude(pk__in=HandleCheck.objects.filter(run=run).values("handle_id"))


def outcome_counts(run_id: int) -> dict[str, int]:
    """The run's results by outcome, counted from its rows (so a resumed run counts each handle once)."""
    return dict(HandleCheck.objects.filter(run_id=run_id).values_list("outcome").annotate(n=Count("pk"))
                .order_by())


# --- A slice --------------------------------------------------------------------------------------------
class _HostQueues:
    """Handles waiting, one queue per host, filled from the database a page at a time."""

    def __init__(self, run: HealthRun) -> None:
        self.run = run
        self.queues: dict[str, deque[Handle]] = {}
        self.size = 0
        self.last_pk = 0
        self.exhausted = False

    def refill(self) -> None:
        while not self.exhausted and self.size < LOOKAHEAD:
            page = list(remaining(self.run).filter(pk__gt=self.last_pk)[:PAGE])
            if len(page) < PAGE:
                self.exhausted = True
            for handle in page:
                self.queues.setdefault(host_of(handle.resolver_target), deque()).append(handle)
            self.size += len(page)
            if page:
                self.last_pk = page[-1].pk

    def take(self, host: str) -> Handle:
        self.size -= 1
        handle = self.queues[host].popleft()
        if not self.queues[host]:
            del self.queues[host]
        return handle

    @property
    def empty(self) -> bool:
        return self.exhausted and not self.size


def check_slice(run: HealthRun, *, budget_seconds: float) -> int:
    """Check handles of `run` that have no result yet, for about `budget_seconds`, and record them.

    Hosts are checked in parallel, each at most once per HANDLES_HEALTH_HOST_INTERVAL and one request at
    a time, so the rate is bounded by the sum of the hosts' rates (and HANDLES_HEALTH_WORKERS). When the
    budget is spent no new check starts (a budget spent at once still starts one round); checks under way
    are awaited and recorded, and any still unfinished after a grace period (about the budget) are
    abandoned unrecorded, so the next slice checks them again; a slice waits for at least one result. One
    row per handle per run: a handle recorded twice (two slices at once) is kept once. Returns how many
    results were recorded; 0 only when none remain.
    """
    deadline = time.monotonic() + budget_seconds
    filters = run.filters
    via_proxy, title_check = bool(filters.get("via_proxy")), bool(filters.get("title_check"))
    fetcher = PageFetcher.from_settings()
    queues = _HostQueues(run)
    counts: Counter[str] = Counter(outcome_counts(run.pk))
    pending: list[HandleCheck] = []
    recorded = 0
    last_flush = time.monotonic()
    in_flight: dict[Future, tuple[str, Handle]] = {}
    workers = max(1, settings.HANDLES_HEALTH_WORKERS)
    host_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="health")

    lead = 0.0  # how long a check asks the Handle server before it asks the target's host (recent peak)

    def collect(futures: Iterable[Future[Probe]]) -> None:
        nonlocal lead
        for future in futures:
            host, handle = in_flight.pop(future)
            found = future.result()
            lead = max(found.lookup_seconds, 0.95 * lead)  # a decaying peak: early enough for most lookups
            verdict = classify(handle, found, title_check=title_check)
            pending.append(_check_row(handle, verdict, run.pk, timezone.now()))
            counts[verdict.outcome] += 1

    def flush() -> None:
        nonlocal recorded, last_flush
        if pending:
            services.health_record(pending)
            recorded += len(pending)
            pending.clear()
            services.job_progress(HealthRun, run.pk, done=sum(counts.values()), counts=dict(counts))
        last_flush = time.monotonic()

    try:
        started = False
        while not started or time.monotonic() < deadline:  # a spent budget still starts one round
            started = True
            now = time.monotonic()
            queues.refill()
            early = _early(lead, fetcher)
            next_ready = _start_ready_hosts(queues, in_flight, pool, workers, fetcher, now + early, via_proxy,
                                            title_check, host_locks)
            next_ready = next_ready - early if next_ready is not None else None
            if not in_flight and queues.empty:
                break
            # Sleep until a check ends, a waiting host's turn comes, results are due, or the budget ends.
            wake = min(t for t in (next_ready, last_flush + FLUSH_SECONDS, deadline) if t is not None)
            timeout = max(0.0, wake - time.monotonic())
            if in_flight:
                collect(wait(list(in_flight), timeout=timeout, return_when=FIRST_COMPLETED)[0])
            else:
                time.sleep(timeout)
            if time.monotonic() - last_flush >= FLUSH_SECONDS:
                flush()
        # The budget is spent: no new check starts. The ones under way are awaited a while (recorded as they
        # end); any still running then are abandoned unrecorded, and the next slice checks them again.
        grace_until = time.monotonic() + _grace_seconds(budget_seconds)
        # ...but a slice that has recorded nothing waits for its first result: 0 means none remain.
        while in_flight and (time.monotonic() < grace_until or not (recorded or pending)):
            collect(wait(list(in_flight), timeout=max(0.05, min(FLUSH_SECONDS, grace_until - time.monotonic())),
                         return_when=FIRST_COMPLETED)[0])
            flush()
    finally:
        abandoned = len(in_flight)
        pool.shutdown(wait=False, cancel_futures=True)
        fetcher.close()
    flush()
    if abandoned:
        logger.warning("health check %s: %d unfinished checks abandoned at the end of a slice; the next slice "
                       "checks them again", run.pk, abandoned)
    return recorded


def _early(lead: float, fetcher: PageFetcher) -> float:
    """How long before a host's turn its next check starts: a check first asks the Handle server, so it
    starts that much early (the recent longest lookup, and a margin) and reaches the host on its turn (it
    waits there for the turn). A late request delays every later turn of its host: without this, every
    host's rate would be 1 / (interval + lookup), not 1 / interval."""
    return min(fetcher.limiter.interval, 1.5 * lead + 0.005)


def _start_ready_hosts(queues: _HostQueues, in_flight: dict, pool: ThreadPoolExecutor, workers: int,
                       fetcher: PageFetcher, now: float, via_proxy: bool, title_check: bool,
                       host_locks: defaultdict[str, threading.Lock]) -> float | None:
    """Start a check on every host whose turn has come (by `now`, which runs a little ahead: see _early)
    and that has none under way (any number at once when there is no politeness interval). Returns when
    the next waiting host's turn comes, if any (on the same clock)."""
    polite = fetcher.limiter.interval > 0
    under_way = Counter(host for host, _ in in_flight.values())
    next_ready = None
    # Polite: two checks of a host at most, one following its page (host_lock), the next asking the Handle
    # server meanwhile, so the host's next turn is not lost to the lookup. Every host gets its first check
    # before any gets a second.
    for per_host in (1, 2) if polite else (workers,):
        for host in list(queues.queues):
            while len(in_flight) < workers and under_way[host] < per_host and host in queues.queues:
                ready = fetcher.limiter.ready_at(host)
                if ready > now:
                    next_ready = ready if next_ready is None else min(next_ready, ready)
                    break
                handle = queues.take(host)
                future = pool.submit(probe, handle, fetcher, via_proxy=via_proxy, title_check=title_check,
                                     host_lock=host_locks[host] if polite else None)
                in_flight[future] = (host, handle)
                under_way[host] += 1
            if len(in_flight) >= workers:
                return next_ready
    return next_ready


def _grace_seconds(budget_seconds: float) -> float:
    """How long checks under way are awaited after the budget: as long as one can take (its timeouts and
    retries), but no longer than the budget itself (at least 2 s), so a slice stays within about twice
    its budget: a job runner's slices must fit the task timeout."""
    longest = (settings.HANDLES_HEALTH_TIMEOUT + 1) * (settings.HANDLES_HEALTH_TIMEOUT_RETRIES + 1)
    return min(longest, max(2.0, budget_seconds))


def run(run_id: int, on_progress: Callable[[int, int, str], None] | None = None) -> HealthRun:
    """Check the selection here, slice after slice (the `check_health` command; the worker runs the same
    slices as tasks): each handle's check is recorded as it goes, so a run stopped anywhere resumes."""
    def progress(job: HealthRun) -> None:
        if on_progress:
            on_progress(job.progress_done, job.progress_total,
                        ", ".join(f"{k}: {v}" for k, v in sorted(job.counts.items())))

    return jobs.run_inline(RUNNER, run_id, on_slice=progress)


def run_slice(run: HealthRun, work: jobs.Slice) -> str:
    """One slice of a health check (handles.jobs.Runner.work)."""
    if not run.checkpoint.get("begun"):
        total = selection(run.filters).count()
        work.save({"begun": True}, progress_total=total, progress_done=0, counts={}, error="",
                  message="Following each handle")
        run.refresh_from_db()
    # Progress is saved at least every quarter of the task timeout, so a slice killed at the timeout keeps
    # what it checked and counts as progress.
    step = settings.HANDLES_TASK_TIMEOUT / 4
    while True:
        recorded = check_slice(run, budget_seconds=min(work.time_left(), step))
        counts = outcome_counts(run.pk)
        if not recorded or not remaining(run).exists():
            services.job_progress(HealthRun, run.pk, done=sum(counts.values()))
            services.health_finish(run.pk, counts=counts)
            return JobState.DONE
        work.save(progress_done=sum(counts.values()), counts=counts)
        if work.over():
            return jobs.CONTINUE


RUNNER = jobs.Runner(name="health", label="health check", model=HealthRun, work=run_slice)


def _check_row(handle: Handle, verdict: Verdict, run_id: int, now: datetime) -> HandleCheck:
    fetch = verdict.fetch
    return HandleCheck(
        handle_id=handle.pk, run_id=run_id, checked_at=now, outcome=verdict.outcome,
        server_url=verdict.server_url[:2000], final_url=(fetch.final_url if fetch else "")[:2000],
        http_status=fetch.status if fetch else None, hops=fetch.hops if fetch else 0,
        attempts=fetch.attempts if fetch else 1, elapsed_ms=fetch.elapsed_ms if fetch else 0,
        page_title=(fetch.title if fetch else "")[:500], title_score=verdict.title_score,
        detail=verdict.detail[:1000])


# --- One handle -----------------------------------------------------------------------------------------
def check(handle: Handle, fetcher: PageFetcher, *, via_proxy: bool = False, title_check: bool = False) -> Verdict:
    return classify(handle, probe(handle, fetcher, via_proxy=via_proxy, title_check=title_check),
                    title_check=title_check)


def probe(handle: Handle, fetcher: PageFetcher, *, via_proxy: bool = False, title_check: bool = False,
          host_lock: threading.Lock | None = None) -> Probe:
    """The network part of a check: the server's URL, then the page it leads to. Thread-safe, no database.
    `host_lock`: held while the page is followed, so its host sees one check at a time, while the next
    check's Handle server lookup may already run."""
    started = time.monotonic()
    result = _server_url(handle, fetcher, via_proxy)
    result.lookup_seconds = time.monotonic() - started
    if result.problem:
        return result
    with host_lock or nullcontext():
        result.fetch = fetcher.follow(result.server_url, read_title=title_check)
    return result


def _server_url(handle: Handle, fetcher: PageFetcher, via_proxy: bool) -> Probe:
    """The URL the world's resolver hands out for this handle, or why not."""
    if via_proxy:
        screening = fetcher.screen_url(settings.HANDLES_HEALTH_PROXY_BASE)
        if screening.refused:
            return Probe(problem=f"The proxy resolver is not asked: {screening.problem}", refused=True)
        url, problem = fetcher.resolve_via_proxy(settings.HANDLES_HEALTH_PROXY_BASE, handle.full_handle)
        if problem:
            return Probe(problem=problem)
        if url is None:
            return Probe(problem="The proxy resolver does not know this handle.")
        return Probe(server_url=url)
    client = client_for(handle.prefix.server_config())
    for attempt in range(settings.HANDLES_HEALTH_TIMEOUT_RETRIES + 1):
        try:
            url, _ = client.get_url(handle.full_handle)
        except HandleNotFound:
            return Probe(problem=NOT_ON_SERVER)
        except HandleServerError as exc:
            if exc.transient and attempt < settings.HANDLES_HEALTH_TIMEOUT_RETRIES:
                continue
            return Probe(problem="timeout" if exc.transient else f"The Handle server refused the lookup: {exc}")
        if not url:
            return Probe(problem="The Handle server's record has no URL.")
        return Probe(server_url=url)
    return Probe(problem="timeout")


def classify(handle: Handle, found: Probe, *, title_check: bool = False) -> Verdict:
    """The verdict on what the network said. May read other assets' titles (the caller's thread)."""
    if found.refused:
        return Verdict(HealthOutcome.NOT_CHECKED, found.problem)
    if found.problem == "timeout":
        return Verdict(HealthOutcome.TIMEOUT, "The resolver did not answer in time, after retries.")
    if found.problem:
        return Verdict(HealthOutcome.BROKEN, found.problem)
    assert found.fetch is not None, "a probe without a problem has fetched the target (probe())"
    verdict = _classify(handle, found.server_url, found.fetch, title_check)
    verdict.server_url, verdict.fetch = found.server_url, found.fetch
    return verdict


def _classify(handle: Handle, server_url: str, fetch: FetchResult, title_check: bool) -> Verdict:
    expected = handle.resolver_target
    asset = handle.asset
    if fetch.timed_out:
        return Verdict(HealthOutcome.TIMEOUT, f"No answer from {fetch.final_url} after {counted(fetch.attempts, 'attempt')}.")
    if fetch.refused:
        return Verdict(HealthOutcome.NOT_CHECKED, f"{fetch.error} (at {fetch.final_url})" if fetch.hops
                       else fetch.error)
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
    title_verdict = None
    if title_check and asset and asset.title and fetch.title:
        title_verdict = title_judgement(fetch.title, asset, handle.prefix.site_name)
        if title_verdict.outcome != HealthOutcome.CORRECT:
            return title_verdict
    targets = [expected] + ([asset.url] if asset and asset.url else [])
    score = title_verdict.title_score if title_verdict else None
    if any(same_page(fetch.final_url, t) for t in targets) or names_id(fetch.final_url, external_id):
        return Verdict(HealthOutcome.CORRECT, "", title_score=score)
    if same_page(server_url, expected):
        # The handle points where we intend; the site itself redirected on (a path alias, a login page).
        return Verdict(HealthOutcome.CORRECT, f"The site redirected from {server_url} to {fetch.final_url}.",
                       title_score=score)
    wanted = f"{expected}" + (f" or a URL naming {external_id}" if external_id else "")
    return Verdict(HealthOutcome.WRONG_OBJECT, f"Lands on {fetch.final_url}; expected {wanted}.", title_score=score)


# --- Titles: is the page the object's, or another's? (the scores: handles.repair.titles) -------------------
def title_judgement(page_title: str, asset: Asset, site_name: str = "") -> Verdict:
    """Correct only when the page names this object's title and no other object's better. A page whose
    title another asset matches better is that asset's page (wrong object, naming it); a near miss with
    no better match is reported with its score, never accepted as a match. `site_name`: the segment of
    page titles that names the site (the prefix's site name), which says nothing about the object."""
    own = title_score(page_title, asset.title, site_name)
    if own < EXACT:
        better = [(other, score) for other, score in sibling_candidates(page_title, asset, site_name)
                  if score > own]
        if better:
            other, score = better[0]
            return Verdict(HealthOutcome.WRONG_OBJECT,
                           f"The page is another object's: its title {page_title!r} matches "
                           f"{other.source_system}:{other.external_id} {other.title!r} (score {score:.2f}) better "
                           f"than this object's {asset.title!r} (score {own:.2f}).", title_score=own)
    if own >= CONTAINED:
        return Verdict(HealthOutcome.CORRECT, "", title_score=own)
    if own >= NEAR_MISS:
        return Verdict(HealthOutcome.WRONG_OBJECT,
                       f"Near miss: the page's title {page_title!r} is close to, but not, this object's "
                       f"{asset.title!r} (score {own:.2f}).", title_score=own)
    return Verdict(HealthOutcome.WRONG_OBJECT, f"The page's title is {page_title!r}, the object's is "
                                               f"{asset.title!r} (score {own:.2f}).", title_score=own)


def prune_old_runs() -> int:
    """Keep the results of the newest HANDLES_HEALTH_KEEP_RUNS finished runs (their counts stay for the
    trend). Returns how many runs lost their results."""
    keep = settings.HANDLES_HEALTH_KEEP_RUNS
    finished = HealthRun.objects.filter(state__in=[JobState.DONE, JobState.FAILED]).order_by("-pk")
    has_results = HandleCheck.objects.filter(run_id=OuterRef("pk"))
    old = list(finished.filter(Exists(has_results)).exclude(pk__in=list(finished.values_list("pk", flat=True)[:keep]))
               .values_list("pk", flat=True))
    for run_id in old:
        services.health_prune(run_id)
    return len(old)
