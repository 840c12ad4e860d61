"""The API's input edge (handles.api.http): the lean query-string reader and the plain-field cleaning
give what Django's QueryDict and Form give, for any input."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from django import forms as django_forms
from django.test import RequestFactory
from hypothesis import given, settings
from hypothesis import strategies as st

from handles.api import forms
from handles.api.errors import ApiError
from handles.api.http import _clean_fields, _plain_fields, query_params, validated
from tests.api.conftest import ROOT
from tests.factories import HandleFactory

# Query strings as clients and crawlers send them: keys repeated, blank values, '+', stray '%' and
# percent-encoded bytes that are not UTF-8, raw non-ASCII.
query_piece = st.one_of(
    st.sampled_from(["handle", "url", "source_system", "external_id", "x", "", "a+b", "%", "%zz", "%ff", "%C3%A9",
                     "=", "&", ";", "é", "+", " "]),
    st.text(max_size=6),
)
query_string = st.lists(st.tuples(query_piece, st.booleans(), query_piece), max_size=6).map(
    lambda parts: "&".join(k + ("=" + v if has_value else "") for k, has_value, v in parts))


@settings(max_examples=300, deadline=None)
@given(query_string)
def test_query_params_read_what_request_get_reads(text):
    # A WSGI server hands the raw bytes over as latin-1 text; make them so from the UTF-8 text.
    raw = text.encode("utf-8").decode("iso-8859-1")
    request = RequestFactory().get("/api/v1/lookup/handle")
    request.META["QUERY_STRING"] = raw
    assert query_params(request) == {key: request.GET.get(key) for key in request.GET}


def test_query_params_refuse_too_many_fields(settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 3
    request = RequestFactory().get("/api/v1/lookup/handle?a=1&b=2&c=3&d=4")
    with pytest.raises(ApiError) as refused:
        query_params(request)
    assert (refused.value.status, refused.value.code) == (400, "too_many_fields")


PLAIN = [forms.AssetQueryForm, forms.HandleQueryForm, forms.UrlQueryForm, forms.UpdateHandleForm, forms.AssetRefForm,
         forms.PublishForm, forms.ChangeUrlForm, forms.AssetDeleteForm, forms.RemoteListForm]


def test_which_forms_are_cleaned_field_by_field():
    assert all(_plain_fields(form) is not None for form in PLAIN)
    # Forms with their own clean hooks always run as Forms.
    assert _plain_fields(forms.CreateHandleForm) is None
    assert _plain_fields(forms.HandleListForm) is None


value = st.one_of(
    st.none(), st.booleans(), st.integers(), st.lists(st.text(max_size=3), max_size=2),
    st.sampled_from(["", " ", "dams", "DAMS", "a\x00b", "hdl:20.500.1/x", "20.500.1/x", "https://example.org/a",
                     "javascript:alert(1)", "https://example.org/a b", "x" * 300, "12", "-1", "\ud800"]),
    st.text(max_size=20),
)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(PLAIN), st.dictionaries(st.sampled_from(["source_system", "external_id", "handle", "url",
                                                                  "title", "prefix", "reason", "page", "page_size",
                                                                  "other"]), value, max_size=5))
def test_cleaning_field_by_field_gives_what_the_form_gives(form_class, data):
    form = form_class(data)
    valid = form.is_valid()
    cleaned, errors = _clean_fields(_plain_fields(form_class), data)
    expected_errors = {name: [(e.code, e.messages) for e in found] for name, found in form.errors.as_data().items()}
    assert {name: [(e.code, e.messages) for e in found] for name, found in errors} == expected_errors
    if valid:
        assert cleaned == form.cleaned_data


def test_validated_answers_alike_on_both_paths(monkeypatch):
    """The same errors body whether a form runs whole or field by field."""
    data = {"source_system": "Bad System", "external_id": "x" * 300, "extra": "1"}
    with pytest.raises(ApiError) as fast:
        validated(forms.AssetQueryForm, data, strict=True)
    monkeypatch.setattr("handles.api.http._plain_fields", lambda form_class: None)
    with pytest.raises(ApiError) as whole:
        validated(forms.AssetQueryForm, data, strict=True)
    assert (fast.value.code, fast.value.message, fast.value.fields) == (
        whole.value.code, whole.value.message, whole.value.fields)
    assert set(fast.value.fields) == {"extra", "source_system", "external_id"}


def test_a_form_field_by_field_needs_no_hooks():
    class Hooked(django_forms.Form):
        name = django_forms.CharField()

        def clean_name(self):
            return self.cleaned_data["name"].upper()

    assert _plain_fields(Hooked) is None
    assert validated(Hooked, {"name": "abc"}) == {"name": "ABC"}


@pytest.mark.parametrize("text", ["hdl:20.500.12345/café/1", "20.500.12345/CAFé/1",
                                  "https://hdl.handle.net/20.500.12345/Café/1"])
def test_lookups_read_their_query_strings(reader, home, text):
    """End to end through the lean reader: a cited form, a slash in the suffix and non-ASCII all arrive."""
    HandleFactory(prefix=home, suffix="Café/1")
    response = reader.client.get(f"{ROOT}/lookup/handle?handle={quote(text, safe='')}", headers=reader.headers)
    assert response.status_code == 200
    assert response.json()["handle"] == "20.500.12345/Café/1"
