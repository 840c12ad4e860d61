"""Staff in a real browser subscribe themselves, press the settings page's test button and get the mail;
the dashboard shows the watchdog's light for the prefix."""

from __future__ import annotations

from playwright.sync_api import expect

from handles.notify import services
from handles.notify.models import Subscription
from handles.notify.services import CheckResult
from tests.browser.conftest import BROWSER, log_in
from tests.notify.conftest import global_proxy, notify_settings, smtp  # noqa: F401 (fixtures)

pytestmark = BROWSER


def test_staff_subscribe_send_a_test_and_see_the_lights(page, shot, staff_user, prefix, notify_settings, smtp):  # noqa: F811
    services.watchdog_record(prefix=prefix, started_at=prefix.created_at, results=[
        CheckResult("server", False, "https://127.0.0.1:9 did not answer")])
    log_in(page, "staff")
    expect(page.locator(f"#hd-watchdog tr[data-prefix='{prefix.prefix}']")).to_contain_text("red")
    shot(page, "20-dashboard-watchdog")

    page.goto("/admin/handles_notify/subscription/add/")
    page.select_option("#id_prefix", str(prefix.pk))
    page.check("input[name=kinds][value=server]")
    page.check("input[name=kinds][value=request_errors]")
    page.fill("#id_email", "staff@library.example.edu")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")
    assert Subscription.objects.get(user=staff_user).kinds == ["request_errors", "server"]

    page.click("text=Notification settings and test send")
    expect(page.locator("body")).to_contain_text(f"127.0.0.1:{smtp.port}")
    shot(page, "21-notification-settings")
    page.click("input[value='Send a test notification']")
    expect(page.locator(".messagelist")).to_contain_text("Test sent: 1 delivery")
    (mail,) = smtp.wait_for(1)
    assert mail["To"] == "staff@library.example.edu"
    expect(page.locator("body")).to_contain_text("staff@library.example.edu")
    shot(page, "22-test-notification-log")
