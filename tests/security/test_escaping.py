"""A URL and a title full of markup are shown as text on every page that shows them, and stay valid JSON."""

from __future__ import annotations

import json

import pytest
from django.utils import timezone
from django.utils.encoding import iri_to_uri

from handles.desk.models import BulkJob
from handles.models import Handle, HandleRequest
from handles.repair.models import HandleCheck, HealthRun, ReconciliationRow, ReconciliationRun
from handles.validators import validate_target_url
from tests.factories import AssetFactory, HandleFactory
from tests.security.conftest import HOME

# As hostile as validation allows: quotes to leave an attribute, a script, an event handler (no spaces).
HOSTILE_URL = "https://example.org/?q=\"'><script>alert(1)</script><svg/onload=alert(1)>"
HOSTILE_TITLE = "<script>alert(1)</script><img src=x onerror=alert(1)>"
RAW = ("<script>alert(1)", "<img src=x onerror=", "<svg/onload=", "\"'><")
ESCAPED = ("&lt;script&gt;alert(1)", "&lt;svg/onload=", "&lt;img src=x onerror=")


@pytest.fixture
def hostile(world, superuser) -> dict:
    validate_target_url(HOSTILE_URL)  # the attack needs no way around validation
    asset = AssetFactory(source_system="dams", external_id="xss", title=HOSTILE_TITLE, url=HOSTILE_URL)
    live = HandleFactory(prefix=world["prefix"], suffix="xss", asset=asset, target_url=HOSTILE_URL)
    stone = HandleFactory(prefix=world["prefix"], suffix="xss-stone", asset=asset, target_url=HOSTILE_URL,
                          status=Handle.Status.TOMBSTONED, tombstone_reason=HOSTILE_TITLE,
                          tombstoned_at=timezone.now())
    failed = HandleRequest.objects.create(
        handle=live, op="update", action="redirect", full_handle=live.full_handle, url=HOSTILE_URL,
        from_url=HOSTILE_URL, reason=HOSTILE_TITLE, handle_version=1, status="error", error=HOSTILE_TITLE,
        server_output=HOSTILE_TITLE, finished_at=timezone.now())
    health = HealthRun.objects.create(state="done")
    HandleCheck.objects.create(handle=live, run=health, checked_at=timezone.now(), outcome="wrong_object",
                               server_url=HOSTILE_URL, final_url=HOSTILE_URL, page_title=HOSTILE_TITLE,
                               detail=HOSTILE_TITLE)
    run = ReconciliationRun.objects.create(prefix=world["prefix"], state="done")
    ReconciliationRow.objects.create(run=run, kind="url_differs", full_handle=live.full_handle, handle=live,
                                     asset=asset, server_url=HOSTILE_URL, our_url=HOSTILE_URL, note=HOSTILE_TITLE)
    job = BulkJob.objects.create(kind="verify", selection={"ids": [live.pk]})
    return {"asset": asset, "live": live, "stone": stone, "request": failed, "health": health, "run": run, "job": job}


def pages(h: dict) -> dict[str, str]:
    """Page -> URL, for every HTML page that shows the hostile URL or title."""
    live, asset = h["live"].pk, h["asset"].pk
    return {
        "dashboard": "/admin/",
        "handle list": "/admin/handles/handle/",
        "handle list searched": "/admin/handles/handle/?q=%3Cscript%3Ealert(1)%3C/script%3E",
        "handle change": f"/admin/handles/handle/{live}/change/",
        "handle history": f"/admin/handles/asset/{asset}/history/",
        "redirect page": f"/admin/handles/handle/{live}/redirect/",
        "tombstone page (admin)": f"/admin/handles/handle/{live}/tombstone/",
        "asset list": "/admin/handles/asset/",
        "asset change": f"/admin/handles/asset/{asset}/change/",
        "request list": "/admin/handles/handlerequest/",
        "request change": f"/admin/handles/handlerequest/{h['request'].pk}/change/",
        "failures": "/admin/handles/handlerequest/failures/",
        "browse": "/browse/",
        "browse searched": "/browse/?q=%3Cscript%3Ealert(1)%3C/script%3E",
        "browse detail": f"/browse/{live}/",
        "public tombstone": f"/tombstone/{HOME}/xss-stone",
        "assets with several handles": "/admin/handles_repair/assetwithseveralhandles/",
        "asset's handles": f"/admin/handles_repair/assetwithseveralhandles/{asset}/change/",
        "health run": f"/admin/handles_repair/healthrun/{h['health'].pk}/change/",
        "reconciliation run": f"/admin/handles_repair/reconciliationrun/{h['run'].pk}/change/",
    }


def test_every_page_shows_markup_as_text(client, superuser, hostile):
    client.force_login(superuser)
    unsafe, hidden = {}, []
    for name, url in pages(hostile).items():
        response = client.get(url)
        assert response.status_code in (200, 410), (name, response.status_code)
        html = response.content.decode()
        if found := [raw for raw in RAW if raw in html]:
            unsafe[name] = found
        if not any(escaped in html for escaped in ESCAPED):
            hidden.append(name)  # a page that does not show the values proves nothing
    assert not unsafe, f"unescaped markup on: {unsafe}"
    assert not hidden, f"these pages did not show the hostile values: {hidden}"


def test_the_public_resolver_redirects_without_rendering(client, hostile):
    response = client.get(f"/handles/{HOME}/xss")
    assert response.status_code == 302
    # Sent on percent-encoded: nothing in the header or the body can be read as markup.
    assert response["Location"] == iri_to_uri(HOSTILE_URL) and not set("<>\"") & set(response["Location"])
    assert b"<script>" not in response.content


def strings(value) -> set[str]:
    if isinstance(value, dict):
        return set().union(*map(strings, value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*map(strings, value)) if value else set()
    return {value} if isinstance(value, str) else set()


def test_the_api_answers_valid_json(client, superuser, hostile):
    client.force_login(superuser)
    for url in (f"/api/v1/handles/{HOME}/xss", "/api/v1/lookup/asset?source_system=dams&external_id=xss",
                f"/api/v1/handles?prefix={HOME}", f"/api/v1/requests/{hostile['request'].pk}",
                "/api/v1/iiif/metadata?source_system=dams&external_id=xss"):
        response = client.get(url)
        assert response.status_code == 200, url
        assert response["Content-Type"].startswith("application/json")
        assert response["X-Content-Type-Options"] == "nosniff"
        body = json.loads(response.content)
        if "iiif" not in url:  # IIIF metadata names the handle only
            assert HOSTILE_URL in strings(body), url  # the value round-trips unchanged
    body = client.get("/api/v1/lookup/asset?source_system=dams&external_id=xss").json()
    assert body["asset"]["title"] == HOSTILE_TITLE
