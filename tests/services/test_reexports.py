"""`from handles import services; services.handle_mint(...)` keeps working: every public name of the single
services module that preceded the package is still there, as the same object as in its domain module."""

from __future__ import annotations

import importlib
import inspect

import pytest

from handles import services

# The public names of handles/services.py before it became a package, and the errors callers caught through it.
FORMER_NAMES = [
    "Action", "AssetChange", "AssetSpec", "AssetState", "BULK_BATCH_SIZE", "Claim", "HStatus", "HandleExists",
    "HandleServiceError", "HandleStateError", "ImportItem", "LIVE_STATUSES", "MintItem", "Op", "Outcome",
    "PrefixForbidden", "RANDOM_DRAWS", "RStatus", "User", "asset_change_url", "asset_delete", "asset_publish",
    "asset_save", "asset_unpublish", "assets_get_or_create_bulk", "handle_delete", "handle_make_primary",
    "handle_mint", "handle_mint_preview", "handle_redirect", "handle_restore", "handle_tombstone", "handle_verify",
    "handles_import_bulk", "handles_mint_bulk", "handles_queue_bulk", "insert_rows", "prefix_auth_failed",
    "prefix_auth_probe_claim", "prefix_auth_probe_failed", "prefix_auth_recovered", "prefix_record_contact",
    "prefix_save", "prefixes_auth_probe_due", "request_claim", "request_finish", "request_once", "request_retry",
    "requests_cancel", "requests_claim_batch", "requests_finish_batch", "requests_mark_enqueued",
    "requests_retry_bulk", "requests_sweep",
]


@pytest.mark.parametrize("name", FORMER_NAMES)
def test_a_former_name_is_still_exported(name):
    value = getattr(services, name)
    if inspect.isfunction(value) or (inspect.isclass(value) and value.__qualname__ == name):
        assert getattr(importlib.import_module(value.__module__), name) is value  # the one object, not a copy


def test_the_export_list_names_only_what_exists():
    assert sorted(services.__all__) == sorted(set(services.__all__))
    assert [name for name in services.__all__ if not hasattr(services, name)] == []
    assert set(FORMER_NAMES) <= set(services.__all__)
