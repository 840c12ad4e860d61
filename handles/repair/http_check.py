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
    title: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and not self.timed_out and self.status is not None and self.status < 400


class HostRateLimiter:
    """At most one request per `interval` seconds to each host, across threads."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, host: str) -> None:
        if self.interval <= 0:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next.get(host, 0.0))
            self._next[host] = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


def refusal(url: str, *, allow_private: bool) -> str:
    """Why we will not request this URL ('' if we will)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return f"Not a valid URL: {url[:200]}"
    if parts.scheme.lower() not in ("http", "https"):
        return f"Only http(s) URLs are followed, not {parts.scheme or 'a relative URL'}."
    if not parts.hostname:
        return "The URL has no host."
    if allow_private:
        return ""
    try:
        infos = socket.getaddrinfo(parts.hostname, port or (443 if parts.scheme.lower() == "https" else 80),
                                   proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        return f"The host {parts.hostname} does not resolve ({exc})."
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if not address.is_global:
            return (f"{parts.hostname} is a private or local address ({address}); such targets are not "
                    "requested (HANDLES_HEALTH_ALLOW_PRIVATE allows them).")
    return ""


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
        self._refusals: dict[tuple, str] = {}
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

    def _refusal(self, url: str) -> str:
        """refusal(), resolving each host once per fetcher: a check follows thousands of URLs on few hosts."""
        try:
            parts = urlsplit(url)
            key = (parts.scheme.lower(), parts.hostname, parts.port)
        except ValueError:
            return refusal(url, allow_private=self.allow_private)
        if key not in self._refusals:
            self._refusals[key] = refusal(url, allow_private=self.allow_private)
        return self._refusals[key]

    def _follow_once(self, url: str, read_title: bool) -> FetchResult:
        result = FetchResult(start_url=url, final_url=url)
        current = url
        while True:
            problem = self._refusal(current)
            if problem:
                result.error = problem
                return result
            self.limiter.wait(urlsplit(current).hostname or "")
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
        problem = self._refusal(url)
        if problem:
            return None, problem
        self.limiter.wait(urlsplit(url).hostname or "")
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
