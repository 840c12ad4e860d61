"""The public tombstone page, as a reader following a citation sees it."""

from __future__ import annotations

import datetime

from django.utils import timezone
from playwright.sync_api import expect

from handles.models import Handle
from tests.browser.conftest import BROWSER
from tests.factories import AssetFactory, HandleFactory, PrefixFactory

pytestmark = BROWSER


def test_tombstone_page(page, shot):
    HandleFactory(prefix=PrefixFactory(), suffix="Gone-7", status=Handle.Status.TOMBSTONED,
                  asset=AssetFactory(title="Collembola specimen drawings, plate 3"),
                  tombstone_reason="The drawings were returned to the lending museum.",
                  successor_url="https://museum.example.org/collembola/plate-3",
                  tombstoned_at=timezone.make_aware(datetime.datetime(2025, 9, 30, 11, 32)))
    for path in ("/handles/20.500.12345/gone-7", "/tombstone/20.500.12345/Gone-7"):
        response = page.goto(path)
        assert response.status == 410
        expect(page.locator("h1")).to_have_text("This object has been withdrawn")
        expect(page.locator("#tombstone-title")).to_have_text("Collembola specimen drawings, plate 3")
        expect(page.locator("#tombstone-when")).to_have_text("30 September 2025")
        expect(page.locator("#tombstone-reason")).to_contain_text("returned to the lending museum")
        expect(page.locator("#tombstone-successor")).to_have_attribute(
            "href", "https://museum.example.org/collembola/plate-3")
    shot(page, "20-tombstone-page")
