"""Handle services (handles.services.handles): every change, its guards, and the request it records."""

from __future__ import annotations

import pytest

from handles.exceptions import HandleExists, HandleServiceError, HandleStateError
from handles.models import Handle, HandleRequest, Prefix
from handles.services import handles as handle_services
from tests.factories import AssetFactory, HandleFactory, PrefixFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def offline_prefix():
    return PrefixFactory()


def mint(prefix, **kwargs):
    kwargs.setdefault("target_url", "https://example.org/a")
    return handle_services.handle_mint(prefix=prefix, **kwargs)


def test_mint_records_a_pending_handle_and_a_queued_create(offline_prefix, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        req = mint(offline_prefix, suffix="Abc-1")
    handle = req.handle
    assert handle.status == Handle.Status.PENDING
    assert (handle.suffix, handle.suffix_key, handle.version, handle.synced_version) == ("Abc-1", "ABC-1", 1, 0)
    assert (req.op, req.action, req.status, req.full_handle, req.url) == (
        "create", "mint", "queued", "20.500.12345/Abc-1", "https://example.org/a")
    assert len(callbacks) == 1  # the task is handed over only after commit


def test_random_suffix_uses_the_prefix_alphabet_and_length(offline_prefix):
    suffixes = {mint(offline_prefix).handle.suffix for _ in range(20)}
    assert len(suffixes) == 20
    assert all(len(s) == 8 and set(s) <= set(offline_prefix.suffix_alphabet) for s in suffixes)


def test_asset_id_policy_takes_the_external_id(offline_prefix):
    offline_prefix.suffix_policy = Prefix.SuffixPolicy.ASSET_ID
    asset = AssetFactory(external_id="node-4711")
    assert mint(offline_prefix, asset=asset).handle.suffix == "node-4711"
    with pytest.raises(HandleServiceError, match="asset"):
        mint(offline_prefix)


def test_given_policy_requires_a_suffix(offline_prefix):
    offline_prefix.suffix_policy = Prefix.SuffixPolicy.GIVEN
    with pytest.raises(HandleServiceError) as caught:
        mint(offline_prefix)
    assert caught.value.code == "suffix_required"


def test_existing_suffix_is_refused_case_insensitively(offline_prefix):
    mint(offline_prefix, suffix="x7kq2m")
    with pytest.raises(HandleExists, match="already exists"):
        mint(offline_prefix, suffix="X7KQ2M")
    assert Handle.objects.count() == 1


def test_non_ascii_case_is_a_different_handle(offline_prefix):
    mint(offline_prefix, suffix="été")
    assert mint(offline_prefix, suffix="ÉTÉ").handle.suffix_key == "ÉTÉ"  # not folded, as on the server


def test_deleted_suffix_is_never_reused(offline_prefix):
    handle = mint(offline_prefix, suffix="gone").handle
    handle_services.handle_delete(handle=handle)
    with pytest.raises(HandleExists, match="was deleted .* never reused"):
        mint(offline_prefix, suffix="GONE")


@pytest.mark.parametrize("url", ["javascript:alert(1)", "/relative", "data:text/html,x", "ftp://x.org/"])
def test_mint_refuses_bad_urls_and_writes_nothing(offline_prefix, url):
    with pytest.raises(HandleServiceError):
        mint(offline_prefix, suffix="bad", target_url=url)
    assert not Handle.objects.exists() and not HandleRequest.objects.exists()


def test_redirect_bumps_the_version_and_records_before_and_after(offline_prefix):
    handle = HandleFactory(prefix=offline_prefix, target_url="https://example.org/old")
    req = handle_services.handle_redirect(handle=handle, target_url="https://example.org/new")
    handle.refresh_from_db()
    assert (handle.target_url, handle.version) == ("https://example.org/new", 2)
    assert (req.op, req.from_url, req.url, req.handle_version) == ("update", "https://example.org/old",
                                                                  "https://example.org/new", 2)


def test_redirect_to_the_same_url_is_refused(offline_prefix):
    handle = HandleFactory(prefix=offline_prefix, target_url="https://example.org/same")
    with pytest.raises(HandleStateError) as caught:
        handle_services.handle_redirect(handle=handle, target_url="https://example.org/same")
    assert caught.value.code == "no_change"


def test_tombstone_points_the_server_at_the_tombstone_page(offline_prefix, settings):
    settings.HANDLES_PUBLIC_BASE_URL = "https://handles.example.edu"
    handle = HandleFactory(prefix=offline_prefix, suffix="a/b")
    req = handle_services.handle_tombstone(handle=handle, reason="Withdrawn at the donor's request",
                                    successor_url="https://example.org/successor")
    handle.refresh_from_db()
    assert handle.status == Handle.Status.TOMBSTONED
    assert req.url == "https://handles.example.edu/tombstone/20.500.12345/a/b" == handle.resolver_target
    assert (req.action, req.reason, req.to_status) == ("tombstone", "Withdrawn at the donor's request", "tombstoned")


def test_tombstone_needs_a_reason_and_a_live_handle(offline_prefix):
    handle = HandleFactory(prefix=offline_prefix)
    with pytest.raises(HandleServiceError, match="reason"):
        handle_services.handle_tombstone(handle=handle, reason="  ")
    handle_services.handle_tombstone(handle=handle, reason="gone")
    with pytest.raises(HandleStateError):
        handle_services.handle_tombstone(handle=handle, reason="again")
    with pytest.raises(HandleStateError, match="restore"):
        handle_services.handle_redirect(handle=handle, target_url="https://example.org/x")


def test_restore_returns_to_the_target(offline_prefix):
    handle = HandleFactory(prefix=offline_prefix, synced_version=1)
    handle_services.handle_tombstone(handle=handle, reason="gone")
    req = handle_services.handle_restore(handle=handle)
    handle.refresh_from_db()
    assert handle.status == Handle.Status.ACTIVE and req.url == handle.target_url
    with pytest.raises(HandleStateError):
        handle_services.handle_restore(handle=handle)


def test_delete_keeps_the_row_and_refuses_further_changes(offline_prefix):
    handle = HandleFactory(prefix=offline_prefix)
    req = handle_services.handle_delete(handle=handle, reason="asset deleted")
    handle.refresh_from_db()
    assert handle.status == Handle.Status.DELETED and handle.deleted_at is not None
    assert (req.op, req.url) == ("delete", "")
    for change in (lambda: handle_services.handle_delete(handle=handle),
                   lambda: handle_services.handle_redirect(handle=handle, target_url="https://example.org/z"),
                   lambda: handle_services.handle_tombstone(handle=handle, reason="r")):
        with pytest.raises(HandleStateError):
            change()
    assert Handle.objects.filter(pk=handle.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_a_taken_random_suffix_is_drawn_again(monkeypatch):
    """In a transaction of its own (an API create) handle_mint does not look a random suffix up first: the
    unique constraint refuses a taken one, and it draws again in a fresh transaction, leaving nothing behind."""
    prefix = PrefixFactory()
    mint(prefix, suffix="TAKEN001")
    draws = iter(["taken001", "free0001"])
    monkeypatch.setattr(handle_services, "_random_suffix", lambda prefix: next(draws))
    req = mint(prefix)
    assert req.handle.suffix == "free0001"
    assert sorted(Handle.objects.filter(prefix=prefix).values_list("suffix", flat=True)) == ["TAKEN001", "free0001"]
    assert HandleRequest.objects.filter(handle__prefix=prefix).count() == 2


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_a_full_random_suffix_space_is_refused(monkeypatch):
    prefix = PrefixFactory()
    mint(prefix, suffix="TAKEN001")
    monkeypatch.setattr(handle_services, "_random_suffix", lambda prefix: "taken001")
    with pytest.raises(HandleServiceError) as caught:
        mint(prefix)
    assert caught.value.code == "suffix_space_exhausted"
    assert Handle.objects.filter(prefix=prefix).count() == 1
    assert HandleRequest.objects.filter(handle__prefix=prefix).count() == 1
