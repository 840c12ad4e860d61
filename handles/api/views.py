"""The API's views: thin. Each validates its input with a form, then calls a service (writes) or a query
(reads) and answers with a representation. Errors are raised; `endpoint` turns them into JSON bodies.

Writes go through handles.services and the request queue, as the admin's do: the only call to the Handle
server made while a client waits is a read (resolve, remote listing).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt

from handles import services
from handles.api import forms, openapi, queries
from handles.api.auth import Caller
from handles.api.errors import ApiError, error_response, json_response
from handles.api.http import PUBLIC, READ, WRITE, endpoint, json_body, query_params, validated
from handles.api.representations import asset_json, handle_json, iiif_metadata_entry, request_json
from handles.handle_server.client import HandleNotFound, HandleServerError, client_for, url_of
from handles.models import Asset, Handle, HandleRequest, Prefix
from handles.validators import ascii_upper, split_handle, validate_prefix, validate_suffix

DEFAULT_PAGE_SIZE = 100
IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,100}$")
Op = HandleRequest.Op


# --- Helpers --------------------------------------------------------------------------------------
def _syntax(check: Callable[[str], None], value: str) -> None:
    try:
        check(value)
    except ValidationError as exc:
        raise ApiError(400, exc.code or "invalid_handle", " ".join(exc.messages)) from None


def _prefix_or_default(name: str) -> Prefix:
    if name:
        prefix = queries.prefix_named(name)
        if prefix is None:
            raise ApiError(400, "unknown_prefix", f"No prefix {name} is configured here.")
        return prefix
    prefix = queries.default_prefix()
    if prefix is None:
        raise ApiError(400, "prefix_required", "Name the prefix: no default prefix is configured.")
    return prefix


def _known_prefix(caller: Caller, name: str) -> Prefix:
    """A prefix named in the path: 404 if we do not serve it."""
    _syntax(validate_prefix, name)
    prefix = queries.prefix_named(name)
    if prefix is None:
        raise ApiError(404, "unknown_prefix", f"No prefix {name} is configured here.")
    caller.require_prefix(prefix)
    return prefix


def _handle_at(caller: Caller, prefix: str, suffix: str) -> Handle:
    _syntax(validate_prefix, prefix)
    _syntax(validate_suffix, suffix)
    handle = queries.handle_named(prefix, suffix)
    if handle is None:
        _known_prefix(caller, prefix)
        raise ApiError(404, "handle_not_found", f"There is no handle {prefix}/{suffix}.")
    caller.require_prefix(handle.prefix)
    return handle


def _asset(data: dict[str, Any]) -> Asset:
    asset = queries.asset_named(data["source_system"], data["external_id"])
    if asset is None:
        raise ApiError(404, "asset_not_found", f"There is no asset {data['source_system']}:{data['external_id']}.")
    return asset


def _once(request: HttpRequest, caller: Caller, perform: Callable[[], HandleRequest], *, op: str,
          full_handle: str | None) -> tuple[HandleRequest, bool]:
    """Honour an Idempotency-Key: a retried call gets the first call's request record back."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return perform(), False
    if not IDEMPOTENCY_KEY_RE.match(key):
        raise ApiError(400, "invalid_idempotency_key", "The Idempotency-Key must be 1 to 100 printable ASCII "
                       "characters without spaces, such as a UUID.")
    record, replayed = services.request_once(idempotency_key=f"{caller.key}:{key}", perform=perform)
    if replayed and (record.op != op or (full_handle and ascii_upper(record.full_handle) != ascii_upper(full_handle))):
        raise ApiError(422, "idempotency_key_reused", f"This Idempotency-Key was used for request #{record.pk} "
                       f"({record.op} {record.full_handle}); use a new key for a different call.")
    return record, replayed


def _accepted(record: HandleRequest, replayed: bool) -> JsonResponse:
    body = request_json(record)
    headers = {"Location": body["status_url"]}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return json_response(body, status=202, headers=headers)


def _server_failure(prefix: Prefix, exc: HandleServerError) -> ApiError:
    if exc.transient:
        return ApiError(503, "handle_server_unavailable", f"The Handle server of {prefix.prefix} did not answer: "
                        f"{exc}", headers={"Retry-After": "30"})
    return ApiError(502, "handle_server_error", f"The Handle server of {prefix.prefix} refused the call: {exc}")


def _asset_answer(change: services.AssetChange, caller: Caller) -> JsonResponse:
    handles = [handle_json(h) for h in queries.handles_of_asset(change.asset, caller.prefix_ids)]
    body = {"asset": asset_json(change.asset), "handles": handles,
            "requests": [request_json(r) for r in change.requests]}
    return json_response(body, status=202 if change.requests else 200)


# --- Handles --------------------------------------------------------------------------------------
@endpoint(READ)
def list_handles(request: HttpRequest, caller: Caller) -> HttpResponse:
    data = validated(forms.HandleListForm, request.GET)
    prefix = None
    if data["prefix"]:
        prefix = queries.prefix_named(data["prefix"])
        if prefix is None:
            raise ApiError(400, "unknown_prefix", f"No prefix {data['prefix']} is configured here.")
        caller.require_prefix(prefix)
    changed_since = data["changed_since"]
    after = queries.Position.decode(data["cursor"], by_change=changed_since is not None) if data["cursor"] else None
    rows, following = queries.handles_page(
        prefix=prefix, status=data["status"], asset_source=data["source_system"], external_id=data["external_id"],
        changed_since=changed_since, prefix_ids=caller.prefix_ids, after=after, limit=data["limit"] or DEFAULT_PAGE_SIZE,
    )
    next_cursor = following.encode() if following else None
    next_url = None
    if next_cursor:
        query = request.GET.copy()
        query["cursor"] = next_cursor
        next_url = f"{request.path}?{query.urlencode()}"
    return json_response({"results": [handle_json(h) for h in rows], "next_cursor": next_cursor, "next": next_url})


@endpoint(WRITE)
def create_handle(request: HttpRequest, caller: Caller) -> HttpResponse:
    data = validated(forms.CreateHandleForm, json_body(request))
    prefix = _prefix_or_default(data["prefix"])
    caller.require_prefix(prefix)
    suffix = data["handle"] or None
    if suffix and ascii_upper(suffix).startswith(ascii_upper(prefix.prefix) + "/"):
        raise ApiError(400, "invalid_suffix", f"Give the suffix only, without the prefix {prefix.prefix}/.")
    record, replayed = _once(
        request, caller,
        lambda: services.handle_mint(prefix=prefix, target_url=data["url"], suffix=suffix, actor=caller.user,
                                     via=caller.via),
        op=Op.CREATE, full_handle=f"{prefix.prefix}/{suffix}" if suffix else None,
    )
    return _accepted(record, replayed)


@endpoint(READ)
def get_handle(request: HttpRequest, caller: Caller, prefix: str, suffix: str) -> HttpResponse:
    return json_response(handle_json(_handle_at(caller, prefix, suffix)))


@endpoint(WRITE)
def update_handle(request: HttpRequest, caller: Caller, prefix: str, suffix: str) -> HttpResponse:
    handle = _handle_at(caller, prefix, suffix)
    data = validated(forms.UpdateHandleForm, json_body(request))
    record, replayed = _once(
        request, caller,
        lambda: services.handle_redirect(handle=handle, target_url=data["url"], actor=caller.user, via=caller.via),
        op=Op.UPDATE, full_handle=handle.full_handle,
    )
    return _accepted(record, replayed)


@endpoint(WRITE)
def delete_handle(request: HttpRequest, caller: Caller, prefix: str, suffix: str) -> HttpResponse:
    handle = _handle_at(caller, prefix, suffix)
    record, replayed = _once(
        request, caller, lambda: services.handle_delete(handle=handle, actor=caller.user, via=caller.via),
        op=Op.DELETE, full_handle=handle.full_handle,
    )
    return _accepted(record, replayed)


@endpoint(READ)
def get_request(request: HttpRequest, caller: Caller, request_id: int) -> HttpResponse:
    record = None
    if request_id < 2**63:
        record = HandleRequest.objects.select_related("handle").filter(pk=request_id).first()
    if record is None:
        raise ApiError(404, "request_not_found", f"There is no request #{request_id}.")
    if caller.prefix_ids is not None and record.handle.prefix_id not in caller.prefix_ids:
        raise ApiError(403, "prefix_forbidden", "This token is not allowed to see requests of that prefix.")
    return json_response(request_json(record))


@endpoint(READ)
def resolve_handle(request: HttpRequest, caller: Caller, prefix: str, suffix: str) -> HttpResponse:
    """What the Handle server holds now, beside our record of the handle."""
    _syntax(validate_suffix, suffix)
    served = _known_prefix(caller, prefix)
    local = queries.handle_named(prefix, suffix)
    full_handle = local.full_handle if local else f"{served.prefix}/{suffix}"
    try:
        answer = client_for(served.server_config()).get_handle(full_handle)
        server = {"found": True, "url": url_of(answer.body), "values": (answer.body or {}).get("values", [])}
    except HandleNotFound:
        server = {"found": False, "url": None, "values": []}
    except HandleServerError as exc:
        raise _server_failure(served, exc) from None
    if local is None and not server["found"]:
        raise ApiError(404, "handle_not_found", f"{full_handle} is neither in our records nor on the Handle server.")
    agrees = None
    if local is not None:
        agrees = server["found"] == local.exists_on_server and (
            not server["found"] or server["url"] == local.resolver_target)
    body = {"handle": full_handle, "server": server, "local": handle_json(local) if local else None,
            "agrees": agrees}
    return json_response(body)


@endpoint(READ)
def remote_handles(request: HttpRequest, caller: Caller, prefix: str) -> HttpResponse:
    """The Handle server's own listing of a prefix (upper-cased, as the server stores handles)."""
    served = _known_prefix(caller, prefix)
    data = validated(forms.RemoteListForm, request.GET)
    page = data["page"] or 0
    page_size = data["page_size"] or DEFAULT_PAGE_SIZE
    client = client_for(served.server_config())
    try:
        total = client.count_handles(served.prefix)
        names = client.list_page(served.prefix, page, page_size) if page * page_size < total else []
    except HandleServerError as exc:
        raise _server_failure(served, exc) from None
    except (AttributeError, TypeError, ValueError):
        raise ApiError(502, "handle_server_error", "The Handle server's listing was not in the expected form.") from None
    body = {"prefix": served.prefix, "page": page, "page_size": page_size, "total": total, "handles": names,
            "next_page": page + 1 if (page + 1) * page_size < total else None}
    return json_response(body)


# --- Asset lifecycle (DAMS) -----------------------------------------------------------------------
@endpoint(WRITE)
def publish_asset(request: HttpRequest, caller: Caller) -> HttpResponse:
    body = json_body(request)
    data = validated(forms.PublishForm, body)
    change = services.asset_publish(
        source_system=data["source_system"], external_id=data["external_id"], url=data["url"],
        prefix=_prefix_or_default(data["prefix"]), title=data["title"] if body.get("title") is not None else None,
        suffix=data["handle"] or None, permitted_prefix_ids=caller.prefix_ids, actor=caller.user, via=caller.via,
    )
    return _asset_answer(change, caller)


@endpoint(WRITE)
def unpublish_asset(request: HttpRequest, caller: Caller) -> HttpResponse:
    data = validated(forms.AssetRefForm, json_body(request))
    change = services.asset_unpublish(asset=_asset(data), permitted_prefix_ids=caller.prefix_ids,
                                      actor=caller.user, via=caller.via)
    return _asset_answer(change, caller)


@endpoint(WRITE)
def change_asset_url(request: HttpRequest, caller: Caller) -> HttpResponse:
    data = validated(forms.ChangeUrlForm, json_body(request))
    change = services.asset_change_url(asset=_asset(data), url=data["url"],
                                       permitted_prefix_ids=caller.prefix_ids, actor=caller.user, via=caller.via)
    return _asset_answer(change, caller)


@endpoint(WRITE)
def delete_asset(request: HttpRequest, caller: Caller) -> HttpResponse:
    data = validated(forms.AssetDeleteForm, json_body(request))
    change = services.asset_delete(asset=_asset(data), reason=data["reason"],
                                   permitted_prefix_ids=caller.prefix_ids, actor=caller.user, via=caller.via)
    return _asset_answer(change, caller)


# --- ArchivesSpace lookups and IIIF (our database only) -------------------------------------------
@endpoint(READ)
def lookup_asset(request: HttpRequest, caller: Caller) -> HttpResponse:
    data = validated(forms.AssetQueryForm, query_params(request), strict=False)
    handles = queries.lookup_of_asset(data["source_system"], data["external_id"], caller.prefix_ids)
    asset = handles[0].asset if handles else _asset(data)  # one query when the asset has handles
    return json_response({"asset": asset_json(asset), "handles": [handle_json(h) for h in handles]})


@endpoint(READ)
def lookup_handle(request: HttpRequest, caller: Caller) -> HttpResponse:
    """By name, case-insensitive; accepts PREFIX/SUFFIX, hdl:PREFIX/SUFFIX and resolver URLs."""
    data = validated(forms.HandleQueryForm, query_params(request), strict=False)
    try:
        prefix, suffix = split_handle(data["handle"])
    except ValidationError as exc:
        raise ApiError(400, exc.code or "invalid_handle", " ".join(exc.messages)) from None
    handle = queries.lookup_by_name(prefix, suffix)
    if handle is None:
        raise ApiError(404, "handle_not_found", f"There is no handle {prefix}/{suffix}.")
    caller.require_prefix(handle.prefix)
    return json_response(handle_json(handle))


@endpoint(READ)
def lookup_url(request: HttpRequest, caller: Caller) -> HttpResponse:
    """Reverse lookup: the handles whose target is exactly this URL (at most 1000)."""
    url = validated(forms.UrlQueryForm, query_params(request), strict=False)["url"]
    handles = [handle_json(h) for h in queries.lookup_with_url(url, caller.prefix_ids)]
    return json_response({"url": url, "handles": handles})


@endpoint(READ)
def iiif_metadata(request: HttpRequest, caller: Caller) -> HttpResponse:
    """The entries a IIIF Presentation 3 manifest's `metadata` should carry: one per live handle."""
    data = validated(forms.AssetQueryForm, query_params(request), strict=False)
    handles = queries.lookup_of_asset(data["source_system"], data["external_id"], caller.prefix_ids)
    if not handles:
        _asset(data)  # 404 for an unknown asset; a known one without handles has no entries
    return json_response({"metadata": [iiif_metadata_entry(h) for h in handles if h.status in queries.LIVE]})


# --- Documentation --------------------------------------------------------------------------------
@endpoint(PUBLIC)
def openapi_document(request: HttpRequest) -> HttpResponse:
    return json_response(openapi.document())


@endpoint(PUBLIC)
def docs(request: HttpRequest) -> HttpResponse:
    return render(request, "handles_api/docs.html", openapi.docs_context(request))


@csrf_exempt
def not_found(request: HttpRequest, path: str = "") -> HttpResponse:
    return error_response(404, "not_found", f"There is no API endpoint at {request.path}; see the docs at "
                          "/api/v1/docs.")
