"""One of everything, on an offline prefix, so that every URL of the project has an object to name."""

from __future__ import annotations

import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.cache import cache
from django.utils import timezone
from django_q.models import OrmQ, Task

from handles.api import token_cache
from handles.api.auth import forget_counts
from handles.api.models import ApiToken
from handles.desk.models import BulkJob, Collection
from handles.models import Asset, Handle, HandleRequest, Prefix
from handles.notify.models import Delivery, Notification, Subscription, WatchdogRun, WebhookEndpoint
from handles.repair.models import (
    HandleCheck,
    HealthRun,
    ImportBatch,
    ImportPreset,
    ReconciliationRun,
    RepairJob,
)
from tests.api.conftest import issue_token
from tests.factories import AssetFactory, HandleFactory, PrefixFactory, UserFactory

HOME = "20.500.12345"
OTHER = "20.500.99999"


@pytest.fixture(autouse=True)
def fresh_process_state():
    """Throttle counters and remembered tokens live in the process: each test starts with none."""
    cache.clear()
    forget_counts()
    token_cache.forget()
    yield
    cache.clear()
    forget_counts()
    token_cache.forget()


@pytest.fixture
def world(db) -> dict:
    prefix = PrefixFactory(prefix=HOME, is_default=True)
    other = PrefixFactory(prefix=OTHER, site_name="GeoData Portal", auth_identity=f"300:{OTHER}/ADMIN",
                          hs_admin_handle=f"{OTHER}/ADMIN")
    asset = AssetFactory(source_system="dams", external_id="4711")
    # The handle points at its asset's URL, so an asset call by another prefix's token would move it.
    active = HandleFactory(prefix=prefix, suffix="live", asset=asset, target_url=asset.url, synced_version=1)
    stone = HandleFactory(prefix=prefix, suffix="stone", asset=asset, status=Handle.Status.TOMBSTONED,
                          tombstone_reason="Withdrawn", synced_version=1)
    spare = HandleFactory(prefix=prefix, suffix="spare", synced_version=1)
    failed = HandleRequest.objects.create(handle=active, op="update", action="redirect",
                                          full_handle=active.full_handle, handle_version=1, status="error",
                                          error="boom", finished_at=timezone.now())
    run = ReconciliationRun.objects.create(prefix=prefix)
    health = HealthRun.objects.create()
    HandleCheck.objects.create(handle=active, run=health, checked_at=timezone.now(), outcome="ok")
    Task.objects.create(id="a" * 32, name="t", func="math.floor", started=timezone.now(),
                        stopped=timezone.now(), success=True)
    Task.objects.create(id="b" * 32, name="f", func="math.floor", started=timezone.now(),
                        stopped=timezone.now(), success=False)
    OrmQ.objects.create(key="default", payload="x", lock=timezone.now())
    kept_token = issue_token("read", name="kept")
    notification = Notification.objects.create(kind="job", prefix=prefix, subject="Import #1 ended incomplete")
    someone = UserFactory(username="someone", is_staff=False)
    return {
        "prefix": prefix, "other": other, "asset": asset, "handle": active, "stone": stone, "spare": spare, "request": failed,
        "objects": {
            Prefix: prefix, Asset: asset, Handle: active, HandleRequest: failed,
            BulkJob: BulkJob.objects.create(kind="verify", selection={"ids": [active.pk]}),
            Collection: Collection.objects.create(name="Maps", source_system="dams"),
            ImportPreset: ImportPreset.objects.create(name="Grinnell"),
            ImportBatch: ImportBatch.objects.create(file_name="a.csv", file_sha256="0" * 64, prefix=prefix),
            ReconciliationRun: run, RepairJob: RepairJob.objects.create(run=run), HealthRun: health,
            ApiToken: ApiToken.objects.get(name="kept"),
            Subscription: Subscription.objects.create(user=someone, kinds=["job"], email="someone@example.org"),
            WebhookEndpoint: WebhookEndpoint.objects.create(name="Chat", url="https://chat.example.org/h", kinds=["job"],
                                                            active=False),
            Notification: notification,
            Delivery: Delivery.objects.create(notification=notification, channel="email", recipient="a@example.org",
                                              status="sent"),
            WatchdogRun: WatchdogRun.objects.create(prefix=prefix, light="green"),
        },
        "handle_type": ContentType.objects.get_for_model(Handle),
        "token": kept_token,
        "user": someone,
    }
