"""Citations: every URL that cites a handle percent-encodes it as a URL path (handles.citation), so that
reading the URL back gives the same handle; a new suffix may not hold characters that break citations."""

from __future__ import annotations

import csv
import io
from urllib.parse import unquote, urlsplit

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from handles import services
from handles.api.representations import handle_json, iiif_metadata_entry
from handles.citation import citation_url, handle_url_path
from handles.exceptions import HandleServiceError
from handles.validators import PREFIX_RE, split_handle, validate_new_suffix, validate_prefix, validate_suffix
from tests.factories import AssetFactory, HandleFactory, PrefixFactory

LEGACY = "a?b#c d%20e"  # an imported handle: every character that breaks a raw citation
LEGACY_CITED = "https://hdl.handle.net/20.500.12345/a%3Fb%23c%20d%2520e"


def accepted(validator):
    def check(value: str) -> bool:
        try:
            validator(value)
        except ValidationError:
            return False
        return True
    return check


prefixes = st.from_regex(PREFIX_RE, fullmatch=True).filter(accepted(validate_prefix))
# Any text the app accepts as a suffix (imported and adopted handles), with the awkward characters often.
suffixes = st.text(st.one_of(st.characters(), st.sampled_from("/?#% .:;+&=@!'()[]~")), min_size=1,
                   max_size=40).filter(accepted(validate_suffix))


@given(prefix=prefixes, suffix=suffixes)
@example(prefix="20.500.12345", suffix="a?b#c")
@example(prefix="20.500.12345", suffix="a b")
@example(prefix="20.500.12345", suffix="100%")
@hypothesis_settings(max_examples=500, suppress_health_check=[HealthCheck.filter_too_much])
def test_reading_a_citation_back_gives_the_same_handle(prefix, suffix):
    url = citation_url(prefix, suffix)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.query, parts.fragment) == ("https", "hdl.handle.net", "", "")
    assert unquote(parts.path.removeprefix("/")) == f"{prefix}/{suffix}"
    # No segment that a browser or HTTP client would collapse ('/./', '/../', '//').
    assert all(segment not in ("", ".", "..") for segment in parts.path.split("/")[1:])
    assert url.isascii() and " " not in url
    # The app reads its own citations back (search, lookup, import all use split_handle).
    assert split_handle(url) == (prefix, suffix)


def test_the_examples_of_issue_10():
    assert citation_url("20.500.12345", "a?b#c") == "https://hdl.handle.net/20.500.12345/a%3Fb%23c"
    assert citation_url("20.500.12345", "a b") == "https://hdl.handle.net/20.500.12345/a%20b"
    assert citation_url("20.500.12345", "x7kq2m/page-1") == "https://hdl.handle.net/20.500.12345/x7kq2m/page-1"
    assert handle_url_path("20.500.12345", "a/../b") == "20.500.12345/a%2F..%2Fb"


@pytest.mark.parametrize("suffix", ["a?b", "a#b", "a b", "100%", 'a"b', "a<b>", "a\\b", "a^b", "a`b", "a{b}",
                                    "a|b", "a\u00a0b"])
def test_a_new_suffix_may_not_hold_characters_that_break_citations(suffix):
    with pytest.raises(ValidationError) as refused:
        validate_new_suffix(suffix)
    assert "citation copied without percent-encoding would break" in refused.value.messages[0]
    validate_suffix(suffix)  # ...but an imported or adopted handle may hold them


@pytest.mark.django_db
def test_every_page_and_answer_cites_a_legacy_handle_percent_encoded(client, staff_user, settings):
    settings.HANDLES_RESOLVER_BASE_URL = "https://hdl.handle.net"
    asset = AssetFactory()
    handle = HandleFactory(prefix=PrefixFactory(), suffix=LEGACY, asset=asset, status="tombstoned",
                           tombstone_reason="Withdrawn")
    assert handle.resolver_url == LEGACY_CITED
    assert handle_json(handle)["resolver_url"] == handle_json(handle)["file_uri"] == LEGACY_CITED
    handle.status = "active"
    assert iiif_metadata_entry(handle)["value"]["none"] == [LEGACY_CITED]
    handle.status = "tombstoned"
    # The tombstone page the server points at, and the local resolver, are reached through their URLs.
    assert urlsplit(handle.tombstone_url).path == "/tombstone/20.500.12345/a%3Fb%23c%20d%2520e"
    tombstone = client.get(urlsplit(handle.tombstone_url).path)
    assert tombstone.status_code == 410 and LEGACY_CITED in tombstone.content.decode()
    client.force_login(staff_user)
    admin_page = client.get(reverse("admin:handles_handle_change", args=[handle.pk])).content.decode()
    assert f'href="{LEGACY_CITED}"' in admin_page
    browse_page = client.get(reverse("desk:detail", args=[handle.pk])).content.decode()
    assert f'href="{LEGACY_CITED}"' in browse_page
    export = client.get(reverse("desk:export"), {"q": "20.500.12345/a?b#c d%20e"})
    rows = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode("utf-8-sig"))))
    assert [row["resolver_url"] for row in rows] == [LEGACY_CITED]


@pytest.mark.django_db
def test_mint_refuses_such_a_suffix_everywhere_with_the_reason(client, staff_user):
    prefix = PrefixFactory(is_default=True)
    with pytest.raises(HandleServiceError) as refused:
        services.handle_mint(prefix=prefix, target_url="https://example.org/1", suffix="a?b")
    assert refused.value.code == "invalid_suffix" and "'?'" in refused.value.message
    client.force_login(staff_user)
    page = client.post(reverse("admin:handles_handle_add"),
                       {"prefix": prefix.pk, "suffix": "a b#c", "target_url": "https://example.org/1", "_preview": "1"})
    assert page.status_code == 200
    assert "a space, &#x27;#&#x27;" in page.content.decode() or "a space, '#'" in page.content.decode()
    assert not prefix.handles.exists()


@pytest.mark.django_db
def test_the_api_refuses_such_a_suffix_with_a_json_error(client):
    from handles.api import services as api_services
    from handles.api.models import ApiToken

    PrefixFactory(is_default=True)
    token = api_services.token_create(token=ApiToken(name="t", scope="write"), created_by=None)
    for path, body in [("/api/v1/handles", {"handle": "a?b", "url": "https://example.org/1"}),
                       ("/api/v1/assets/publish", {"source_system": "dams", "external_id": "1", "handle": "a b",
                                                    "url": "https://example.org/1"})]:
        answer = client.post(path, body, content_type="application/json", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 400, answer.content
        assert answer.json()["error"]["code"] == "invalid_suffix"
