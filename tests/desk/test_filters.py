"""The one handle filter (handles.desk.filters): each vocabulary refuses what it cannot honour exactly,
with a reason and a code per parameter, and selects the same handles on every surface. The API's list
calls api_handles(); the codes are the API's own."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from handles.desk.filters import API, BROWSE, DESK, InvalidFilter, api_handles
from handles.models import Handle
from tests.factories import AssetFactory, HandleFactory, PrefixFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def listed():
    prefix = PrefixFactory()
    other = PrefixFactory(prefix="11084", auth_identity="300:11084/ADMIN", hs_admin_handle="11084/ADMIN")
    dams = AssetFactory(source_system="dams", external_id="4711")
    return {
        "dams": HandleFactory(prefix=prefix, suffix="d1", asset=dams),
        "plain": HandleFactory(prefix=prefix, suffix="p1"),
        "other": HandleFactory(prefix=other, suffix="o1", status=Handle.Status.TOMBSTONED),
    }


@pytest.mark.parametrize(("params", "field", "code"), [
    ({"stauts": "active"}, "stauts", "unknown_field"),
    ({"collection": "1"}, "collection", "unknown_field"),  # the desk's filter, not the API's
    ({"sort": "handle"}, "sort", "unknown_field"),
    ({"status": ""}, "status", "blank"),
    ({"status": "lost"}, "status", "invalid_choice"),
    ({"prefix": "20.500.404"}, "prefix", "unknown_prefix"),
    ({"prefix": "not a prefix"}, "prefix", "invalid_prefix"),
    ({"changed_since": "yesterday"}, "changed_since", "invalid"),
    ({"changed_since": "2026-02-31T00:00:00Z"}, "changed_since", "invalid"),
    ({"source_system": "DAMS!"}, "source_system", "invalid_source_system"),
    ({"external_id": "4711"}, "external_id", "source_system_required"),
    ({"external_id": "x" * 256, "source_system": "dams"}, "external_id", "max_length"),
    ({"source_system": "da\x00ms"}, "source_system", "null_characters_not_allowed"),
    ({"source_system": "a" * 65}, "source_system", "max_length"),
    ({"prefix": "9" * 65}, "prefix", "max_length"),
])
def test_the_api_vocabulary_refuses_with_the_apis_codes(listed, params, field, code):
    with pytest.raises(InvalidFilter) as refused:
        api_handles(params)
    assert refused.value.code == code and set(refused.value.details) == {field}
    fields = refused.value.api_fields()
    assert fields[field][0]["code"] == code and fields[field][0]["message"]


def test_the_api_vocabulary_lists_every_problem_at_once(listed):
    with pytest.raises(InvalidFilter) as refused:
        api_handles({"status": "lost", "prefix": "20.500.404", "bogus": "1"})
    assert set(refused.value.api_fields()) == {"status", "prefix", "bogus"}
    assert refused.value.summary().startswith("status: Unknown status 'lost'") and "; prefix: " in refused.value.summary()


def test_the_api_selection_filters_orders_and_names_its_keyset(listed):
    everything = api_handles({"cursor": "anything", "limit": "5"})  # paging is the API's own
    assert list(everything.handles) == sorted(listed.values(), key=lambda h: h.pk)
    assert everything.prefix is None and everything.keyset.order == ("pk",)
    asset = api_handles({"source_system": "dams", "external_id": "4711", "prefix": "20.500.12345"})
    assert list(asset.handles) == [listed["dams"]] and asset.prefix.prefix == "20.500.12345"
    assert list(api_handles({"source_system": " dams ", "external_id": " 4711"}).handles) == []  # ids exactly
    assert list(api_handles({"source_system": "newdams"}).handles) == []  # well formed, no asset yet: none
    assert list(api_handles({"status": "tombstoned", "prefix": "11084"}).handles) == [listed["other"]]
    since = (timezone.now() - timedelta(minutes=5)).isoformat()
    changed = api_handles({"changed_since": since})
    assert changed.keyset.order == ("updated_at", "pk") and changed.handles.query.order_by == ("updated_at", "pk")
    assert changed.handles.count() == 3
    assert api_handles({"changed_since": (timezone.now() + timedelta(days=1)).isoformat()}).handles.count() == 0


def test_the_desk_and_browse_vocabularies(listed):
    prefix_id = str(listed["dams"].prefix_id)
    assert list(DESK.parse({"prefix": prefix_id, "source": "dams"}).queryset()) == [listed["dams"]]
    # An HTML form sends every field: empty means "not filtered" there.
    assert BROWSE.parse({"q": "", "prefix": "", "sort": ""}).queryset().count() == 3
    for vocabulary, foreign in ((DESK, "sort"), (BROWSE, "changed_since"), (DESK, "source_system")):
        with pytest.raises(InvalidFilter) as refused:
            vocabulary.parse({foreign: "x"})
        assert refused.value.code == "unknown_field"
    selection = BROWSE.parse({"status": " active ", "sort": "-created"})
    assert selection.as_params() == {"status": "active"} and selection.sort == "-created"
    assert selection.keyset.order == ("-pk",)
    assert set(API.filters) == {"prefix", "status", "source_system", "external_id", "changed_since"}


@pytest.mark.parametrize("params", [{}, {"changed_since": "2000-01-01T00:00:00Z"}])
def test_a_page_walk_as_the_api_list_would_make_it_sees_each_handle_once(params):
    """The wiring the API's list is to use: api_handles() for the selection, its keyset for the cursor."""
    prefix = PrefixFactory()
    made = [HandleFactory(prefix=prefix, suffix=f"w{i}") for i in range(7)]
    Handle.objects.filter(pk__in=[h.pk for h in made[2:5]]).update(updated_at=timezone.now())  # ties
    seen, cursor = [], None
    while True:
        selection = api_handles({**params, **({"cursor": cursor} if cursor else {}), "limit": "3"})
        rows = selection.handles
        if cursor:
            rows = rows.filter(selection.keyset.after(selection.keyset.decode(cursor)))
        page = list(rows[:4])
        seen += page[:3]
        if len(page) <= 3:
            break
        cursor = selection.keyset.encode_row(page[2])
    assert sorted(h.pk for h in seen) == sorted(h.pk for h in made) and len(seen) == len(made)
