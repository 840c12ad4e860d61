"""The API's OpenAPI 3 document (served at /api/v1/openapi.json) and the context of its docs page.

Written by hand next to the views it describes; tests check every answer against it (schemathesis), so
a change to a view that breaks the document fails the suite. Each operation carries `x-curl`, the example
the docs page and README show.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from handles.api.forms import MAX_PAGE_SIZE
from handles.models import Handle, HandleRequest
from handles.validators import PREFIX_RE

VERSION = "1.0.0"
JSON = "application/json"
TOKEN = "hdl_xxxxxxxxxx_yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
BASE = "https://handles.example.edu/api/v1"
AUTH = f'-H "Authorization: Bearer {TOKEN}"'

# --- Schemas --------------------------------------------------------------------------------------
STR = {"type": "string"}
DATETIME = {"type": "string", "format": "date-time"}
NULLABLE_DATETIME = {"type": "string", "format": "date-time", "nullable": True}
URL = {"type": "string", "minLength": 1, "maxLength": settings.HANDLES_MAX_URL_LENGTH, "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://",
       "description": "An absolute http(s) URL, no spaces, no user:password@."}
PREFIX = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": PREFIX_RE.pattern,
          "example": "20.500.12345"}
SUFFIX = {"type": "string", "minLength": 1, "maxLength": 255, "example": "x7kq2m",
          "description": "Any printable text without leading/trailing spaces, control characters, '//' or "
                         "'.'/'..' segments; at most 255 bytes of UTF-8. Case-insensitive (ASCII)."}
SOURCE_SYSTEM = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[a-z0-9][a-z0-9_.-]*$",
                 "example": "dams"}
EXTERNAL_ID = {"type": "string", "minLength": 1, "maxLength": 255, "example": "node-4711"}


def _object(properties: dict[str, Any], *, required: list[str] | None = None, nullable: bool = False,
            description: str = "") -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False,
                              "required": list(properties) if required is None else required}
    if nullable:
        schema["nullable"] = True
    if description:
        schema["description"] = description
    return schema


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


ASSET_REF = _object({"source_system": STR, "external_id": STR})
HANDLE = _object({
    "handle": {**STR, "description": "PREFIX/SUFFIX"},
    "prefix": STR,
    "suffix": STR,
    "url": {**STR, "description": "The target URL we intend (a tombstoned handle resolves to its tombstone page)."},
    "resolver_url": {**STR, "description": "HANDLES_RESOLVER_BASE_URL + '/' + the handle, its suffix "
                                 "percent-encoded as a URL path: the URL to cite."},
    "file_uri": {**STR, "nullable": True, "description": "resolver_url when it fits ArchivesSpace's 255-character "
                 "file_versions.file_uri, else null."},
    "status": {"type": "string", "enum": list(Handle.Status.values)},
    "in_sync": {"type": "boolean", "description": "The Handle server holds our latest version."},
    "is_primary": {"type": "boolean"},
    "asset": {**copy.deepcopy(ASSET_REF), "nullable": True},
    "created_at": DATETIME,
    "updated_at": DATETIME,
})
REQUEST = _object({
    "id": {"type": "integer", "description": "Use it to check the request's status."},
    "op": {"type": "string", "enum": list(HandleRequest.Op.values)},
    "full_handle": STR,
    "url": {**STR, "description": "The URL this request puts on the server (empty for a delete)."},
    "attempts": {"type": "integer", "minimum": 0},
    "status": {"type": "string", "enum": list(HandleRequest.Status.values)},
    "javastdout": {**STR, "description": "What the Handle server answered, call by call."},
    "java_stderr": {**STR, "description": "The server's error answer, if any."},
    "error": {**STR, "description": "Why the request failed, if it did."},
    "action": {"type": "string", "enum": list(HandleRequest.Action.values)},
    "created_at": DATETIME,
    "finished_at": NULLABLE_DATETIME,
    "status_url": STR,
})
ASSET = _object({"source_system": STR, "external_id": STR, "title": STR, "url": STR,
                 "state": {"type": "string", "enum": ["published", "unpublished", "deleted"]},
                 "created_at": DATETIME, "updated_at": DATETIME})
FIELD_ERRORS = {"type": "object", "additionalProperties": {"type": "array", "items": _object({"code": STR,
                                                                                              "message": STR})}}
ERROR = _object({"error": _object({"code": STR, "message": STR, "fields": FIELD_ERRORS},
                                  required=["code", "message"])})

SCHEMAS: dict[str, Any] = {
    "Error": ERROR,
    "Handle": HANDLE,
    "Request": REQUEST,
    "Asset": ASSET,
    "HandlePage": _object({"results": {"type": "array", "items": _ref("Handle")},
                           "next_cursor": {**STR, "nullable": True}, "next": {**STR, "nullable": True}}),
    "Resolution": _object({
        "handle": STR,
        "server": _object({"found": {"type": "boolean"}, "url": {**STR, "nullable": True},
                           "values": {"type": "array", "items": {"type": "object"}}}),
        "local": {**copy.deepcopy(HANDLE), "nullable": True},
        "agrees": {"type": "boolean", "nullable": True,
                   "description": "The server holds what our record intends (null: no record here)."},
    }),
    "RemotePage": _object({"prefix": STR, "page": {"type": "integer"}, "page_size": {"type": "integer"},
                           "total": {"type": "integer"}, "handles": {"type": "array", "items": STR},
                           "next_page": {"type": "integer", "nullable": True}}),
    "AssetChange": _object({"asset": _ref("Asset"), "handles": {"type": "array", "items": _ref("Handle")},
                            "requests": {"type": "array", "items": _ref("Request")}}),
    "AssetHandles": _object({"asset": _ref("Asset"), "handles": {"type": "array", "items": _ref("Handle")}}),
    "UrlHandles": _object({"url": STR, "handles": {"type": "array", "items": _ref("Handle")}}),
    "IiifMetadata": _object({"metadata": {"type": "array", "items": _object({
        "label": _object({"en": {"type": "array", "items": STR}}),
        "value": _object({"none": {"type": "array", "items": STR}}),
    })}}),
    "CreateHandle": _object({"handle": {**SUFFIX, "nullable": True, "description": "The suffix. Optional where "
                                        "the prefix mints (random or asset-id policy)."},
                             "url": URL, "prefix": {**PREFIX, "nullable": True,
                                                    "description": "Optional: the default prefix."}},
                            required=["url"]),
    "UpdateHandle": _object({"url": URL}),
    "AssetRef": _object({"source_system": SOURCE_SYSTEM, "external_id": EXTERNAL_ID}),
    "Publish": _object({"source_system": SOURCE_SYSTEM, "external_id": EXTERNAL_ID, "url": URL,
                        "title": {"type": "string", "maxLength": 1000, "nullable": True},
                        "prefix": {**PREFIX, "nullable": True, "description": "Optional: the default prefix."},
                        "handle": {**SUFFIX, "nullable": True, "description": "Suffix for a new handle, only where "
                                   "the prefix's policy is 'given'."}},
                       required=["source_system", "external_id", "url"]),
    "ChangeUrl": _object({"source_system": SOURCE_SYSTEM, "external_id": EXTERNAL_ID, "url": URL}),
    "AssetDelete": _object({"source_system": SOURCE_SYSTEM, "external_id": EXTERNAL_ID,
                            "reason": {"type": "string", "maxLength": 2000, "nullable": True,
                                       "description": "Shown on tombstone pages; a default names the source."}},
                           required=["source_system", "external_id"]),
}

# --- Responses and parameters ---------------------------------------------------------------------
ERROR_TEXT = {
    400: "Bad input: malformed JSON, wrong types, invalid URL or handle syntax, unknown prefix, unknown fields ...",
    401: "No credentials, or an invalid or revoked token (codes authentication_required, invalid_token, "
         "token_revoked).",
    403: "Not allowed: a read token writing (insufficient_scope), another prefix (prefix_forbidden), a staff "
         "account without permission (permission_denied), a session write without CSRF token (csrf_failed).",
    404: "Not found (handle_not_found, request_not_found, asset_not_found, unknown_prefix, not_found).",
    409: "The change does not fit the record: the handle exists or existed (handle_exists), or its status "
         "forbids it (invalid_state, no_change).",
    413: "The body is larger than HANDLES_API_MAX_BODY_BYTES (body_too_large).",
    415: "The body is not sent as application/json (unsupported_media_type).",
    422: "The Idempotency-Key was already used for a different call (idempotency_key_reused).",
    429: "Too many calls (throttled); see the Retry-After header.",
    502: "The Handle server refused or answered nonsense (handle_server_error).",
    503: "The Handle server did not answer (handle_server_unavailable); see Retry-After.",
}
ERROR_RESPONSE_HEADERS = {
    401: {"WWW-Authenticate": {"schema": STR}},
    429: {"Retry-After": {"schema": STR}},
}


def _errors(*codes: int) -> dict[str, Any]:
    out = {}
    for code in sorted({401, 403, 429, *codes}):
        out[str(code)] = {"description": ERROR_TEXT[code], "content": {JSON: {"schema": _ref("Error")}}}
        if code in ERROR_RESPONSE_HEADERS:
            out[str(code)]["headers"] = ERROR_RESPONSE_HEADERS[code]
    return out


def _ok(status: int, schema: str, description: str, *, accepted_header: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {JSON: {"schema": _ref(schema)}}}
    if accepted_header:
        response["headers"] = {"Location": {"description": "The request's status URL.", "schema": STR,
                                            "required": True}}
    return {str(status): response}


def _path(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


def _query(name: str, schema: dict[str, Any], description: str, *, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def _body(schema: str, example: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {JSON: {"schema": _ref(schema), "example": example}}}


PREFIX_PATH = _path("prefix", PREFIX, "The prefix, such as 20.500.12345.")
SUFFIX_PATH = _path("suffix", SUFFIX, "The suffix; percent-encode '/' inside it as %2F (or send it raw).")
IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False,
               "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,100}$"},
               "description": "Any unique string (a UUID): a retried call with the same key returns the first "
                              "call's request record instead of acting twice."}
ASSET_QUERY = [_query("source_system", SOURCE_SYSTEM, "The asset's source system.", required=True),
               _query("external_id", EXTERNAL_ID, "The asset's id there (e.g. the DAMS node id).", required=True)]
ASSET_SUMMARY = ("Answers the asset, all its handles (as this caller may see them) and the requests this call "
                 "queued: 202 when it queued any, 200 when there was nothing to change.")


def _operation(operation_id: str, tag: str, summary: str, description: str, responses: dict[str, Any], curl: str,
               *, parameters: list[dict[str, Any]] | None = None, body: dict[str, Any] | None = None,
               scope: str = "read") -> dict[str, Any]:
    operation = {"operationId": operation_id, "tags": [tag], "summary": summary, "description": description,
                 "parameters": parameters or [], "responses": responses, "x-scope": scope, "x-curl": curl}
    if body is not None:
        operation["requestBody"] = body
    return operation


H = "20.500.12345/x7kq2m"
PATHS: dict[str, Any] = {
    "/handles": {
        "get": _operation(
            "listHandles", "Handles", "List our handles",
            "Our own records, in a stable order (by id; by change time and id when changed_since is given), "
            "paged with an opaque cursor: pass `next_cursor` back as `cursor`, or follow `next`. Fast at any depth.",
            {**_ok(200, "HandlePage", "A page of handles."), **_errors(400)},
            f'curl {AUTH} "{BASE}/handles?prefix=20.500.12345&status=active&changed_since=2026-01-01T00:00:00Z"',
            parameters=[
                _query("prefix", PREFIX, "Only this prefix."),
                _query("status", {"type": "string", "enum": list(Handle.Status.values)}, "Only this status."),
                _query("source_system", SOURCE_SYSTEM, "Only handles of assets from this source system."),
                _query("external_id", EXTERNAL_ID, "Only handles of this asset (with source_system)."),
                _query("changed_since", DATETIME, "Only handles changed at or after this time (ISO 8601)."),
                _query("cursor", {"type": "string", "maxLength": 200}, "From the previous page's next_cursor."),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
                       "Page size (default 100)."),
            ],
        ),
        "post": _operation(
            "createHandle", "Handles", "Create a handle",
            "Records the handle (status pending) and queues its creation on the Handle server; answers the "
            "request record (202). Fails with 409 if the handle exists, or existed and was deleted: a handle is "
            "never reused. Without `handle`, the prefix's suffix policy chooses the suffix.",
            {**_ok(202, "Request", "Queued.", accepted_header=True), **_errors(400, 409, 413, 415, 422)},
            f'curl {AUTH} -H "Content-Type: application/json" -H "Idempotency-Key: $(uuidgen)" '
            f'-d \'{{"handle": "x7kq2m", "url": "https://collections.example.edu/node/4711"}}\' {BASE}/handles',
            parameters=[IDEMPOTENCY],
            body=_body("CreateHandle", {"handle": "x7kq2m", "url": "https://collections.example.edu/node/4711",
                                        "prefix": "20.500.12345"}),
            scope="write",
        ),
    },
    "/handles/{prefix}/{suffix}": {
        "get": _operation(
            "getHandle", "Handles", "Our record of a handle",
            "Our database's record (case-insensitive name). For what the Handle server holds, use resolve.",
            {**_ok(200, "Handle", "The handle."), **_errors(400, 404)},
            f"curl {AUTH} {BASE}/handles/{H}",
            parameters=[PREFIX_PATH, SUFFIX_PATH],
        ),
        "post": _operation(
            "updateHandle", "Handles", "Update a handle's URL",
            "Queues the new URL for the Handle server. Fails if the handle is missing (404) or deleted, "
            "tombstoned or already at that URL (409).",
            {**_ok(202, "Request", "Queued.", accepted_header=True), **_errors(400, 404, 409, 413, 415, 422)},
            f'curl {AUTH} -H "Content-Type: application/json" '
            f'-d \'{{"url": "https://collections.example.edu/node/4711/v2"}}\' {BASE}/handles/{H}',
            parameters=[PREFIX_PATH, SUFFIX_PATH, IDEMPOTENCY],
            body=_body("UpdateHandle", {"url": "https://collections.example.edu/node/4711/v2"}),
            scope="write",
        ),
        "patch": _operation(
            "patchHandle", "Handles", "Update a handle's URL (PATCH)",
            "The same as POST to this URL, for clients that prefer PATCH.",
            {**_ok(202, "Request", "Queued.", accepted_header=True), **_errors(400, 404, 409, 413, 415, 422)},
            f'curl {AUTH} -X PATCH -H "Content-Type: application/json" '
            f'-d \'{{"url": "https://collections.example.edu/node/4711/v2"}}\' {BASE}/handles/{H}',
            parameters=[PREFIX_PATH, SUFFIX_PATH, IDEMPOTENCY],
            body=_body("UpdateHandle", {"url": "https://collections.example.edu/node/4711/v2"}),
            scope="write",
        ),
        "delete": _operation(
            "deleteHandle", "Handles", "Delete a handle",
            "Queues the handle's removal from the Handle server. Our record stays (status deleted), so the "
            "suffix is never minted again. Fails if the handle is missing (404) or already deleted (409).",
            {**_ok(202, "Request", "Queued.", accepted_header=True), **_errors(400, 404, 409, 422)},
            f"curl {AUTH} -X DELETE {BASE}/handles/{H}",
            parameters=[PREFIX_PATH, SUFFIX_PATH, IDEMPOTENCY],
            scope="write",
        ),
    },
    "/requests/{id}": {
        "get": _operation(
            "getRequest", "Handles", "A request's status",
            "queued, running, success or error, with the server's output (javastdout), its error answer "
            "(java_stderr) and our error message.",
            {**_ok(200, "Request", "The request."), **_errors(404)},
            f"curl {AUTH} {BASE}/requests/42",
            parameters=[_path("id", {"type": "integer", "minimum": 1}, "The request's id.")],
        ),
    },
    "/resolve/{prefix}/{suffix}": {
        "get": _operation(
            "resolveHandle", "Handles", "Resolve on the Handle server",
            "Asks the prefix's Handle server now: its URL and values, beside our record and whether the two "
            "agree. 503 when the server does not answer, 502 when it refuses.",
            {**_ok(200, "Resolution", "What the server holds."), **_errors(400, 404, 502, 503)},
            f"curl {AUTH} {BASE}/resolve/{H}",
            parameters=[PREFIX_PATH, SUFFIX_PATH],
        ),
    },
    "/prefixes/{prefix}/remote-handles": {
        "get": _operation(
            "listRemoteHandles", "Handles", "The Handle server's listing",
            "The server's own list of handles under the prefix (upper-cased, the admin handle included), paged "
            "as the server pages: page numbers from 0. Each page costs the server a walk of the whole prefix.",
            {**_ok(200, "RemotePage", "A page of the server's listing."), **_errors(400, 404, 502, 503)},
            f'curl {AUTH} "{BASE}/prefixes/20.500.12345/remote-handles?page=0&page_size=1000"',
            parameters=[PREFIX_PATH,
                        _query("page", {"type": "integer", "minimum": 0, "maximum": 10_000_000}, "From 0."),
                        _query("page_size", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
                               "Default 100.")],
        ),
    },
    "/assets/publish": {
        "post": _operation(
            "publishAsset", "Assets (DAMS)", "Publish an asset",
            "Records the asset and mints its handle under the prefix (default prefix unless named) if it has "
            "none there, the suffix by the prefix's policy (e.g. the node id). Publishing twice gives one handle; "
            "a changed URL makes the handles that pointed at the old one follow; publishing a deleted asset "
            "again restores the handles its deletion tombstoned. " + ASSET_SUMMARY,
            {**_ok(200, "AssetChange", "Nothing to change."), **_ok(202, "AssetChange", "Requests queued."),
             **_errors(400, 409, 413, 415)},
            f'curl {AUTH} -H "Content-Type: application/json" -d \'{{"source_system": "dams", '
            f'"external_id": "4711", "url": "https://collections.example.edu/node/4711", "title": "Letter"}}\' '
            f"{BASE}/assets/publish",
            body=_body("Publish", {"source_system": "dams", "external_id": "4711",
                                   "url": "https://collections.example.edu/node/4711", "title": "Letter"}),
            scope="write",
        ),
    },
    "/assets/unpublish": {
        "post": _operation(
            "unpublishAsset", "Assets (DAMS)", "Unpublish an asset",
            "Marks the asset unpublished. Its handles stay exactly as they are. " + ASSET_SUMMARY,
            {**_ok(200, "AssetChange", "Done."), **_errors(400, 404, 409, 413, 415)},
            f'curl {AUTH} -H "Content-Type: application/json" '
            f'-d \'{{"source_system": "dams", "external_id": "4711"}}\' {BASE}/assets/unpublish',
            body=_body("AssetRef", {"source_system": "dams", "external_id": "4711"}),
            scope="write",
        ),
    },
    "/assets/change-url": {
        "post": _operation(
            "changeAssetUrl", "Assets (DAMS)", "Change an asset's URL",
            "Records the new URL; the asset's live handles that pointed at the old URL follow (a handle that "
            "points elsewhere, e.g. another site's, stays). " + ASSET_SUMMARY,
            {**_ok(200, "AssetChange", "Nothing to change."), **_ok(202, "AssetChange", "Requests queued."),
             **_errors(400, 404, 409, 413, 415)},
            f'curl {AUTH} -H "Content-Type: application/json" -d \'{{"source_system": "dams", '
            f'"external_id": "4711", "url": "https://collections.example.edu/items/4711"}}\' {BASE}/assets/change-url',
            body=_body("ChangeUrl", {"source_system": "dams", "external_id": "4711",
                                     "url": "https://collections.example.edu/items/4711"}),
            scope="write",
        ),
    },
    "/assets/delete": {
        "post": _operation(
            "deleteAsset", "Assets (DAMS)", "Delete an asset",
            "Marks the asset deleted; each handle is tombstoned or deleted on the server as its prefix's "
            "'asset delete action' says. The records stay. Deleting twice changes nothing more. " + ASSET_SUMMARY,
            {**_ok(200, "AssetChange", "Nothing to change."), **_ok(202, "AssetChange", "Requests queued."),
             **_errors(400, 404, 409, 413, 415)},
            f'curl {AUTH} -H "Content-Type: application/json" -d \'{{"source_system": "dams", '
            f'"external_id": "4711", "reason": "Withdrawn at the donor\'\\\'\'s request"}}\' {BASE}/assets/delete',
            body=_body("AssetDelete", {"source_system": "dams", "external_id": "4711",
                                       "reason": "Withdrawn at the donor's request"}),
            scope="write",
        ),
    },
    "/lookup/asset": {
        "get": _operation(
            "lookupAsset", "ArchivesSpace lookups", "Handles of an asset",
            "By source system and external id; the handle to cite first (primary, then live). Our database only.",
            {**_ok(200, "AssetHandles", "The asset and its handles."), **_errors(400, 404)},
            f'curl {AUTH} "{BASE}/lookup/asset?source_system=dams&external_id=4711"',
            parameters=ASSET_QUERY,
        ),
    },
    "/lookup/handle": {
        "get": _operation(
            "lookupHandle", "ArchivesSpace lookups", "A handle by name",
            "Case-insensitive; accepts PREFIX/SUFFIX, hdl:PREFIX/SUFFIX and https://hdl.handle.net/PREFIX/SUFFIX. "
            "Our database only.",
            {**_ok(200, "Handle", "The handle."), **_errors(400, 404)},
            f'curl {AUTH} "{BASE}/lookup/handle?handle=hdl:20.500.12345/X7KQ2M"',
            parameters=[_query("handle", {"type": "string", "minLength": 1, "maxLength": 400,
                                          "example": "hdl:20.500.12345/X7KQ2M"},
                               "The handle in any cited form.", required=True)],
        ),
    },
    "/lookup/url": {
        "get": _operation(
            "lookupUrl", "ArchivesSpace lookups", "Handles by target URL",
            "Reverse lookup: the handles whose target is exactly this URL (at most 1000). Our database only.",
            {**_ok(200, "UrlHandles", "Matching handles (maybe none)."), **_errors(400)},
            f'curl {AUTH} "{BASE}/lookup/url?url=https%3A%2F%2Fcollections.example.edu%2Fnode%2F4711"',
            parameters=[_query("url", URL, "The exact target URL.", required=True)],
        ),
    },
    "/iiif/metadata": {
        "get": _operation(
            "iiifMetadata", "IIIF", "IIIF manifest metadata entries",
            "The entries a IIIF Presentation 3 manifest's `metadata` should carry for the asset: one per live "
            "handle, {\"label\": {\"en\": [\"Handle\"]}, \"value\": {\"none\": [\"<resolver URL>\"]}}.",
            {**_ok(200, "IiifMetadata", "The entries."), **_errors(400, 404)},
            f'curl {AUTH} "{BASE}/iiif/metadata?source_system=dams&external_id=4711"',
            parameters=ASSET_QUERY,
        ),
    },
}

DESCRIPTION = """The JSON API of the library's handle service, for the DAMS, ArchivesSpace and staff scripts.

**Authentication.** Send `Authorization: Bearer <token>`. Tokens are created by an administrator in the admin
(API tokens), shown once, and carry a scope: *read* (lookups, lists, request status, resolve) or *write*
(also create, update, delete and the asset lifecycle), and optionally a restriction to some prefixes. A
logged-in staff session works too (writes need handles.change_handle and the CSRF header).

**Writes are queued.** Create, update and delete record the change and answer at once (202) with a request
record; a background worker pushes it to the Handle server and reads it back. Poll `/requests/{id}`.

**Errors** are `{"error": {"code": "...", "message": "..."}}` with a stable code (plus `fields` for bad
input). **Throttling** answers 429 with Retry-After."""


def document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "Handles API", "version": VERSION, "description": DESCRIPTION},
        "servers": [{"url": reverse("handles_api:root").rstrip("/")}],
        "security": [{"bearerAuth": []}, {"staffSession": []}],
        "tags": [{"name": name} for name in ("Handles", "Assets (DAMS)", "ArchivesSpace lookups", "IIIF")],
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "hdl_<lookup>_<secret>"},
                "staffSession": {"type": "apiKey", "in": "cookie", "name": settings.SESSION_COOKIE_NAME},
            },
        },
    }


# --- Docs page ------------------------------------------------------------------------------------
def _resolve_ref(node: Any) -> Any:
    if isinstance(node, dict) and "$ref" in node:
        return SCHEMAS[node["$ref"].rsplit("/", 1)[1]]
    return node


def docs_context(request: HttpRequest) -> dict[str, Any]:
    """The document, arranged for the template: tags, then operations with their parameters, body and
    responses."""
    root = reverse("handles_api:root").rstrip("/")
    here = request.build_absolute_uri(root)  # the examples name this server
    sections: dict[str, list[dict[str, Any]]] = {}
    for path, methods in PATHS.items():
        for method, operation in methods.items():
            body = None
            if "requestBody" in operation:
                media = operation["requestBody"]["content"][JSON]
                schema = _resolve_ref(media["schema"])
                body = {"fields": [{"name": name, "required": name in schema["required"], **_describe(prop)}
                                   for name, prop in schema["properties"].items()],
                        "example": json.dumps(media["example"], indent=2, ensure_ascii=False)}
            responses = []
            for status, response in operation["responses"].items():
                schema_ref = response["content"][JSON]["schema"]["$ref"].rsplit("/", 1)[1]
                responses.append({"status": status, "description": response["description"], "schema": schema_ref})
            sections.setdefault(operation["tags"][0], []).append({
                "id": operation["operationId"], "method": method.upper(), "path": root + path,
                "summary": operation["summary"], "description": _html(operation["description"]),
                "scope": operation["x-scope"], "curl": operation["x-curl"].replace(BASE, here),
                "parameters": [{"name": p["name"], "in": p["in"], "required": p["required"],
                                "description": p.get("description", ""), **_describe(p["schema"])}
                               for p in operation["parameters"]],
                "body": body, "responses": responses,
            })
    schemas = [{"name": name, "fields": [{"name": field, **_describe(prop)}
                                          for field, prop in schema["properties"].items()]}
               for name, schema in SCHEMAS.items() if name not in ("CreateHandle", "UpdateHandle", "AssetRef",
                                                                   "Publish", "ChangeUrl", "AssetDelete")]
    return {"title": "Handles API", "description": _html(DESCRIPTION), "sections": sections, "schemas": schemas,
            "openapi_url": reverse("handles_api:openapi"), "version": VERSION}


def _describe(schema: dict[str, Any]) -> dict[str, str]:
    schema = _resolve_ref(schema)
    kind = schema.get("type", "object")
    if kind == "array":
        kind = f"array of {_resolve_ref(schema['items']).get('type', 'object')}"
        if "$ref" in schema["items"]:
            kind = f"array of {schema['items']['$ref'].rsplit('/', 1)[1]}"
    if "enum" in schema:
        kind += " (" + " | ".join(schema["enum"]) + ")"
    if schema.get("nullable"):
        kind += " or null"
    return {"type": kind, "about": schema.get("description", "")}


def _html(text: str) -> SafeString:
    """The little Markdown the descriptions use (paragraphs, **bold**, *italics*, `code`), escaped first."""
    paragraphs = []
    for paragraph in escape(text).split("\n\n"):
        paragraph = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", paragraph)
        paragraph = re.sub(r"\*(\w[^*]*?)\*", r"<em>\1</em>", paragraph)
        paragraph = re.sub(r"`(.+?)`", r"<code>\1</code>", paragraph)
        paragraphs.append(f"<p>{paragraph}</p>")
    return mark_safe("\n".join(paragraphs))  # safe: built from escaped text
