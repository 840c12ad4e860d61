"""The Handle server's secret lives in an environment variable and nowhere else: not in any table, not
in the request records, not in the logs of a failing push, not on a page that shows the failure."""

from __future__ import annotations

import base64
import logging
import uuid
from urllib.parse import quote

import pytest
from django.db import connection
from django.urls import reverse

from handles import services
from handles.models import HandleRequest
from tests.conftest import SECRET_ENV, SIM_SECRET


def forms_of(secret: str, identity: str) -> list[str]:
    """The secret as such, and as it travels in a Basic Authorization header."""
    pair = f"{quote(identity, safe='/')}:{secret}".encode()
    return [secret, base64.b64encode(pair).decode(), base64.b64encode(f"{identity}:{secret}".encode()).decode()]


def all_table_text() -> str:
    chunks = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT t::text FROM "{table}" t')
            chunks.extend(row[0] for row in cursor.fetchall())
    return "\n".join(chunks)


@pytest.mark.django_db
def test_the_secret_never_leaves_the_environment(prefix, run_queue, staff_client, monkeypatch, caplog, stem):
    caplog.set_level(logging.DEBUG)  # everything any logger says, urllib3's connection logs included
    mint = run_queue(services.handle_mint, prefix=prefix, suffix=f"{stem}-s", target_url="https://example.org/s/1")
    assert mint.status == "success"

    wrong = f"wrong-{uuid.uuid4().hex}"
    monkeypatch.setenv(SECRET_ENV, wrong)  # an operator typo: the push fails on authentication
    failed = run_queue(services.handle_redirect, handle=mint.handle, target_url="https://example.org/s/2")
    assert failed.status == "queued" and "credentials" in failed.error  # waits for its prefix's probe
    assert failed.server_output  # the exchange with the server is on record, as it should be

    api_page = staff_client.get(reverse("handles_api:remote_handles", kwargs={"prefix": prefix.prefix}))
    admin_page = staff_client.get(reverse("admin:handles_handlerequest_change", args=[failed.pk]))
    assert api_page.status_code == 502 and admin_page.status_code == 200
    assert failed.error in admin_page.content.decode()

    places = {
        "database": all_table_text(),
        "request records": "\n".join(str(v) for v in HandleRequest.objects.values_list(
            "server_output", "server_error", "error", "url", "reason")),
        "logs": caplog.text,
        "API error": api_page.content.decode(),
        "admin page": admin_page.content.decode(),
    }
    assert any(r.name.startswith("urllib3") for r in caplog.records)  # the HTTP layer's own logs included
    for secret in (SIM_SECRET, wrong):
        for form in forms_of(secret, prefix.auth_identity):
            for place, text in places.items():
                assert form not in text, f"the secret appears in the {place}"
