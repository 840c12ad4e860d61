"""Fixtures of the notification and watchdog tests: loopback SMTP, webhook receiver and global proxy,
and settings that point the app at them."""

from __future__ import annotations

import pytest

from tests.notify.standins import GlobalProxy, SmtpServer, WebhookReceiver


@pytest.fixture
def smtp():
    with SmtpServer() as server:
        yield server


@pytest.fixture
def receiver():
    with WebhookReceiver() as hook:
        yield hook


@pytest.fixture
def global_proxy():
    with GlobalProxy() as proxy:
        yield proxy


@pytest.fixture
def notify_settings(settings, smtp, global_proxy):
    """Mail to the loopback SMTP server for real, the stand-in global proxy, retries due at once."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.HANDLES_GLOBAL_PROXY_URL = global_proxy.url
    settings.HANDLES_WATCHDOG_TIMEOUT = 3.0
    settings.HANDLES_NOTIFY_WEBHOOK_TIMEOUT = 5.0
    return settings


@pytest.fixture(scope="module")
def handle_server(tmp_path_factory):
    """These tests' own simulator (the shared `sim` and `prefix` fixtures use it): a reconciliation here
    sees only the handles these tests made, and a fault switched here stops no other test's server."""
    import os

    from tests.conftest import SECRET_ENV, SIM_PREFIX, SIM_SECRET
    from tests.simulator_process import SimulatorProcess

    os.environ[SECRET_ENV] = SIM_SECRET
    with SimulatorProcess(tmp_path_factory.mktemp("notify-sim"), prefixes=[SIM_PREFIX], secret=SIM_SECRET) as sim:
        yield sim
