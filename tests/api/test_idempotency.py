"""Idempotency-Key: a retried POST (lost answer, client timeout) returns the same request record."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.test import Client

from handles import services
from handles.models import Handle, HandleRequest, Prefix
from tests.api.conftest import Api, issue_token
from tests.factories import HandleFactory

KEY = {"Idempotency-Key": "5f0c6f0e-8a1b-4c1e-9a53-6a0a3c1e2d11"}


def test_a_retried_create_returns_the_same_request(writer: Api, home):
    first = writer.post("/handles", {"handle": "k1", "url": "https://example.org/1"}, headers=KEY)
    again = writer.post("/handles", {"handle": "k1", "url": "https://example.org/1"}, headers=KEY)
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json()["id"] == first.json()["id"]
    assert again["Idempotent-Replayed"] == "true" and not first.has_header("Idempotent-Replayed")
    assert Handle.objects.count() == 1 and HandleRequest.objects.count() == 1


def test_a_retried_create_of_a_random_suffix_mints_once(writer: Api, home):
    first = writer.post("/handles", {"url": "https://example.org/1"}, headers=KEY).json()
    again = writer.post("/handles", {"url": "https://example.org/1"}, headers=KEY).json()
    assert again["full_handle"] == first["full_handle"]
    assert Handle.objects.count() == 1


def test_without_a_key_a_second_create_conflicts(writer: Api, home):
    writer.post("/handles", {"handle": "k1", "url": "https://example.org/1"})
    response = writer.post("/handles", {"handle": "K1", "url": "https://example.org/1"})
    assert response.status_code == 409 and response.json()["error"]["code"] == "handle_exists"


def test_a_retried_update_and_delete_return_their_requests(writer: Api, home):
    HandleFactory(prefix=home, suffix="h", target_url="https://example.org/a")
    update = [writer.post("/handles/20.500.12345/h", {"url": "https://example.org/b"}, headers=KEY).json()
              for _ in range(2)]
    assert update[0] == update[1] and update[0]["op"] == "update"
    delete_key = {"Idempotency-Key": "delete-h-1"}
    deletes = [writer.delete("/handles/20.500.12345/h", headers=delete_key) for _ in range(2)]
    assert [d.status_code for d in deletes] == [202, 202]
    assert deletes[0].json()["id"] == deletes[1].json()["id"]
    assert HandleRequest.objects.count() == 2


def test_a_key_reused_for_another_call_is_refused(writer: Api, home):
    writer.post("/handles", {"handle": "k1", "url": "https://example.org/1"}, headers=KEY)
    response = writer.post("/handles", {"handle": "k2", "url": "https://example.org/2"}, headers=KEY)
    assert response.status_code == 422 and response.json()["error"]["code"] == "idempotency_key_reused"
    assert not Handle.objects.filter(suffix="k2").exists()


def test_keys_belong_to_their_caller(client, home):
    one, two = Api(client, issue_token("write")), Api(client, issue_token("write"))
    one.post("/handles", {"handle": "k1", "url": "https://example.org/1"}, headers=KEY)
    response = two.post("/handles", {"handle": "k2", "url": "https://example.org/2"}, headers=KEY)
    assert response.status_code == 202 and response.json()["full_handle"] == "20.500.12345/k2"


def test_a_failed_call_records_nothing_under_its_key(writer: Api, home):
    HandleFactory(prefix=home, suffix="taken", target_url="https://example.org/a")
    assert writer.post("/handles", {"handle": "taken", "url": "https://example.org/1"}, headers=KEY).status_code == 409
    retry = writer.post("/handles", {"handle": "free", "url": "https://example.org/1"}, headers=KEY)
    assert retry.status_code == 202 and retry.json()["full_handle"] == "20.500.12345/free"


@pytest.mark.parametrize("key", ["", "has space", "x" * 101, "naïve"])
def test_invalid_keys(writer: Api, home, key):
    response = writer.post("/handles", {"handle": "k1", "url": "https://example.org/1"},
                           headers={"Idempotency-Key": key})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_idempotency_key"
    assert not Handle.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_with_one_key_act_once(monkeypatch):
    """Two copies of one POST arrive together: the key's lock makes the second wait and replay."""
    monkeypatch.setattr("handles.outbox.handover.enqueue_request", lambda request_id: None)
    services.prefix_save(prefix=Prefix(
        prefix="20.500.12345", site_name="Portal", is_default=True, server_url="https://127.0.0.1:9",
        auth_identity="300:20.500.12345/ADMIN", secret_env_var="HANDLE_SECRET_TEST", tls_mode=Prefix.TLS.INSECURE,
        hs_admin_handle="20.500.12345/ADMIN"))
    token = issue_token("write")
    barrier = threading.Barrier(2)
    answers: list[int] = []

    def post() -> None:
        try:
            barrier.wait(timeout=10)
            response = Client().post("/api/v1/handles", {"url": "https://example.org/1"}, content_type="application/json",
                                     headers={"Authorization": f"Bearer {token}", **KEY})
            answers.append(response.json()["id"])
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(answers) == 2 and answers[0] == answers[1]
    assert Handle.objects.count() == 1
