"""Property-based tests of the whole API from the OpenAPI document it serves (schemathesis + Hypothesis).

Every operation gets the schema's examples, boundary cases and a fixed number of random inputs, valid and
invalid, sent with a write token through Django's WSGI handler inside the test's transaction. No answer
may be a 5xx, and every answer must match the document (status code, content type, headers, body).
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from handles.api import openapi
from tests.api.conftest import issue_token
from tests.factories import AssetFactory, HandleFactory

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection, unsupported_method, ignored_auth]


@pytest.fixture
def api_data(prefix, settings) -> dict[str, str]:
    """Data behind the schema's examples (20.500.12345/x7kq2m, dams:node-4711) on a prefix served by the
    simulator, and a write token's header. The WSGI handler keeps the test's database connection open
    across calls, as Django's test client does."""
    settings.ALLOWED_HOSTS = ["*"]
    settings.HANDLES_API_RATE = settings.HANDLES_API_ANON_RATE = "1000000/minute"  # fuzz, not the limiter
    asset = AssetFactory(source_system="dams", external_id="node-4711", url="https://dams.example.edu/node/4711")
    HandleFactory(prefix=prefix, suffix="x7kq2m", target_url=asset.url, asset=asset)
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield {"Authorization": f"Bearer {issue_token('write')}"}
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


schema = schemathesis.openapi.from_dict(openapi.document())
schema.app = WSGIHandler()


def test_the_served_document_is_the_tested_one(client):
    assert client.get("/api/v1/openapi.json").json() == json.loads(json.dumps(openapi.document()))


@schema.parametrize()
@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_api(case, api_data):
    case.call_and_validate(headers=api_data, checks=CHECKS)
