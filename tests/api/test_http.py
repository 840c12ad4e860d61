"""The API's input edge on Ninja (handles.api.schemas and the handlers of handles.api.errors): bodies get the
codes and fields the Django forms of the first version gave, for any input, and no query string breaks it.

The forms below are that first version's, kept here as the reference the schemas must agree with."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from django import forms
from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from django.db import close_old_connections, connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ninja.errors import ValidationError as NinjaValidationError
from pydantic import ValidationError as PydanticValidationError

from handles.api import schemas
from handles.api.errors import validation_failed
from handles.models import Handle
from handles.validators import validate_new_suffix, validate_prefix, validate_target_url
from tests.api.conftest import ROOT, Api, issue_token
from tests.factories import HandleFactory, PrefixFactory


class JsonText(forms.CharField):
    default_error_messages = {"invalid_type": "Must be a JSON string.",
                              "invalid_text": "Contains characters that are not valid Unicode text."}

    def __init__(self, *, allow_blank: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("strip", False)
        super().__init__(**kwargs)
        self.allow_blank = allow_blank

    def to_python(self, value: Any) -> str:
        if value is not None and not isinstance(value, str):
            raise ValidationError(self.error_messages["invalid_type"], code="invalid_type")
        try:
            (value or "").encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError(self.error_messages["invalid_text"], code="invalid_text") from None
        return super().to_python(value)


def url_field() -> JsonText:
    return JsonText(max_length=django_settings.HANDLES_MAX_URL_LENGTH, validators=[validate_target_url])


class CreateHandleForm(forms.Form):
    handle = JsonText(required=False, max_length=255, validators=[validate_new_suffix, schemas.suffix_only])
    url = url_field()
    prefix = JsonText(max_length=64, validators=[validate_prefix], required=False)


class AssetRefForm(forms.Form):
    source_system = JsonText(max_length=64, validators=[schemas.SOURCE_SYSTEM_VALIDATOR])
    external_id = JsonText(max_length=255)


class PublishForm(AssetRefForm):
    url = url_field()
    title = JsonText(required=False, max_length=1000, allow_blank=True)
    prefix = JsonText(max_length=64, validators=[validate_prefix], required=False)
    handle = JsonText(required=False, max_length=255, validators=[validate_new_suffix])


class AssetDeleteForm(AssetRefForm):
    reason = JsonText(required=False, max_length=2000, allow_blank=True)


PAIRS = [(CreateHandleForm, schemas.CreateHandleIn), (AssetRefForm, schemas.AssetRefIn),
         (PublishForm, schemas.PublishIn), (AssetDeleteForm, schemas.AssetDeleteIn)]


def form_problems(form_class: type[forms.Form], data: dict) -> dict[str, list[str]]:
    """What the first version answered: unknown keys and blank optional values, then the form's errors."""
    problems: dict[str, list[str]] = {}
    for key in data:
        field = form_class.base_fields.get(key)
        if field is None:
            problems[key] = ["unknown_field"]
        elif data[key] == "" and not field.required and not field.allow_blank:
            problems[key] = ["blank"]
    for name, errors in form_class(data).errors.as_data().items():
        problems.setdefault(name, []).extend(error.code for error in errors)
    return problems


def schema_problems(schema: type, data: dict) -> dict[str, list[str]]:
    try:
        schema.model_validate(data)
    except PydanticValidationError as exc:
        errors = [{**error, "loc": ("body", "payload", *error["loc"])} for error in exc.errors()]
        body = validation_failed(None, NinjaValidationError(errors)).content
        return {name: [p["code"] for p in found] for name, found in json.loads(body)["error"]["fields"].items()}
    return {}


value = st.one_of(
    st.none(), st.booleans(), st.integers(), st.lists(st.text(max_size=3), max_size=2),
    st.sampled_from(["", " ", "dams", "DAMS", "a\x00b", "hdl:20.500.1/x", "20.500.1/x", "https://example.org/a",
                     "javascript:alert(1)", "https://example.org/a b", "x" * 300, "12", "-1", "\ud800", "20.500.12345"]),
    st.text(max_size=20),
)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(PAIRS), st.dictionaries(st.sampled_from(["source_system", "external_id", "handle", "url",
                                                                 "title", "prefix", "reason", "other", "URL"]),
                                                value, max_size=5))
def test_bodies_are_refused_as_the_forms_refused_them(pair, data):
    form_class, schema = pair
    assert schema_problems(schema, data) == {name: codes for name, codes in form_problems(form_class, data).items()}


query_piece = st.one_of(
    st.sampled_from(["handle", "url", "source_system", "external_id", "limit", "status", "x", "", "a+b", "%", "%zz",
                     "%ff", "%C3%A9", "=", "&", ";", "é", "+", " "]),
    st.text(max_size=6),
)
query_string = st.lists(st.tuples(query_piece, st.booleans(), query_piece), max_size=6).map(
    lambda parts: "&".join(k + ("=" + v if has_value else "") for k, has_value, v in parts))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/lookup/handle", "/lookup/url", "/lookup/asset", "/handles", "/iiif/metadata"]),
       text=query_string)
def test_no_query_string_breaks_a_read(reader, home, path, text):
    """Keys repeated, blank values, '+', stray '%' and bytes that are not UTF-8: a 200, 400 or 404 in our format.
    (The reader only reads: the examples share its database state safely.)"""
    response = reader.client.get(f"{ROOT}{path}", QUERY_STRING=text.encode("utf-8").decode("iso-8859-1"),
                                 headers=reader.headers)
    assert response.status_code in (200, 400, 404)
    if response.status_code != 200:
        assert set(response.json()["error"]) <= {"code", "message", "fields"}


@pytest.mark.parametrize("text", ["hdl:20.500.12345/café/1", "20.500.12345/CAFé/1",
                                  "https://hdl.handle.net/20.500.12345/Café/1"])
def test_lookups_read_their_query_strings(reader, home, text):
    """End to end: a cited form, a slash in the suffix and non-ASCII all arrive."""
    HandleFactory(prefix=home, suffix="Café/1")
    response = reader.client.get(f"{ROOT}/lookup/handle?handle={quote(text, safe='')}", headers=reader.headers)
    assert response.status_code == 200
    assert response.json()["handle"] == "20.500.12345/Café/1"


def test_a_query_error_lists_every_problem(reader, home):
    response = reader.client.get(f"{ROOT}/handles?limit=0&status=lost&sort=x", headers=reader.headers)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "unknown_field"
    assert {name: [p["code"] for p in found] for name, found in error["fields"].items()} == {
        "sort": ["unknown_field"], "status": ["invalid_choice"], "limit": ["min_value"]}
    assert error["fields"]["sort"][0]["message"].endswith("(the parameters are: prefix, status, source_system, "
                                                          "external_id, changed_since, cursor, limit).")


@pytest.mark.django_db(transaction=True)
def test_a_create_survives_a_backend_the_server_ended(client):
    """A backend the server ended (a database restart) is noticed by Django's health check of the kept
    connection (CONN_HEALTH_CHECKS) as the next request starts, and the call runs on a new connection."""
    PrefixFactory(prefix="20.500.12345", is_default=True, server_url="https://127.0.0.1:9")
    writer = Api(client, issue_token("write"))
    assert writer.post("/handles", {"url": "https://example.org/1"}).status_code == 202
    assert connection.connection is not None and connection.health_check_enabled  # kept between requests
    backend = connection.connection.info.backend_pid
    with psycopg.connect(connection.connection.info.dsn, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [backend])
    close_old_connections()  # as a request's start does in a server (the test client skips it)
    assert writer.post("/handles", {"url": "https://example.org/2"}).status_code == 202
    assert connection.connection.info.backend_pid != backend
    assert Handle.objects.filter(target_url__startswith="https://example.org/").count() == 2
