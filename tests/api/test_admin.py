"""API tokens in the admin: superusers only, shown once, stored hashed, revocable."""

from __future__ import annotations

import pytest
from django.urls import reverse

from handles.api.models import ApiToken, hash_secret
from tests.api.conftest import Api
from tests.factories import UserFactory

ADD = reverse("admin:handles_api_apitoken_add")


@pytest.fixture
def root_client(client, db):
    client.force_login(UserFactory(username="root", is_superuser=True))
    return client


def create_token(root_client, **fields) -> tuple[ApiToken, str, str]:
    response = root_client.post(ADD, {"name": "DAMS", "scope": "write", **fields})
    token = ApiToken.objects.get(name="DAMS")
    assert response.status_code == 302  # post/redirect/get
    assert response["Location"] == reverse("admin:handles_api_apitoken_created", args=[token.pk])
    shown = root_client.get(response["Location"])
    assert "no-store" in shown["Cache-Control"]
    plain = shown.context["plain"]
    return token, plain, shown.content.decode()


def test_refreshing_the_page_that_shows_a_new_token_neither_shows_it_again_nor_makes_another(root_client, home):
    token, plain, _ = create_token(root_client)
    again = root_client.get(reverse("admin:handles_api_apitoken_created", args=[token.pk]))
    assert again.status_code == 200 and plain not in again.content.decode()
    assert "cannot be shown again" in again.content.decode()
    assert ApiToken.objects.count() == 1


def test_a_new_token_is_shown_once_and_stored_hashed(root_client, home):
    token, plain, page = create_token(root_client)
    assert plain.startswith(f"hdl_{token.lookup}_") and plain in page
    secret = plain.split("_", 2)[2]
    assert token.secret_hash == hash_secret(secret) and secret not in token.secret_hash
    assert token.created_by.username == "root"
    change_page = root_client.get(reverse("admin:handles_api_apitoken_change", args=[token.pk])).content.decode()
    assert secret not in change_page and f"hdl_{token.lookup}_" in change_page
    assert Api(root_client, plain).get("/handles").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_a_token_restricted_in_the_admin(root_client, home, other_prefix):
    token, plain, _ = create_token(root_client, prefixes=[other_prefix.pk])
    assert list(token.prefixes.all()) == [other_prefix]
    root_client.logout()
    assert Api(root_client, plain).get("/handles", {"prefix": "20.500.12345"}).status_code == 403


def test_revoking(root_client, home):
    token, plain, _ = create_token(root_client)
    response = root_client.post(reverse("admin:handles_api_apitoken_changelist"),
                                {"action": "revoke_selected", "_selected_action": [token.pk]})
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    root_client.logout()
    assert Api(root_client, plain).get("/handles").json()["error"]["code"] == "token_revoked"


@pytest.mark.parametrize("groups", [["Handle staff"], ["Collection managers"]])
def test_staff_cannot_see_tokens(client, db, groups):
    client.force_login(UserFactory(username="staff", groups=groups))
    assert client.get(reverse("admin:handles_api_apitoken_changelist")).status_code == 403
    assert client.get(ADD).status_code == 403
    assert "API tokens" not in client.get(reverse("admin:index")).content.decode()
