"""Browser tests: Debian's Chromium driven by Playwright against pytest-django's live server.

Tasks run inline (Q_CLUSTER sync, as in every test): a change's push to the Handle server simulator
happens in the live server's request, so a page loaded next already shows the request's result.
Screenshots of the main pages are saved to test-artifacts/screenshots/ (gitignored).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.migration_data import reseed_migration_data

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"

# Every browser test: a real server thread, so a transactional database (emptied after each test).
BROWSER = [pytest.mark.browser, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


@pytest.fixture(autouse=True)
def roles(transactional_db):
    """The groups and schedules, even after another transactional test emptied the database."""
    reseed_migration_data()


@pytest.fixture(scope="session")
def browser() -> Browser:
    # Playwright's sync API keeps an event loop in this thread; the test's own ORM calls are synchronous.
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, live_server) -> Page:
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1400, "height": 1000},
                                  accept_downloads=True)
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def shot():
    """Save a full-page screenshot as test-artifacts/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def save(page: Page, name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save


def log_in(page: Page, username: str, password: str = "pw") -> None:
    page.goto("/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")
