"""The API's operations on Django Ninja: thin. Ninja routes the call, authenticates it (handles.api.auth),
validates its path, query, headers and body with the schemas (handles.api.schemas); each view then calls a
service (writes) or a query (reads) and answers with a representation. Errors are raised; the handlers of
handles.api.errors answer them as JSON. The OpenAPI document and the docs page are generated from all this.

Writes go through handles.services and the request queue, as the admin's do: the only call to the Handle
server made while a client waits is a read (resolve, remote listing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError
from django.http import HttpResponse, JsonResponse, QueryDict
from ninja import Header, NinjaAPI, Query
from ninja.openapi.schema import OpenAPISchema
from pydantic import ValidationError as PydanticValidationError

from handles import services
from handles.api import openapi, queries
from handles.api import schemas as s
from handles.api.auth import READ, WRITE, ApiRequest, Caller
from handles.api.errors import (
    ApiError,
    FieldErrors,
    JsonObjectParser,
    fields_of,
    install,
    invalid_input,
    json_response,
)
from handles.api.representations import asset_json, handle_json, iiif_metadata_entry, request_json
from handles.desk.filters import ApiSelection, InvalidFilter, api_handles
from handles.handle_server.client import HandleNotFound, HandleServerError, client_for, url_of
from handles.keyset import InvalidCursor
from handles.models import Asset, Handle, HandleRequest, Prefix
from handles.validators import ascii_upper, split_handle

DEFAULT_PAGE_SIZE = 100
PAGING = ("cursor", "limit")  # the list's own parameters; the one handle filter reads the others
Op = HandleRequest.Op
HANDLES, ASSETS, LOOKUPS, IIIF = "Handles", "Assets (DAMS)", "ArchivesSpace lookups", "IIIF"


class HandlesApi(NinjaAPI):
    def get_openapi_schema(self, *, path_prefix: str | None = None,
                           path_params: dict[str, Any] | None = None) -> OpenAPISchema:
        """Paths relative to the one server entry, /api/v1, as clients and generators expect."""
        self.servers = [{"url": self.get_root_path(path_params or {}).rstrip("/")}]
        return super().get_openapi_schema(path_prefix="", path_params=path_params)


api = HandlesApi(title="Handles API", version="1.0.0", description=openapi.DESCRIPTION, urls_namespace="handles_api",
                 auth=READ, parser=JsonObjectParser(), docs=openapi.Docs())
install(api)


def errors(*statuses: int) -> dict[int | frozenset[int], type[s.Out]]:
    """The error answers of an operation, beside those of every one (authentication, scope, throttling)."""
    return {frozenset({401, 403, 429, *statuses}): s.ErrorOut}


def writes(summary: str, *, queued: bool = False) -> dict[str, Any]:
    """The Ninja arguments of an operation that changes something; `queued`: it answers 202 with a Location."""
    extra: dict[str, Any] = {"x-scope": "write"}
    if queued:
        extra["responses"] = {202: {"headers": {"Location": {"description": "The request's status URL.",
                                                             "schema": {"type": "string"}, "required": True}}}}
    return {"auth": WRITE, "summary": summary, "openapi_extra": extra}


# --- Helpers --------------------------------------------------------------------------------------
def _prefix_or_default(name: str | None) -> Prefix:
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
    prefix = queries.prefix_named(name)
    if prefix is None:
        raise ApiError(404, "unknown_prefix", f"No prefix {name} is configured here.")
    caller.require_prefix(prefix)
    return prefix


def _handle_at(caller: Caller, prefix: str, suffix: str) -> Handle:
    handle = queries.handle_named(prefix, suffix)
    if handle is None:
        _known_prefix(caller, prefix)
        raise ApiError(404, "handle_not_found", f"There is no handle {prefix}/{suffix}.")
    caller.require_prefix(handle.prefix)
    return handle


def _asset(source_system: str, external_id: str) -> Asset:
    asset = queries.asset_named(source_system, external_id)
    if asset is None:
        raise ApiError(404, "asset_not_found", f"There is no asset {source_system}:{external_id}.")
    return asset


def _once(caller: Caller, key: str | None, perform: Callable[[], HandleRequest], *, op: str,
          full_handle: str | None) -> tuple[HandleRequest, bool]:
    """Honour an Idempotency-Key: a retried call gets the first call's request record back."""
    if key is None:
        return perform(), False
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


IdempotencyKey = Header(None, alias="Idempotency-Key")


# --- Handles --------------------------------------------------------------------------------------
@api.get("/handles", url_name="handles", operation_id="listHandles", tags=[HANDLES], summary="List our handles",
         response={200: s.HandlePage, **errors(400)})
def list_handles(request: ApiRequest, filters: Query[s.HandleListQuery]) -> HttpResponse:
    """Our own records, in a stable order (by id; by change time and id when changed_since is given), paged with
    an opaque cursor: pass `next_cursor` back as `cursor`, or follow `next`. Fast at any depth."""
    caller: Caller = request.auth
    # `filters` is there for the OpenAPI document; the raw query string is what the one filter checks.
    paging, selection = _list_parameters(request.GET)
    if selection.prefix is not None:
        caller.require_prefix(selection.prefix)
    try:
        rows, next_cursor = queries.handles_page(selection, prefix_ids=caller.prefix_ids, cursor=paging.cursor,
                                                 limit=paging.limit or DEFAULT_PAGE_SIZE)
    except InvalidCursor as exc:
        raise ApiError(400, "invalid_cursor", str(exc)) from None
    next_url = None
    if next_cursor:
        query = request.GET.copy()
        query["cursor"] = next_cursor
        next_url = f"{request.path}?{query.urlencode()}"
    return json_response({"results": [handle_json(h) for h in rows], "next_cursor": next_cursor, "next": next_url})


def _list_parameters(params: QueryDict) -> tuple[s.HandlePaging, ApiSelection]:
    """The list's query string, all of it: the paging the list reads, the rest for the one handle filter
    (which refuses what it does not know). Every problem of either is reported at once."""
    fields: FieldErrors = {}
    paging = s.HandlePaging()
    try:
        paging = s.HandlePaging.model_validate({name: params[name] for name in PAGING if name in params})
    except PydanticValidationError as exc:
        fields = fields_of(exc)
    try:
        selection = api_handles(params, paging=PAGING)
    except InvalidFilter as exc:
        raise invalid_input({**exc.api_fields(), **fields}) from None  # the filters first, as the parameters are listed
    if fields:
        raise invalid_input(fields)
    return paging, selection


@api.post("/handles", url_name="handles", operation_id="createHandle", tags=[HANDLES],
          response={202: s.RequestOut, **errors(400, 409, 413, 415, 422)}, **writes("Create a handle", queued=True))
def create_handle(request: ApiRequest, payload: s.CreateHandleIn,
                  idempotency_key: s.IdempotencyKey = IdempotencyKey) -> HttpResponse:
    """Records the handle (status pending) and queues its creation on the Handle server; answers the request
    record (202). Fails with 409 if the handle exists, or existed and was deleted: a handle is never reused.
    Without `handle`, the prefix's suffix policy chooses the suffix."""
    caller: Caller = request.auth
    prefix = _prefix_or_default(payload.prefix)
    caller.require_prefix(prefix)
    suffix = payload.handle or None
    if suffix and ascii_upper(suffix).startswith(ascii_upper(prefix.prefix) + "/"):
        raise ApiError(400, "invalid_suffix", f"Give the suffix only, without the prefix {prefix.prefix}/.")
    record, replayed = _once(
        caller, idempotency_key,
        lambda: services.handle_mint(prefix=prefix, target_url=payload.url, suffix=suffix, actor=caller.user,
                                     via=caller.via),
        op=Op.CREATE, full_handle=f"{prefix.prefix}/{suffix}" if suffix else None,
    )
    return _accepted(record, replayed)


HANDLE_PATH = "/handles/{str:prefix}/{suffix:suffix}"


@api.get(HANDLE_PATH, url_name="handle", operation_id="getHandle", tags=[HANDLES], summary="Our record of a handle",
         response={200: s.HandleOut, **errors(400, 404)})
def get_handle(request: ApiRequest, prefix: s.PrefixInPath, suffix: s.SuffixInPath) -> HttpResponse:
    """Our database's record (case-insensitive name). For what the Handle server holds, use resolve."""
    return json_response(handle_json(_handle_at(request.auth, prefix, suffix)))


UPDATE_ANSWERS: dict[int | frozenset[int], type[s.Out]] = {202: s.RequestOut, **errors(400, 404, 409, 413, 415, 422)}


@api.post(HANDLE_PATH, url_name="handle", operation_id="updateHandle", tags=[HANDLES], response=UPDATE_ANSWERS,
          **writes("Update a handle's URL", queued=True))
def update_handle(request: ApiRequest, prefix: s.PrefixInPath, suffix: s.SuffixInPath, payload: s.UpdateHandleIn,
                  idempotency_key: s.IdempotencyKey = IdempotencyKey) -> HttpResponse:
    """Queues the new URL for the Handle server. Fails if the handle is missing (404) or deleted,
    tombstoned or already at that URL (409)."""
    caller: Caller = request.auth
    handle = _handle_at(caller, prefix, suffix)
    record, replayed = _once(
        caller, idempotency_key,
        lambda: services.handle_redirect(handle=handle, target_url=payload.url, actor=caller.user, via=caller.via),
        op=Op.UPDATE, full_handle=handle.full_handle,
    )
    return _accepted(record, replayed)


@api.patch(HANDLE_PATH, url_name="handle", operation_id="patchHandle", tags=[HANDLES], response=UPDATE_ANSWERS,
           **writes("Update a handle's URL (PATCH)", queued=True))
def patch_handle(request: ApiRequest, prefix: s.PrefixInPath, suffix: s.SuffixInPath, payload: s.UpdateHandleIn,
                 idempotency_key: s.IdempotencyKey = IdempotencyKey) -> HttpResponse:
    """The same as POST to this URL, for clients that prefer PATCH."""
    return update_handle(request, prefix, suffix, payload, idempotency_key)


@api.delete(HANDLE_PATH, url_name="handle", operation_id="deleteHandle", tags=[HANDLES],
            response={202: s.RequestOut, **errors(400, 404, 409, 422)}, **writes("Delete a handle", queued=True))
def delete_handle(request: ApiRequest, prefix: s.PrefixInPath, suffix: s.SuffixInPath,
                  idempotency_key: s.IdempotencyKey = IdempotencyKey) -> HttpResponse:
    """Queues the handle's removal from the Handle server. Our record stays (status deleted), so the suffix is
    never minted again. Fails if the handle is missing (404) or already deleted (409)."""
    caller: Caller = request.auth
    handle = _handle_at(caller, prefix, suffix)
    record, replayed = _once(
        caller, idempotency_key, lambda: services.handle_delete(handle=handle, actor=caller.user, via=caller.via),
        op=Op.DELETE, full_handle=handle.full_handle,
    )
    return _accepted(record, replayed)


@api.get("/requests/{int:id}", url_name="request", operation_id="getRequest", tags=[HANDLES],
         summary="A request's status", response={200: s.RequestOut, **errors(404)})
def get_request(request: ApiRequest, id: int) -> HttpResponse:  # noqa: A002 (the documented parameter's name)
    """queued, running, success or error, with the server's output (javastdout), its error answer (java_stderr)
    and our error message."""
    caller: Caller = request.auth
    record = None
    if 0 < id < 2**63:
        record = HandleRequest.objects.select_related("handle").filter(pk=id).first()
    if record is None:
        raise ApiError(404, "request_not_found", f"There is no request #{id}.")
    if caller.prefix_ids is not None and record.handle.prefix_id not in caller.prefix_ids:
        raise ApiError(403, "prefix_forbidden", "This token is not allowed to see requests of that prefix.")
    return json_response(request_json(record))


@api.get("/resolve/{str:prefix}/{suffix:suffix}", url_name="resolve", operation_id="resolveHandle", tags=[HANDLES],
         summary="Resolve on the Handle server", response={200: s.Resolution, **errors(400, 404, 502, 503)})
def resolve_handle(request: ApiRequest, prefix: s.PrefixInPath, suffix: s.SuffixInPath) -> HttpResponse:
    """Asks the prefix's Handle server now: its URL and values, beside our record and whether the two agree. 503
    when the server does not answer, 502 when it refuses."""
    served = _known_prefix(request.auth, prefix)
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


@api.get("/prefixes/{str:prefix}/remote-handles", url_name="remote_handles", operation_id="listRemoteHandles",
         tags=[HANDLES], summary="The Handle server's listing", response={200: s.RemotePage, **errors(400, 404, 502, 503)})
def remote_handles(request: ApiRequest, prefix: s.PrefixInPath, query: Query[s.RemoteListQuery]) -> HttpResponse:
    """The server's own list of handles under the prefix (upper-cased, the admin handle included), paged as the
    server pages: page numbers from 0. Each page costs the server a walk of the whole prefix."""
    served = _known_prefix(request.auth, prefix)
    page = query.page or 0
    page_size = query.page_size or DEFAULT_PAGE_SIZE
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
def _change_asset(caller: Caller, change: Callable[..., services.AssetChange], payload: s.AssetRefIn,
                  **details: Any) -> JsonResponse:
    """Unpublish, move or delete a known asset with `change` (a service), and answer as every DAMS call does."""
    asset = _asset(payload.source_system, payload.external_id)
    return _asset_answer(change(asset=asset, permitted_prefix_ids=caller.prefix_ids, actor=caller.user,
                                via=caller.via, **details), caller)


def asset_call(path: str, name: str, operation_id: str, summary: str, description: str, *, queues: bool = True,
               known: bool = True) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """A DAMS call: it answers the asset, its handles and the requests it queued. `known`: the asset must exist."""
    return api.post(path, url_name=name, operation_id=operation_id, tags=[ASSETS], **writes(summary),
                    response={(200, 202) if queues else 200: s.AssetChange,
                              **errors(400, 409, 413, 415, *([404] if known else []))},
                    description=f"{description} Answers the asset, all its handles (as this caller may see them) "
                    "and the requests this call queued: 202 when it queued any, 200 when there was nothing to change.")


@asset_call("/assets/publish", "asset_publish", "publishAsset", "Publish an asset", known=False, description=(
    "Records the asset and mints its handle under the prefix (default prefix unless named) if it has none there, "
    "the suffix by the prefix's policy (e.g. the node id). Publishing twice gives one handle; a changed URL makes "
    "the handles that pointed at the old one follow; publishing a deleted asset again restores the handles its "
    "deletion tombstoned."))
def publish_asset(request: ApiRequest, payload: s.PublishIn) -> HttpResponse:
    caller: Caller = request.auth
    change = services.asset_publish(
        source_system=payload.source_system, external_id=payload.external_id, url=payload.url,
        prefix=_prefix_or_default(payload.prefix), title=payload.title, suffix=payload.handle or None,
        permitted_prefix_ids=caller.prefix_ids, actor=caller.user, via=caller.via,
    )
    return _asset_answer(change, caller)


@asset_call("/assets/unpublish", "asset_unpublish", "unpublishAsset", "Unpublish an asset", queues=False,
            description="Marks the asset unpublished. Its handles stay exactly as they are.")
def unpublish_asset(request: ApiRequest, payload: s.AssetRefIn) -> HttpResponse:
    return _change_asset(request.auth, services.asset_unpublish, payload)


@asset_call("/assets/change-url", "asset_change_url", "changeAssetUrl", "Change an asset's URL", description=(
    "Records the new URL; the asset's live handles that pointed at the old URL follow (a handle that points "
    "elsewhere, e.g. another site's, stays)."))
def change_asset_url(request: ApiRequest, payload: s.ChangeUrlIn) -> HttpResponse:
    return _change_asset(request.auth, services.asset_change_url, payload, url=payload.url)


@asset_call("/assets/delete", "asset_delete", "deleteAsset", "Delete an asset", description=(
    "Marks the asset deleted; each handle is tombstoned or deleted on the server as its prefix's 'asset delete "
    "action' says. The records stay. Deleting twice changes nothing more."))
def delete_asset(request: ApiRequest, payload: s.AssetDeleteIn) -> HttpResponse:
    return _change_asset(request.auth, services.asset_delete, payload, reason=payload.reason or "")


# --- ArchivesSpace lookups and IIIF (our database only) -------------------------------------------
@api.get("/lookup/asset", url_name="lookup_asset", operation_id="lookupAsset", tags=[LOOKUPS],
         summary="Handles of an asset", response={200: s.AssetHandles, **errors(400, 404)})
def lookup_asset(request: ApiRequest, query: Query[s.AssetQuery]) -> HttpResponse:
    """By source system and external id; the handle to cite first (primary, then live). Our database only."""
    handles = queries.lookup_of_asset(query.source_system, query.external_id, request.auth.prefix_ids)
    # No query for the asset when it has handles (the lookup joins it); its handles always have it.
    asset = (handles[0].asset if handles else None) or _asset(query.source_system, query.external_id)
    return json_response({"asset": asset_json(asset), "handles": [handle_json(h) for h in handles]})


@api.get("/lookup/handle", url_name="lookup_handle", operation_id="lookupHandle", tags=[LOOKUPS],
         summary="A handle by name", response={200: s.HandleOut, **errors(400, 404)})
def lookup_handle(request: ApiRequest, query: Query[s.HandleQuery]) -> HttpResponse:
    """Case-insensitive; accepts PREFIX/SUFFIX, hdl:PREFIX/SUFFIX and https://hdl.handle.net/PREFIX/SUFFIX. Our
    database only."""
    try:
        prefix, suffix = split_handle(query.handle)
    except ValidationError as exc:
        raise ApiError(400, exc.code or "invalid_handle", " ".join(exc.messages)) from None
    handle = queries.lookup_by_name(prefix, suffix)
    if handle is None:
        raise ApiError(404, "handle_not_found", f"There is no handle {prefix}/{suffix}.")
    request.auth.require_prefix(handle.prefix)
    return json_response(handle_json(handle))


@api.get("/lookup/url", url_name="lookup_url", operation_id="lookupUrl", tags=[LOOKUPS],
         summary="Handles by target URL", response={200: s.UrlHandles, **errors(400)})
def lookup_url(request: ApiRequest, query: Query[s.UrlQuery]) -> HttpResponse:
    """Reverse lookup: the handles whose target is exactly this URL (at most 1000). Our database only."""
    handles = [handle_json(h) for h in queries.lookup_with_url(query.url, request.auth.prefix_ids)]
    return json_response({"url": query.url, "handles": handles})


@api.get("/iiif/metadata", url_name="iiif_metadata", operation_id="iiifMetadata", tags=[IIIF],
         summary="IIIF manifest metadata entries", response={200: s.IiifMetadata, **errors(400, 404)})
def iiif_metadata(request: ApiRequest, query: Query[s.AssetQuery]) -> HttpResponse:
    """The entries a IIIF Presentation 3 manifest's `metadata` should carry for the asset: one per live handle,
    {"label": {"en": ["Handle"]}, "value": {"none": ["<resolver URL>"]}}."""
    handles = queries.lookup_of_asset(query.source_system, query.external_id, request.auth.prefix_ids)
    if not handles:
        _asset(query.source_system, query.external_id)  # 404 for an unknown asset; a known one has no entries
    return json_response({"metadata": [iiif_metadata_entry(h) for h in handles if h.status in queries.LIVE]})
