"""The prefix watchdog: is each prefix still served, registered and resolving as we intend?

Per prefix, on a schedule: our Handle server answers; our credentials authenticate (a read, nothing is
written); the prefix is homed there (`/api/prefixes`); the global registry still sends the prefix to us
(`0.NA/<prefix>` through the global proxy, its HS_SITE, or the HS_SITE of the service handle its HS_SERV
names, compared with our server's address and port); a sample of handles resolves through the global
proxy to what we intend; our local resolver and tombstone page answer. A check that depends on a failed
one is not run (one cause, one alarm). Results go to services.watchdog_record: history and notifications.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import random
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.db.models import F, Max, Min
from django.urls import reverse
from django.utils import timezone

from handles.handle_server.client import (
    AuthenticationFailed,
    HandleNotFound,
    HandleServerClient,
    HandleServerError,
    PermissionDenied,
    ServerConfig,
    url_of,
)
from handles.models import Handle, Prefix
from handles.notify import services
from handles.notify.models import WatchdogRun
from handles.notify.services import CheckResult

CHECKS = ("server", "credentials", "homed", "registry", "global_resolution", "local")
HStatus = Handle.Status


def watch(prefix_id: int) -> WatchdogRun | None:
    prefix = Prefix.objects.filter(pk=prefix_id).first()
    if prefix is None:
        return None
    started = timezone.now()
    return services.watchdog_record(prefix=prefix, results=run_checks(prefix), started_at=started)


def run_checks(prefix: Prefix) -> list[CheckResult]:
    enabled = set(settings.HANDLES_WATCHDOG_CHECKS)
    config = dataclasses.replace(prefix.server_config(), timeout=settings.HANDLES_WATCHDOG_TIMEOUT)
    ours = HandleServerClient(config)  # its own connections: a pooled one must not hide an outage
    proxy = HandleServerClient(ServerConfig(base_url=settings.HANDLES_GLOBAL_PROXY_URL,
                                            timeout=settings.HANDLES_WATCHDOG_TIMEOUT))
    results: dict[str, CheckResult] = {}

    def run(name: str, check: Callable[[], CheckResult], *needs: str) -> None:
        if name not in enabled:
            results[name] = CheckResult(name, None, "Switched off (HANDLES_WATCHDOG_CHECKS).")
            return
        blocked = [n for n in needs if results.get(n) and results[n].ok is False]
        if blocked:
            results[name] = CheckResult(name, None, f"Not checked: the {blocked[0]} check failed.")
            return
        try:
            results[name] = check()
        except Exception as exc:  # a check must never stop the others
            results[name] = CheckResult(name, False, f"The check itself failed: {exc.__class__.__name__}: {exc}")

    try:
        run("server", lambda: check_server(prefix, ours))
        homed: list[str] | None = None

        def credentials() -> CheckResult:
            nonlocal homed
            result, homed = check_credentials(prefix, ours)
            return result

        run("credentials", credentials, "server")
        run("homed", lambda: check_homed(prefix, homed), "server", "credentials")
        run("registry", lambda: check_registry(prefix, proxy))
        run("global_resolution", lambda: check_global_resolution(prefix, proxy), "server", "registry")
        run("local", lambda: check_local(prefix))
    finally:
        ours.close()
        proxy.close()
    return [results[name] for name in CHECKS]


# --- Our Handle server ---------------------------------------------------------------------------------
def check_server(prefix: Prefix, client: HandleServerClient) -> CheckResult:
    """Any Handle answer counts (a 404 for the probe handle too); no answer, a timeout, a 5xx or a TLS
    failure does not."""
    probe = f"{prefix.prefix}/ADMIN"
    try:
        client.get_handle(probe)
    except HandleServerError as exc:
        if exc.transient or exc.status is None:
            return CheckResult("server", False, f"{client.base_url} did not answer: {exc}")
    return CheckResult("server", True, f"{client.base_url} answers.")


def check_credentials(prefix: Prefix, client: HandleServerClient) -> tuple[CheckResult, list[str] | None]:
    """Authenticate with a read: the list of homed prefixes. Returns the list too (None if not readable)."""
    try:
        homed = client.homed_prefixes()
    except AuthenticationFailed as exc:
        return CheckResult("credentials", False, f"{prefix.auth_identity} was refused: {exc}"), None
    except PermissionDenied as exc:  # authenticated, but not a server administrator: homing is not readable
        return CheckResult("credentials", True, f"{prefix.auth_identity} authenticates ({exc})."), None
    except HandleServerError as exc:
        if exc.transient:
            return CheckResult("credentials", None, f"Not checked: {exc}"), None
        return CheckResult("credentials", True, f"Authenticated; listing prefixes was refused: {exc}"), None
    return CheckResult("credentials", True, f"{prefix.auth_identity} authenticates."), homed


def check_homed(prefix: Prefix, homed: list[str] | None) -> CheckResult:
    if homed is None:
        return CheckResult("homed", None, "Not checked: the server did not list its prefixes to us.")
    wanted = f"0.NA/{prefix.prefix}".upper()
    if wanted in {p.upper() for p in homed}:
        return CheckResult("homed", True, f"0.NA/{prefix.prefix} is homed on our server.")
    return CheckResult("homed", False, f"0.NA/{prefix.prefix} is not among the prefixes homed on our server "
                                       f"({', '.join(homed) or 'none'}).")


# --- The global registry and proxy -------------------------------------------------------------------------
def _normal_ip(text: str) -> str:
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return text.strip().lower()
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return str(address)


def our_endpoint(prefix: Prefix) -> tuple[set[str], int]:
    """The addresses our server's host name resolves to, and the port of its HTTP(S) interface."""
    parts = urlsplit(prefix.server_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or ""
    try:
        addresses = {_normal_ip(str(info[4][0])) for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)}
    except OSError:
        addresses = set()
    return addresses | {_normal_ip(host)}, port


def site_servers(values: list[dict[str, Any]]) -> list[tuple[str, list[tuple[str, int]]]]:
    """(address, [(protocol, port)]) of every server in the HS_SITE values (siteinfo JSON, format "site")."""
    servers = []
    for value in values:
        if str(value.get("type", "")).upper() != "HS_SITE":
            continue
        data = value.get("data") or {}
        site = data.get("value") if isinstance(data, dict) else None
        for server in (site or {}).get("servers", []) if isinstance(site, dict) else []:
            interfaces = [(str(i.get("protocol", "")).upper(), int(i.get("port", 0)))
                          for i in server.get("interfaces", []) if isinstance(i, dict)]
            servers.append((_normal_ip(str(server.get("address", ""))), interfaces))
    return servers


def _describe(servers: list[tuple[str, list[tuple[str, int]]]]) -> str:
    return "; ".join(f"{address} ({', '.join(f'{p} {n}' for p, n in interfaces) or 'no interfaces'})"
                     for address, interfaces in servers) or "no server"


def registered_servers(prefix: Prefix, proxy: HandleServerClient) -> tuple[list, str]:
    """The servers the global registry names for the prefix, and where they came from. HS_SERV names a
    service handle whose HS_SITE values are the sites (docs/handle-server.md §5)."""
    name = f"0.NA/{prefix.prefix}"
    values = (proxy.get_handle(name, authoritative=True).body or {}).get("values") or []
    servers = site_servers(values)
    source = f"HS_SITE of {name}"
    for value in values:
        if str(value.get("type", "")).upper() == "HS_SERV":
            data = value.get("data")
            service = data.get("value") if isinstance(data, dict) else data
            if isinstance(service, str) and service:
                service_values = (proxy.get_handle(service, authoritative=True).body or {}).get("values") or []
                servers += site_servers(service_values)
                source = f"HS_SERV of {name} → HS_SITE of {service}"
    return servers, source


def check_registry(prefix: Prefix, proxy: HandleServerClient) -> CheckResult:
    try:
        servers, source = registered_servers(prefix, proxy)
    except HandleNotFound:
        return CheckResult("registry", False, f"The global registry does not know 0.NA/{prefix.prefix} "
                                              f"({proxy.base_url}).")
    except HandleServerError as exc:
        if exc.transient:  # the registry's own outage: we cannot tell, so no alarm
            return CheckResult("registry", None, f"Not checked: the global proxy did not answer: {exc}")
        return CheckResult("registry", False, f"The global proxy refused 0.NA/{prefix.prefix}: {exc}")
    addresses, port = our_endpoint(prefix)
    ours = [(a, i) for a, i in servers if a in addresses]
    if any(p in ("HTTP", "HTTPS") and n == port for _, interfaces in ours for p, n in interfaces):
        return CheckResult("registry", True, f"{source} names our server ({_describe(ours)}).")
    if ours:
        return CheckResult("registry", False, f"{source} names our address but not our port {port}: "
                                              f"{_describe(ours)}.")
    return CheckResult("registry", False, f"The global registry sends {prefix.prefix} elsewhere: {source} names "
                                          f"{_describe(servers)}; our server is {', '.join(sorted(addresses))} "
                                          f"port {port} ({prefix.server_url}).")


def sample_handles(prefix: Prefix, size: int) -> list[Handle]:
    """A few random handles that the server should hold as we have them (in sync, live or tombstoned),
    picked by random primary keys: no ORDER BY random() over a million rows."""
    candidates = Handle.objects.filter(prefix=prefix, status__in=[HStatus.ACTIVE, HStatus.TOMBSTONED],
                                       synced_version=F("version")).select_related("prefix")
    bounds = candidates.aggregate(lo=Min("pk"), hi=Max("pk"))
    if bounds["lo"] is None or size <= 0:
        return []
    picked: dict[int, Handle] = {}
    for _ in range(size * 3):
        handle = candidates.filter(pk__gte=random.randint(bounds["lo"], bounds["hi"])).order_by("pk").first()
        if handle is not None:
            picked[handle.pk] = handle
        if len(picked) >= size:
            break
    return list(picked.values())


def check_global_resolution(prefix: Prefix, proxy: HandleServerClient) -> CheckResult:
    sample = sample_handles(prefix, settings.HANDLES_WATCHDOG_SAMPLE)
    if not sample:
        return CheckResult("global_resolution", None, "Not checked: no handle of this prefix is in sync yet.")
    wrong = []
    for handle in sample:
        try:
            url = url_of(proxy.get_handle(handle.full_handle, types=["URL"], authoritative=True).body)
        except HandleServerError as exc:
            wrong.append(f"{handle.full_handle}: {exc}")
            continue
        if url != handle.resolver_target:
            wrong.append(f"{handle.full_handle} resolves to {url or 'no URL'}, not {handle.resolver_target}")
    if wrong:
        return CheckResult("global_resolution", False, f"{len(wrong)} of {len(sample)} sampled handles do not "
                                                       f"resolve through {proxy.base_url} as we intend: "
                                                       + "; ".join(wrong))
    return CheckResult("global_resolution", True, f"{len(sample)} sampled handles resolve through "
                                                  f"{proxy.base_url} as we intend.")


# --- Our own pages ------------------------------------------------------------------------------------------
def _get(url: str) -> requests.Response:
    return requests.get(url, allow_redirects=False, timeout=settings.HANDLES_WATCHDOG_TIMEOUT,
                        headers={"User-Agent": "handles-watchdog/1.0"})


def check_local(prefix: Prefix) -> CheckResult:
    """Our local resolver sends a live handle where it should, and our tombstone page shows a withdrawn one
    (410); with no such handle, an unknown one must get our 404."""
    base = settings.HANDLES_PUBLIC_BASE_URL
    problems, seen = [], []
    live = Handle.objects.filter(prefix=prefix, status=HStatus.ACTIVE).order_by("-pk").first()
    gone = Handle.objects.filter(prefix=prefix, status=HStatus.TOMBSTONED).order_by("-pk").first()
    try:
        if live is not None:
            url = base + reverse("handles:resolve", kwargs={"prefix": prefix.prefix, "suffix": live.suffix})
            response = _get(url)
            if response.status_code != 302 or response.headers.get("Location") != live.target_url:
                problems.append(f"{url} answered {response.status_code}, not a redirect to {live.target_url}")
            seen.append("the local resolver")
        else:
            url = base + reverse("handles:resolve", kwargs={"prefix": prefix.prefix, "suffix": "watchdog-probe"})
            response = _get(url)
            if response.status_code != 404:
                problems.append(f"{url} answered {response.status_code}, not 404")
            seen.append("the local resolver")
        if gone is not None:
            response = _get(gone.tombstone_url)
            if response.status_code != 410:
                problems.append(f"{gone.tombstone_url} answered {response.status_code}, not 410 Gone")
            seen.append("the tombstone page")
    except requests.RequestException as exc:
        problems.append(f"{base} did not answer: {exc.__class__.__name__}: {exc}")
    if problems:
        return CheckResult("local", False, "; ".join(problems))
    return CheckResult("local", True, f"{' and '.join(seen).capitalize()} answer at {base}.")
