"""The admin: each staff member manages their own subscriptions, endpoints are for those allowed, the logs
and the watchdog's history show, the settings page's button sends a test, the dashboard shows the lights."""

from __future__ import annotations

import pytest
from django.urls import reverse

from handles.notify import services
from handles.notify.models import Delivery, Notification, Subscription, WatchdogRun, WebhookEndpoint
from handles.notify.services import CheckResult
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_staff_subscribe_themselves_and_see_only_their_own(staff_client, staff_user, superuser, prefix):
    services.subscription_save(subscription=Subscription(user=superuser, kinds=["job"], email="root@example.org"))
    response = staff_client.post(reverse("admin:handles_notify_subscription_add"), {
        "prefix": prefix.pk, "kinds": ["server", "watchdog"], "email": "me@example.org", "active": "on"})
    assert response.status_code == 302, response.content.decode()[:2000]
    mine = Subscription.objects.get(user=staff_user)
    assert (mine.prefix, mine.kinds, mine.address) == (prefix, ["server", "watchdog"], "me@example.org")
    listing = staff_client.get(reverse("admin:handles_notify_subscription_changelist")).content.decode()
    assert "me@example.org" in listing and "root@example.org" not in listing
    other = Subscription.objects.get(user=superuser)
    url = reverse("admin:handles_notify_subscription_change", args=[other.pk])
    assert staff_client.get(url)["Location"] == reverse("admin:index")  # "no such subscription" for them
    staff_client.post(url, {"kinds": ["drift"], "email": "mallory@example.org", "active": "on"})
    staff_client.post(reverse("admin:handles_notify_subscription_delete", args=[other.pk]), {"post": "yes"})
    other.refresh_from_db()
    assert (other.kinds, other.email) == (["job"], "root@example.org")


def test_a_second_subscription_for_the_same_prefix_is_refused_with_a_message(staff_client, staff_user):
    services.subscription_save(subscription=Subscription(user=staff_user, kinds=["job"], email="me@example.org"))
    response = staff_client.post(reverse("admin:handles_notify_subscription_add"), {
        "kinds": ["drift"], "email": "me@example.org", "active": "on"})
    assert response.status_code == 200
    assert "already has a subscription for every prefix" in response.content.decode()


def test_endpoints_are_for_superusers_not_staff(staff_client, client, superuser):
    assert staff_client.get(reverse("admin:handles_notify_webhookendpoint_changelist")).status_code == 403
    client.force_login(superuser)
    response = client.post(reverse("admin:handles_notify_webhookendpoint_add"), {
        "name": "Chat", "url": "https://chat.example.org/hook", "secret": "s3cret", "kinds": ["server"],
        "body_template": '{"text": {{ text_json }}}', "active": "on"})
    assert response.status_code == 302
    assert WebhookEndpoint.objects.get().body_template == '{"text": {{ text_json }}}'


def test_the_settings_page_sends_a_test_by_mail_and_webhook(client, notify_settings, smtp, receiver, django_capture_on_commit_callbacks):
    admin_user = UserFactory(username="boss", is_superuser=True, email="boss@library.example.edu")
    client.force_login(admin_user)
    WebhookEndpoint.objects.create(name="Receiver", url=receiver.url, secret=receiver.secret, kinds=["server"])
    page = client.get(reverse("admin:handles_notify_settings")).content.decode()
    assert "Send a test notification" in page and f"127.0.0.1:{smtp.port}" in page
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("admin:handles_notify_settings"))
    assert response.status_code == 302
    (mail,) = smtp.wait_for(1)
    assert mail["To"] == "boss@library.example.edu" and "Test notification" in mail["Subject"]
    assert receiver.verified[0].json()["kind"] == "test"
    notification = Notification.objects.get()
    log = client.get(reverse("admin:handles_notify_notification_change", args=[notification.pk])).content.decode()
    assert "boss@library.example.edu" in log and "Receiver (http://127.0.0.1:" in log
    assert "/hooks/handles" not in log  # a webhook URL can be a secret: the log names the endpoint and host
    delivery = Delivery.objects.get(channel="webhook")
    attempts = client.get(reverse("admin:handles_notify_delivery_change", args=[delivery.pk])).content.decode()
    assert "200" in attempts and ">ok<" in attempts


def test_the_dashboard_shows_a_light_per_prefix_and_the_history_page_each_check(staff_client, prefix):
    services.watchdog_record(prefix=prefix, started_at=prefix.created_at, results=[
        CheckResult("server", True, "answers"), CheckResult("registry", False, "sends it elsewhere: 192.0.2.10")])
    page = staff_client.get(reverse("admin:index")).content.decode()
    assert f'data-prefix="{prefix.prefix}" data-light="red"' in page
    run = WatchdogRun.objects.get()
    detail = staff_client.get(reverse("admin:handles_notify_watchdogrun_change", args=[run.pk])).content.decode()
    assert "sends it elsewhere: 192.0.2.10" in detail and "FAIL" in detail
