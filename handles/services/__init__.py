"""Every write to our models goes through the services, by domain:

- `handles`: mint (one or many), redirect, tombstone, restore, delete, verify, make primary;
- `bulk`: import and repair, by the thousand;
- `assets`: the DAMS asset lifecycle and the API's idempotency keys;
- `requests`: staff retry or cancel requests;
- `configuration`: prefixes and assets saved from the admin.

A change to a handle locks its row, updates it, bumps its version and records one HandleRequest; the
request is handed to the task queue as the transaction commits (never before). The worker's side (claims,
pushes, finishes, the sweep, a prefix's authentication pause) is the outbox, `handles.outbox`.

The names below are re-exported so that `from handles import services; services.handle_mint(...)` keeps
working; new code imports from the domain module. The worker's functions are re-exported for the same
reason (callers and tests written before the outbox was a package of its own), and so are the domain
errors the services raise (`services.HandleServiceError`).
"""

from handles.dbwrites import BULK_BATCH_SIZE, insert_rows
from handles.exceptions import HandleExists, HandleServiceError, HandleStateError, PrefixForbidden
from handles.outbox.claims import Claim, request_claim, requests_claim_batch
from handles.outbox.finish import Outcome, request_finish, requests_finish_batch
from handles.outbox.handover import requests_mark_enqueued
from handles.outbox.pause import (
    prefix_auth_failed,
    prefix_auth_probe_claim,
    prefix_auth_probe_failed,
    prefix_auth_recovered,
    prefix_record_contact,
    prefixes_auth_probe_due,
)
from handles.outbox.sweep import requests_sweep
from handles.services.assets import (
    LIVE_STATUSES,
    AssetChange,
    AssetState,
    asset_change_url,
    asset_delete,
    asset_publish,
    asset_unpublish,
    request_once,
)
from handles.services.bulk import (
    AssetSpec,
    ImportItem,
    assets_get_or_create_bulk,
    handles_import_bulk,
    handles_queue_bulk,
)
from handles.services.common import Action, HStatus, Op, RStatus, User
from handles.services.configuration import asset_save, prefix_save
from handles.services.handles import (
    RANDOM_DRAWS,
    MintItem,
    handle_delete,
    handle_make_primary,
    handle_mint,
    handle_mint_preview,
    handle_redirect,
    handle_restore,
    handle_tombstone,
    handle_verify,
    handles_mint_bulk,
)
from handles.services.requests import request_retry, requests_cancel, requests_retry_bulk

__all__ = [
    "BULK_BATCH_SIZE", "LIVE_STATUSES", "RANDOM_DRAWS", "Action", "AssetChange", "AssetSpec", "AssetState", "Claim",
    "HStatus", "HandleExists", "HandleServiceError", "HandleStateError", "ImportItem", "MintItem", "Op", "Outcome", "PrefixForbidden", "RStatus", "User", "asset_change_url", "asset_delete",
    "asset_publish", "asset_save", "asset_unpublish", "assets_get_or_create_bulk", "handle_delete",
    "handle_make_primary", "handle_mint", "handle_mint_preview", "handle_redirect", "handle_restore",
    "handle_tombstone", "handle_verify", "handles_import_bulk", "handles_mint_bulk", "handles_queue_bulk",
    "insert_rows", "prefix_auth_failed", "prefix_auth_probe_claim", "prefix_auth_probe_failed",
    "prefix_auth_recovered", "prefix_record_contact", "prefix_save", "prefixes_auth_probe_due", "request_claim",
    "request_finish", "request_once", "request_retry", "requests_cancel", "requests_claim_batch",
    "requests_finish_batch", "requests_mark_enqueued", "requests_retry_bulk", "requests_sweep",
]
