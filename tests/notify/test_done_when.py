"""The issue's "done when", end to end on real parts: the demo admin subscribed, the simulator switched
`down` and back, mail through a loopback SMTP server, signed webhooks to a loopback receiver, a
reconciliation with planted drift, and a prefix whose global registration points elsewhere."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from django.contrib.auth import get_user_model

from handles import demo
from handles import services as core
from handles.models import Prefix
from handles.notify import services, tasks
from handles.notify.models import (
    SUBSCRIBABLE,
    Delivery,
    Kind,
    Notification,
    Subscription,
    WatchdogRun,
    WebhookEndpoint,
)
from handles.repair import services as repair_services
from tests.conftest import SIM_SECRET
from tests.factories import HandleFactory

ALL_KINDS = [kind for kind, _ in SUBSCRIBABLE]


def subscribe(user, receiver, *, email: str, kinds=ALL_KINDS) -> None:
    services.subscription_save(subscription=Subscription(user=user, kinds=kinds, email=email))
    services.endpoint_save(endpoint=WebhookEndpoint(name="Chat", url=receiver.url, secret=receiver.secret,
                                                    kinds=kinds))


@pytest.mark.django_db(transaction=True)
def test_outage_and_recovery_reach_the_demo_admin_by_mail_and_signed_webhook(
        sim, notify_settings, smtp, receiver, global_proxy, live_server, monkeypatch):
    monkeypatch.setenv(demo.DEMO_SECRET_ENV, SIM_SECRET)
    notify_settings.HANDLES_PUBLIC_BASE_URL = live_server.url
    demo.seed(server_url=sim.base_url, certificate_path=sim.cert_path, username="admin", password="admin")
    admin = get_user_model().objects.get(username="admin")
    prefix = Prefix.objects.get(prefix=demo.DEMO_PREFIX)
    global_proxy.register(prefix.prefix, "127.0.0.1", sim.port, forward_to=sim.base_url,
                          cert=sim.cert_path)
    subscribe(admin, receiver, email="admin@library.example.edu")

    assert tasks.watch_prefix(prefix.pk) == "green: all checks pass"
    assert smtp.messages == [] and receiver.received == []  # a healthy first look tells nobody anything

    sim.set_fault("down")
    assert tasks.watch_prefix(prefix.pk) == "red: server"
    (mail,) = smtp.wait_for(1)
    assert mail["To"] == "admin@library.example.edu"
    assert mail["Subject"] == f"[handles] The Handle server of {prefix.prefix} does not answer"
    assert sim.base_url in mail.get_content()
    (hook,) = receiver.received
    assert hook.signature_ok and hook.json()["kind"] == Kind.SERVER and hook.json()["prefix"] == prefix.prefix

    assert tasks.watch_prefix(prefix.pk) == "red: server"  # still down: no repeat
    assert len(smtp.messages) == 1 and len(receiver.received) == 1

    sim.clear_faults()
    assert tasks.watch_prefix(prefix.pk) == "green: all checks pass"
    mails = smtp.wait_for(2)
    assert [m["Subject"] for m in mails][1] == f"[handles] The Handle server of {prefix.prefix} answers again"
    assert len(receiver.received) == 2 and receiver.received[1].signature_ok
    assert "answers again" in receiver.received[1].json()["subject"]
    assert set(Delivery.objects.values_list("status", flat=True)) == {Delivery.Status.SENT}
    assert list(WatchdogRun.objects.filter(prefix=prefix).order_by("pk").values_list("light", flat=True)) == [
        "green", "red", "red", "green"]


def test_a_reconciliation_with_planted_drift_notifies(prefix, run_queue, notify_settings, smtp, receiver,
                                                      staff_user, unique_suffix):
    subscribe(staff_user, receiver, email="staff@library.example.edu", kinds=[Kind.DRIFT])
    run_queue(core.handle_mint, prefix=prefix, suffix=unique_suffix("ok"), target_url="https://example.org/ok")
    planted = HandleFactory(prefix=prefix, suffix=unique_suffix("planted"), target_url="https://example.org/p")

    run = run_queue(repair_services.reconciliation_start, prefix=prefix)
    run.refresh_from_db()

    assert run.counts["missing"] == 1
    (mail,) = smtp.wait_for(1)
    assert mail["Subject"].startswith("[handles] Reconciliation found") and prefix.prefix in mail["Subject"]
    assert "1 × Missing on the server" in mail.get_content()
    (hook,) = receiver.verified
    assert hook.json()["kind"] == "drift" and "Missing on the server" in hook.json()["details"]
    assert Notification.objects.get(kind=Kind.DRIFT).prefix_id == planted.prefix_id


def test_the_watchdog_flags_a_prefix_registered_elsewhere_and_tells_of_the_fix(
        prefix, notify_settings, smtp, receiver, global_proxy, staff_user, django_capture_on_commit_callbacks):
    notify_settings.HANDLES_WATCHDOG_CHECKS = ["server", "credentials", "homed", "registry", "global_resolution"]
    subscribe(staff_user, receiver, email="staff@library.example.edu", kinds=[Kind.WATCHDOG, Kind.SERVER])
    global_proxy.register(prefix.prefix, "192.0.2.10", 8000)

    def with_capture(prefix_id: int) -> str:
        with django_capture_on_commit_callbacks(execute=True):
            return tasks.watch_prefix(prefix_id)

    assert with_capture(prefix.pk) == "red: registry"
    run = WatchdogRun.objects.get()
    registry = next(r for r in run.results if r["check"] == "registry")
    assert "sends 20.500.12345 elsewhere" in registry["detail"] and "192.0.2.10 (TCP 2641, UDP 2641, HTTP 8000)" in \
        registry["detail"]
    assert next(r for r in run.results if r["check"] == "global_resolution")["ok"] is None  # one cause, one alarm
    (mail,) = smtp.wait_for(1)
    assert "Watchdog alarm for 20.500.12345" in mail["Subject"] and "global registry" in mail["Subject"]
    assert receiver.verified[0].json()["kind"] == "watchdog"

    # The registration is fixed, through a service handle (HS_SERV) as many prefixes have it.
    global_proxy.register_service(prefix.prefix, "0.NA/20.500.SERVICE", "127.0.0.1",
                                 urlsplit(prefix.server_url).port)
    assert with_capture(prefix.pk) == "green: all checks pass"
    mails = smtp.wait_for(2)
    assert "Watchdog recovery for 20.500.12345" in mails[1]["Subject"]
    assert "HS_SERV of 0.NA/20.500.12345" in WatchdogRun.objects.order_by("-pk").first().results[3]["detail"]

