"""Every page a user can reach by GET, found from the URLconf and the admin registry, fetched as each kind
of user: used by tests/test_crawl.py on PostgreSQL (in the suite) and on SQLite (in a process of its own,
as `make run` uses it).

Pages added later are crawled without editing this module: every URL pattern is fetched, an admin URL
under a registered model with an object id gets an object of that model, each changelist is fetched
with each choice its filters render, /browse/ and its export with each choice of its form. Only URLs
with other parameters need an entry in PARAMS (by URL name, or by pattern for unnamed ones); a new one
without an entry is reported as a failure, so it cannot be skipped silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from django.contrib import admin
from django.contrib.contenttypes.models import ContentType
from django.forms import ChoiceField
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

OBJECT_PARAMS = {"object_id", "pk", "id"}


@dataclass
class Seeded:
    """Objects the parameterised URLs are filled with."""

    handle: object
    tombstoned: object
    request: object
    token: str


# Parameters of URLs that do not name an object of their admin's model: by URL name (or pattern).
PARAMS: dict[str, Callable[[Seeded], list[dict]]] = {
    "admin:app_list": lambda s: [{"app_label": label} for label in sorted(
        {model._meta.app_label for model in admin.site._registry})],
    "admin:view_on_site": lambda s: [{"content_type_id": ContentType.objects.get_for_model(s.handle).pk,
                                      "object_id": s.handle.pk}],
    "(?P<url>.*)$": lambda s: [{"url": "no-such-page/"}],  # the admin's catch-all
    "desk:detail": lambda s: [{"pk": s.handle.pk}, {"pk": s.tombstoned.pk}],
    "handles:tombstone": lambda s: [_name(s.tombstoned)],
    "handles:resolve": lambda s: [_name(s.handle), _name(s.tombstoned)],
    "handles_api:handle": lambda s: [_name(s.handle), _name(s.tombstoned)],
    "handles_api:resolve": lambda s: [_name(s.handle)],
    "handles_api:request": lambda s: [{"id": s.request.pk}],
    "handles_api:remote_handles": lambda s: [{"prefix": s.handle.prefix.prefix}],
    r"^(?P<path>[\s\S]*)$": lambda s: [{"path": "no-such-resource"}],  # the API's JSON 404
}

# Query strings worth fetching beside the bare URL (the bare URL of these answers 400: a required value).
QUERIES: dict[str, Callable[[Seeded], list[dict]]] = {
    "handles_api:lookup_asset": lambda s: [{"source_system": s.handle.asset.source_system,
                                            "external_id": s.handle.asset.external_id}],
    "handles_api:lookup_handle": lambda s: [{"handle": s.handle.full_handle}],
    "handles_api:lookup_url": lambda s: [{"url": s.handle.target_url}],
    "handles_api:handles": lambda s: [{"prefix": s.handle.prefix.prefix, "status": "active"}],
    "handles_api:iiif_metadata": lambda s: [{"source_system": s.handle.asset.source_system,
                                             "external_id": s.handle.asset.external_id}],
}


def _name(handle) -> dict:
    return {"prefix": handle.prefix.prefix, "suffix": handle.suffix}


@dataclass(frozen=True)
class Route:
    route: str  # the whole pattern, prefixes included
    name: str | None
    params: tuple[str, ...]
    model: type | None  # the admin model the URL belongs to, if any


def routes() -> Iterator[Route]:
    """Every URL pattern of the URLconf."""
    models = {(m._meta.app_label, m._meta.model_name): m for m in admin.site._registry}

    def walk(patterns, prefix: str, namespace: str) -> Iterator[Route]:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                inner = f"{namespace}:{pattern.namespace}".strip(":") if pattern.namespace else namespace
                yield from walk(pattern.url_patterns, route, inner)
            elif isinstance(pattern, URLPattern):
                found = re.match(r"^/admin/(\w+)/(\w+)/", route)
                model = models.get((found[1], found[2])) if found else None
                name = f"{namespace}:{pattern.name}".strip(":") if pattern.name else None
                yield Route(route, name, tuple(pattern.pattern.regex.groupindex), model)

    yield from walk(get_resolver().url_patterns, "/", "")


def _fill(route: str, values: dict) -> str:
    """An unnamed pattern's URL: each parameter replaced by its value."""
    path = route.replace("^", "").replace("$", "")
    for name, value in values.items():
        path = re.sub(rf"<(?:\w+:)?{name}>|\(\?P<{name}>[^)]*\)", str(value), path)
    return path


def urls_of(route: Route, seeded: Seeded) -> tuple[list[str], str]:
    """The URLs to fetch for a pattern, or ([], why it cannot be filled)."""
    key = route.name or route.route.rsplit("/", 1)[-1]
    if route.params and set(route.params) <= OBJECT_PARAMS and route.model is not None:
        obj = route.model._default_manager.order_by("pk").first()
        if obj is None:
            return [], f"no {route.model._meta.label} to fill {route.route}: seed one"
        kwargs_list = [{name: obj.pk for name in route.params}]
    elif route.params:
        if key not in PARAMS:
            return [], f"{route.route} ({route.name or 'unnamed'}) needs parameters: add an entry to PARAMS"
        kwargs_list = PARAMS[key](seeded)
    else:
        kwargs_list = [{}]
    urls = [reverse(route.name, kwargs=kwargs) if route.name else _fill(route.route, kwargs)
            for kwargs in kwargs_list]
    for query in QUERIES.get(key, lambda s: [])(seeded):
        urls.append(f"{urls[0]}?{urlencode(query)}")
    return urls, ""


class Crawler:
    def __init__(self, client: Client, who: str, headers: dict | None = None) -> None:
        self.client, self.who, self.headers = client, who, headers or {}
        self.failures: list[str] = []
        self.fetched = 0

    def get(self, url: str, *, rendered_choice: bool = False):
        try:
            response = self.client.get(url, headers=self.headers)
            if response.streaming:
                b"".join(response.streaming_content)
        except Exception as exc:  # the test client re-raises a view's exception: that page is a 500
            self.failures.append(f"{self.who} GET {url}: {exc.__class__.__name__}: {exc}")
            return None
        self.fetched += 1
        if response.status_code >= 500:
            self.failures.append(f"{self.who} GET {url}: {response.status_code}")
        elif rendered_choice and response.status_code == 302 and "e=1" in response.get("Location", ""):
            self.failures.append(f"{self.who} GET {url}: the admin refused a filter choice it rendered")
        return response

    def changelist_filters(self, url: str, response) -> None:
        changelist = (response.context or {}).get("cl") if response is not None else None
        if changelist is None:
            return
        for spec in changelist.filter_specs:
            for choice in spec.choices(changelist):
                self.get(url.split("?")[0] + choice["query_string"], rendered_choice=True)

    def form_choices(self, url: str, response, others: list[str]) -> None:
        form = (response.context or {}).get("form") if response is not None else None
        if form is None:
            return
        for name, field in form.fields.items():
            values = [value for value, _ in field.choices if value] if isinstance(field, ChoiceField) else ["demo"]
            for value in values:
                for target in [url, *others]:
                    self.get(f"{target}?{urlencode({name: value})}")


def crawl(seeded: Seeded, users: dict[str, object]) -> tuple[list[str], int]:
    """Fetch every page as each user, and the API with a token. Returns (failures, pages fetched)."""
    failures: list[str] = []
    fetched = 0
    all_routes = list(routes())
    for who, user in users.items():
        client = Client()
        client.force_login(user)
        crawler = Crawler(client, who)
        for route in all_routes:
            if route.route.startswith("/api/"):
                continue
            urls, problem = urls_of(route, seeded)
            if problem:
                crawler.failures.append(problem)
            for url in urls:
                response = crawler.get(url)
                if route.name and route.name.endswith("_changelist"):
                    crawler.changelist_filters(url, response)
                if route.name == "desk:browse":
                    crawler.form_choices(url, response, [reverse("desk:export")])
        failures += crawler.failures
        fetched += crawler.fetched
    api = Crawler(Client(), "api token", headers={"Authorization": f"Bearer {seeded.token}"})
    for route in all_routes:
        if route.route.startswith("/api/"):
            urls, problem = urls_of(route, seeded)
            if problem:
                api.failures.append(problem)
            for url in urls:
                api.get(url)
    return sorted(set(failures + api.failures)), fetched + api.fetched


# --- Data: the demo of `make run`, handles in each sync state, one row of every model the admin shows ----
def seed(*, server_url: str, certificate_path: Path) -> tuple[Seeded, dict[str, object]]:
    from django_q.models import OrmQ, Task
    from django_q.signing import SignedPackage

    from handles import demo, services
    from handles.api import services as api_services
    from handles.api.models import ApiToken
    from handles.desk import services as desk
    from handles.desk.models import Collection
    from handles.models import Handle, HandleRequest, Prefix
    from handles.repair import health, reconcile
    from handles.repair import services as repair
    from handles.repair.models import ImportMode, ImportPreset, ReconciliationRow
    from tests.factories import HandleFactory, UserFactory

    demo.seed(server_url=server_url, certificate_path=certificate_path, username="admin", password="admin")
    prefix = Prefix.objects.get(prefix=demo.DEMO_PREFIX)
    live = Handle.objects.filter(prefix=prefix, asset__isnull=False).order_by("pk").first()
    tombstoned = Handle.objects.filter(prefix=prefix).exclude(pk=live.pk).order_by("pk").first()
    services.handle_tombstone(handle=tombstoned, reason="Withdrawn for the crawl", actor=None, via="test")

    def request(handle, status: str, op: str = "update", error: str = "") -> HandleRequest:
        return HandleRequest.objects.create(handle=handle, op=op, action={"update": "redirect"}.get(op, op),
                                            full_handle=handle.full_handle, handle_version=handle.version,
                                            status=status, error=error)

    # One handle in each sync state (as tests/desk/test_selectors.py makes them).
    request(HandleFactory(prefix=prefix, suffix="crawl-queued", version=2, synced_version=1), "queued")
    HandleFactory(prefix=prefix, suffix="crawl-unconfirmed", version=3, synced_version=2)
    request(HandleFactory(prefix=prefix, suffix="crawl-error"), "error", error="Permission denied")
    request(HandleFactory(prefix=prefix, suffix="crawl-drift"), "error", op="verify",
            error="Drift: the server resolves to 'a'; we intend 'b'.")

    # Jobs of every kind: an import, a reconciliation (its drift: the handles above are not on the
    # server), a repair, a health check, a bulk job.
    batch = repair.import_batch_create(file_name="crawl.csv", content=b"handle,url\n20.500.12345/crawl-import,"
                                       b"http://127.0.0.1:9/crawl\n", via="test")
    batch = repair.import_batch_configure(batch=batch, mapping=batch.mapping, prefix=prefix, mode=ImportMode.ADOPT)
    repair.import_batch_apply(repair.import_batch_analyse(batch.pk).pk)
    repair.preset_save(preset=ImportPreset(name="crawl", handle_column="handle", url_column="url"))
    run = reconcile.run(repair.reconciliation_start(prefix=prefix, enqueue=False).pk)
    job = repair.repair_start(run=run, kinds=[ReconciliationRow.Kind.MISSING], enqueue=False)
    repair.repair_execute(job.pk)
    health.run(repair.health_start(filters={"limit": 3}, enqueue=False).pk)
    desk.bulk_job_create(kind="verify", selection={"ids": [live.pk]})
    desk.collection_save(collection=Collection(name="Demo DAMS", source_system="dams"))
    plain = api_services.token_create(token=ApiToken(name="crawl", scope=ApiToken.Scope.WRITE), prefixes=[],
                                      created_by=None)
    # The task queue's own records, shown by django-q2's admin.
    package = {"id": "crawl", "name": "crawl", "func": "math.copysign", "args": (1, 1), "kwargs": {}}
    for success in (True, False):
        Task.objects.create(id=f"crawl-{success}", name=f"crawl {success}", func="math.copysign",
                            started=live.created_at, stopped=live.created_at, success=success, result="1.0")
    OrmQ.objects.create(key="crawl", payload=SignedPackage.dumps(package), lock=None)

    # Notifications: a subscription, an endpoint (inactive: nothing is sent from the crawl), a delivery of
    # the notifications the jobs above emitted, and a watchdog run's record.
    from django.utils import timezone

    from handles.notify import services as notify
    from handles.notify.models import Delivery, Notification, Subscription, WebhookEndpoint

    owner = UserFactory(username="crawl-subscriber", email="subscriber@example.org")
    notify.subscription_save(subscription=Subscription(user=owner, kinds=["job"], email="subscriber@example.org"))
    notify.endpoint_save(endpoint=WebhookEndpoint(name="Chat", url="https://chat.example.org/hook", kinds=["job"],
                                                  active=False))
    notification = Notification.objects.order_by("pk").first() or Notification.objects.create(
        kind="job", prefix=prefix, subject="Import #1 ended incomplete")
    Delivery.objects.create(notification=notification, channel="email", recipient="subscriber@example.org",
                            status="sent")
    notify.watchdog_record(prefix=prefix, results=[notify.CheckResult("server", True, "It answers.")],
                           started_at=timezone.now())

    users = {
        "superuser": UserFactory(username="crawl-root", is_superuser=True),
        "staff": UserFactory(username="crawl-staff", groups=["Handle staff"]),
        "collection manager": UserFactory(username="crawl-manager", groups=["Collection managers"]),
    }
    return Seeded(handle=live, tombstoned=tombstoned, request=HandleRequest.objects.order_by("pk").first(),
                  token=plain), users
