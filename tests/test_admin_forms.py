"""The admin's own pages and the project's custom admin forms read alike: the aligned layout, the error
note, labels spelled as people read them, and an asset field that copes with 100,000 assets."""

from __future__ import annotations

import re

import pytest
from django.contrib import admin
from django.urls import reverse

from handles.labels import label
from handles.models import Asset
from handles.repair import services as repair_services
from tests.factories import AssetFactory, HandleFactory, PrefixFactory

pytestmark = pytest.mark.django_db

MISSPELT = re.compile(r"\b(Url|Tls|Hs admin|Api|Csv)\b|\b\w+ (url|tls)\b")


def visible_text(response) -> str:
    html = re.sub(r"<(script|style|select)[^>]*>.*?</\1>", " ", response.content.decode(), flags=re.S)
    return re.sub(r"<[^>]+>", " ", html)


def test_labels_are_spelled_as_people_read_them():
    assert label("server url") == "Server URL"
    assert label("hs admin handle") == "HS_ADMIN handle"
    assert label("tls mode") == "TLS mode"
    assert label("Curly") == "Curly"


@pytest.fixture
def pages(superuser):
    handle = HandleFactory(prefix=PrefixFactory(), asset=AssetFactory())
    batch = repair_services.import_batch_create(file_name="a.csv", content=b"handle,url\n20.500.12345/a,https://e.org/a\n",
                                                via="test")
    urls = [reverse("admin:handles_handle_redirect", args=[handle.pk]),
            reverse("admin:handles_handle_tombstone", args=[handle.pk]),
            reverse("admin:handles_repair_importbatch_change", args=[batch.pk])]
    for model in admin.site._registry:
        info = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        urls.append(reverse(f"{info}_changelist"))
        urls.append(reverse(f"{info}_add"))
        if (obj := model.objects.first()) is not None:
            urls.append(reverse(f"{info}_change", args=[obj.pk]))
    return urls


def test_no_admin_page_misspells_url_tls_or_hs_admin(client, superuser, pages):
    client.force_login(superuser)
    checked = 0
    for url in pages:
        response = client.get(url)
        if response.status_code != 200 or getattr(response, "streaming", False):
            continue  # add pages of read-only models answer 403
        assert MISSPELT.findall(visible_text(response)) == [], url
        checked += 1
    assert checked > 30


@pytest.mark.parametrize(("name", "post"), [
    ("mint", {"prefix": "", "target_url": "not a url", "_preview": "1"}),
    ("redirect", {"target_url": "ftp://x"}),
    ("tombstone", {"reason": ""}),
    ("import", {"encoding": "utf-8"}),
    ("reconcile", {"prefix": "999999"}),
    ("health", {"limit": "0"}),
])
def test_custom_forms_use_the_admin_layout_and_its_error_note(client, superuser, name, post):
    handle = HandleFactory(prefix=PrefixFactory())
    url = {
        "mint": reverse("admin:handles_handle_add"),
        "redirect": reverse("admin:handles_handle_redirect", args=[handle.pk]),
        "tombstone": reverse("admin:handles_handle_tombstone", args=[handle.pk]),
        "import": reverse("admin:handles_repair_importbatch_add"),
        "reconcile": reverse("admin:handles_repair_reconciliationrun_add"),
        "health": reverse("admin:handles_repair_healthrun_changelist"),
    }[name]
    client.force_login(superuser)
    page = client.get(url).content.decode()
    assert 'fieldset class="module aligned' in page and "admin/css/forms.css" in page
    assert 'class="form-row' in page and "Please correct" not in page
    answer = client.post(url, post)
    assert answer.status_code == 200
    body = answer.content.decode()
    assert re.search(r'<p class="errornote">\s*Please correct the errors? below\.\s*</p>', body)
    assert '<ul class="errorlist' in body and 'class="form-row errors' in body


def test_mint_finds_an_asset_among_100000_without_listing_them(client, superuser):
    PrefixFactory(is_default=True)
    Asset.objects.bulk_create(
        [Asset(source_system="dams", external_id=f"node-{n}", title=f"Object {n}", url=f"https://dams.example.edu/{n}")
         for n in range(100_000)], batch_size=10_000)
    client.force_login(superuser)
    page = client.get(reverse("admin:handles_handle_add")).content.decode()
    asset_select = re.search(r'<select name="asset".*?</select>', page, re.S).group(0)
    assert "admin-autocomplete" in asset_select and asset_select.count("<option") <= 1
    assert len(page) < 100_000
    found = client.get(reverse("admin:autocomplete"), {"term": "node-98765", "app_label": "handles",
                                                       "model_name": "handle", "field_name": "asset"}).json()
    wanted = Asset.objects.get(external_id="node-98765")
    assert {"id": str(wanted.pk), "text": str(wanted)} in found["results"]
    # The chosen asset is submitted by id and kept through the preview.
    preview = client.post(reverse("admin:handles_handle_add"), {
        "prefix": PrefixFactory().pk, "target_url": "https://dams.example.edu/98765", "asset": wanted.pk,
        "_preview": "1"}).content.decode()
    assert f'name="asset" value="{wanted.pk}"' in preview
