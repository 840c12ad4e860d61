"""Following a handle's target the way a reader's browser would: an HTTP client for web pages.

Not a Handle server client (that is handles/handle_server/client.py). Polite and careful, because it
visits other people's sites, up to a million times: a minimum interval between requests to one host,
a timeout on every request, timeouts retried before they are reported (apart from failures), http(s)
only, and no requests to private, loopback or link-local addresses unless HANDLES_HEALTH_ALLOW_PRIVATE
is set. Every redirect hop is checked again, so a public page cannot redirect us into the intranet.
"""

from __future__ import annotations

import html
import ipaddress
import re
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter

from handles.handle_server.client import url_of

REDIRECT_STATUSES = {301, 302, 303, 307, 308}
TITLE_BYTES = 256 * 1024  # a page's <title> is in its head; reading more only costs the site bandwidth
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)


@dataclass
class FetchResult:
    start_url: str
    final_url: str = ""
    status: int | None = None
    hops: int = 0
    attempts: int = 1
    elapsed_ms: int = 0
    timed_out: bool = False
    error: str = ""
    refused: bool = False  # error is our refusal to request the URL (private address, scheme), not a failure
    title: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and not self.timed_out and self.status is not None and self.status < 400


class HostRateLimiter:
    """At most one request per `interval` seconds to each host, across threads. Each host has its own
    clock, so hosts are polite independently: a scheduler asks `ready_at` which host may go next."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def ready_at(self, host: str) -> float:
        """The monotonic time from which a request to this host needs no wait."""
        with self._lock:
            return self._next.get(host, 0.0)

    def wait(self, host: str) -> None:
        if self.interval <= 0:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next.get(host, 0.0))
            self._next[host] = slot + self.interval
        if slot > now:
            time.sleep(slot - now)
        # A thread that woke late (a busy machine) sends late: the host's next turn counts from now, so
        # two requests are never closer than the interval.
        with self._lock:
            self._next[host] = max(self._next[host], time.monotonic() + self.interval)


def host_of(url: str) -> str:
    """The key of a URL's host for politeness: its host name (lower-case), whatever the port."""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


@dataclass(frozen=True)
class Screening:
    """Whether a URL may be requested. `refused`: we decline on principle (a private address, a scheme
    other than http(s)); the handle is "not checked", never "broken". Otherwise `problem` is a failure of
    the target itself (its host does not resolve): that is broken."""

    problem: str = ""
    refused: bool = False


def screen(url: str, *, allow_private: bool) -> Screening:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return Screening(f"Not a valid URL: {url[:200]}", refused=True)
    if parts.scheme.lower() not in ("http", "https"):
        return Screening(f"Only http(s) URLs are followed, not {parts.scheme or 'a relative URL'}.", refused=True)
    if not parts.hostname:
        return Screening("The URL has no host.", refused=True)
    if allow_private:
        return Screening()
    try:
        infos = socket.getaddrinfo(parts.hostname, port or (443 if parts.scheme.lower() == "https" else 80),
                                   proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        return Screening(f"The host {parts.hostname} does not resolve ({exc}).")
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not address.is_global:
            return Screening(f"{parts.hostname} is a private or local address ({address}); such targets are not "
                             "requested (HANDLES_HEALTH_ALLOW_PRIVATE allows them).", refused=True)
    return Screening()


def refusal(url: str, *, allow_private: bool) -> str:
    """Why we will not (or cannot) request this URL ('' if we will)."""
    return screen(url, allow_private=allow_private).problem


class PageFetcher:
    """One session (keep-alive) shared by the threads of a health check."""

    def __init__(self, *, timeout: float, retries: int, max_redirects: int, host_interval: float,
                 allow_private: bool, user_agent: str, retry_pause: float = 1.0) -> None:
        self.timeout = timeout
        self.retries = retries
        self.max_redirects = max_redirects
        self.allow_private = allow_private
        self.retry_pause = retry_pause
        self.limiter = HostRateLimiter(host_interval)
        self._screenings: dict[tuple, Screening] = {}
        session = requests.Session()
        session.trust_env = False  # no proxies or CA bundles from the environment: what we test is direct
        session.headers.update({"User-Agent": user_agent, "Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
        adapter = HTTPAdapter(pool_connections=32, pool_maxsize=16)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self._session = session

    @classmethod
    def from_settings(cls) -> PageFetcher:
        from django.conf import settings

        return cls(timeout=settings.HANDLES_HEALTH_TIMEOUT, retries=settings.HANDLES_HEALTH_TIMEOUT_RETRIES,
                   max_redirects=settings.HANDLES_HEALTH_MAX_REDIRECTS,
                   host_interval=settings.HANDLES_HEALTH_HOST_INTERVAL,
                   allow_private=settings.HANDLES_HEALTH_ALLOW_PRIVATE,
                   user_agent=settings.HANDLES_HEALTH_USER_AGENT,
                   retry_pause=min(1.0, settings.HANDLES_HEALTH_TIMEOUT))

    def close(self) -> None:
        self._session.close()

    def follow(self, url: str, *, read_title: bool = False) -> FetchResult:
        """Follow redirects to the final page. A timeout is tried again (`retries` times) before it counts."""
        started = time.monotonic()
        result = FetchResult(start_url=url)
        for attempt in range(1, self.retries + 2):
            result = self._follow_once(url, read_title)
            result.attempts = attempt
            if not result.timed_out:
                break
            if attempt <= self.retries:
                time.sleep(self.retry_pause * attempt)
        result.elapsed_ms = int((time.monotonic() - started) * 1000)
        return result

    def screen_url(self, url: str) -> Screening:
        """screen(), resolving each host once per fetcher: a check follows thousands of URLs on few hosts."""
        try:
            parts = urlsplit(url)
            key = (parts.scheme.lower(), parts.hostname, parts.port)
        except ValueError:
            return screen(url, allow_private=self.allow_private)
        if key not in self._screenings:
            self._screenings[key] = screen(url, allow_private=self.allow_private)
        return self._screenings[key]

    def _follow_once(self, url: str, read_title: bool) -> FetchResult:
        result = FetchResult(start_url=url, final_url=url)
        current = url
        while True:
            screening = self.screen_url(current)
            if screening.problem:
                result.error, result.refused = screening.problem, screening.refused
                return result
            self.limiter.wait(host_of(current))
            try:
                response = self._session.get(current, allow_redirects=False, timeout=self.timeout, stream=True)
            except requests.Timeout:
                result.timed_out = True
                return result
            except requests.RequestException as exc:
                result.error = f"Could not connect to {urlsplit(current).hostname}: {exc.__class__.__name__}"
                return result
            with response:
                result.status = response.status_code
                location = response.headers.get("Location")
                if response.status_code in REDIRECT_STATUSES and location:
                    if result.hops >= self.max_redirects:
                        result.error = f"More than {self.max_redirects} redirects."
                        return result
                    result.hops += 1
                    current = urljoin(current, location)
                    result.final_url = current
                    continue
                if read_title and "html" in response.headers.get("Content-Type", "html"):
                    result.title = _read_title(response)
            return result

    def resolve_via_proxy(self, proxy_base: str, full_handle: str) -> tuple[str | None, str]:
        """(URL, '') from a proxy resolver's JSON API (https://hdl.handle.net/api/handles/...), (None, '')
        when it does not know the handle, or (None, reason) when it cannot be asked."""
        prefix, _, suffix = full_handle.partition("/")
        url = f"{proxy_base}/api/handles/{quote(prefix, safe='')}/{quote(suffix, safe='')}?type=URL"
        screening = self.screen_url(url)
        if screening.problem:
            return None, screening.problem
        self.limiter.wait(host_of(url))
        for attempt in range(self.retries + 1):
            try:
                response = self._session.get(url, timeout=self.timeout, allow_redirects=False)
            except requests.Timeout:
                if attempt < self.retries:
                    time.sleep(self.retry_pause)
                    continue
                return None, "timeout"
            except requests.RequestException as exc:
                return None, f"The proxy resolver could not be reached ({exc.__class__.__name__})."
            if response.status_code == 404:
                return None, ""
            try:
                body = response.json()
            except ValueError:
                return None, f"The proxy resolver answered HTTP {response.status_code} without JSON."
            if response.status_code != 200:
                return None, f"The proxy resolver answered HTTP {response.status_code}: {str(body)[:200]}"
            return url_of(body), ""
        return None, "timeout"


def _read_title(response: requests.Response) -> str:
    head = b""
    for block in response.iter_content(16384):
        head += block
        if len(head) >= TITLE_BYTES or b"</title" in head.lower():
            break
    match = _TITLE.search(head)
    if not match:
        return ""
    try:
        text = match.group(1).decode(response.encoding or "utf-8", "replace")
    except LookupError:  # a charset Python does not know
        text = match.group(1).decode("utf-8", "replace")
    return " ".join(html.unescape(text).split())[:500]
