"""The JSON shapes of our records. Each is a contract (tests assert the exact keys), so add, never rename."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any

from django.urls import get_script_prefix, reverse

from handles.api.queries import LookupAsset, LookupHandle
from handles.citation import citation_url
from handles.models import Asset, Handle, HandleRequest

# ArchivesSpace stores a digital object's link in file_versions.file_uri, a 255-character column.
FILE_URI_MAX = 255


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def request_json(request: HandleRequest) -> dict[str, Any]:
    """The request record in the shape library clients expect (shared/context/002, "Handle Metadata
    Structure"): id, op, full_handle, url, attempts, status, javastdout, java_stderr, error; and more."""
    return {
        "id": request.pk,
        "op": request.op,
        "full_handle": request.full_handle,
        "url": request.url,
        "attempts": request.attempts,
        "status": request.status,
        "javastdout": request.server_output,
        "java_stderr": request.server_error,
        "error": request.error,
        "action": request.action,
        "created_at": _time(request.created_at),
        "finished_at": _time(request.finished_at),
        "status_url": f"{_requests_root(get_script_prefix())}{request.pk}",
    }


@lru_cache
def _requests_root(script_prefix: str) -> str:
    """Where request records live, e.g. /api/v1/requests/: reversed once, not for every answer (a reverse
    cost a tenth of a create call's work in the API's own code)."""
    return reverse("handles_api:request", kwargs={"id": 0}).removesuffix("0")


def handle_json(handle: Handle | LookupHandle) -> dict[str, Any]:
    """A Handle needs `prefix` and `asset` loaded (select_related)."""
    resolvable = citation_url(handle.prefix.prefix, handle.suffix)
    return {
        "handle": handle.full_handle,
        "prefix": handle.prefix.prefix,
        "suffix": handle.suffix,
        "url": handle.target_url,
        "resolver_url": resolvable,
        # null when too long for ArchivesSpace: it would refuse the whole digital object.
        "file_uri": resolvable if len(resolvable) <= FILE_URI_MAX else None,
        "status": handle.status,
        "in_sync": handle.in_sync,
        "is_primary": handle.is_primary,
        "asset": asset_ref_json(handle.asset) if handle.asset is not None else None,  # no query when null
        "created_at": _time(handle.created_at),
        "updated_at": _time(handle.updated_at),
    }


def asset_ref_json(asset: Asset | LookupAsset) -> dict[str, str]:
    return {"source_system": asset.source_system, "external_id": asset.external_id}


def asset_json(asset: Asset | LookupAsset) -> dict[str, Any]:
    return {
        **asset_ref_json(asset),
        "title": asset.title,
        "url": asset.url,
        "state": asset.state,
        "created_at": _time(asset.created_at),
        "updated_at": _time(asset.updated_at),
    }


def iiif_metadata_entry(handle: Handle | LookupHandle) -> dict[str, Any]:
    """One entry of a IIIF Presentation 3 manifest's `metadata` list."""
    return {"label": {"en": ["Handle"]}, "value": {"none": [citation_url(handle.prefix.prefix, handle.suffix)]}}
