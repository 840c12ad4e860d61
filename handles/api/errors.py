"""API errors: `{"error": {"code": "...", "message": "..."}}`, plus `fields` for bad input, with a stable machine
code. Nothing a client sends may produce a 500: bad input is a 4xx with a code.

`install` gives the Ninja API our exception handlers: its validation errors (422 by default) become our 400s
with the codes the schemas carry (handles.api.schemas), and every other failure answers in this format too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import NinjaAPI
from ninja.errors import HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.parser import Parser
from pydantic import ValidationError as PydanticValidationError

from handles.exceptions import HandleServiceError

logger = logging.getLogger(__name__)
FieldErrors = dict[str, list[dict[str, str]]]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, *, fields: FieldErrors | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields
        self.headers = headers or {}

    def response(self) -> JsonResponse:
        return error_response(self.status, self.code, self.message, fields=self.fields, headers=self.headers)


def json_response(data: dict[str, Any], *, status: int = 200, headers: dict[str, str] | None = None) -> JsonResponse:
    response = JsonResponse(data, status=status, json_dumps_params={"ensure_ascii": False})
    response["Cache-Control"] = "no-store"  # answers are about one caller's records at one moment
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def error_response(status: int, code: str, message: str, *, fields: FieldErrors | None = None,
                   headers: dict[str, str] | None = None) -> JsonResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if fields:
        error["fields"] = fields
    return json_response({"error": error}, status=status, headers=headers)


# --- JSON bodies ----------------------------------------------------------------------------------
def too_large() -> ApiError:
    return ApiError(413, "body_too_large", f"The body is larger than {settings.HANDLES_API_MAX_BODY_BYTES} bytes.")


class JsonObjectParser(Parser):
    """Ninja's body parser, with our refusals: a body too large, not sent as JSON, not JSON, or not an object.

    Ninja wraps what a parser raises in its own 400 (`HttpError ... from` ours); `install` answers ours."""

    def parse_body(self, request: HttpRequest) -> dict[str, Any]:
        raw = request.body  # Ninja calls this only for a non-empty body
        if len(raw) > settings.HANDLES_API_MAX_BODY_BYTES:
            raise too_large()
        if not raw.strip():
            raise ApiError(400, "missing_body", "Send a JSON object as the body (Content-Type: application/json).")
        content_type = request.content_type or ""
        if content_type != "application/json" and not content_type.endswith("+json"):
            raise ApiError(415, "unsupported_media_type", "Send the body as JSON with 'Content-Type: "
                           f"application/json' (got {content_type or 'none'!r}).")
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ApiError(400, "malformed_json", f"The body is not valid JSON: {str(exc)[:200]}") from None
        if not isinstance(data, dict):
            raise ApiError(400, "invalid_body", "The body must be a JSON object, such as {\"url\": \"https://...\"}.")
        return data


# --- Validation errors ----------------------------------------------------------------------------
# Problems are reported in the order the old views met them: the URL path, then the query or body, then headers.
_ORDER = {"path": 0, "query": 1, "body": 1, "header": 2}
_PYDANTIC_CODES = {"missing": ("required", "This field is required."),
                   "extra_forbidden": ("unknown_field", "Unknown field."),
                   "string_type": ("invalid_type", "Must be a JSON string.")}


def _problems_of(error: dict[str, Any]) -> list[tuple[str, str]]:
    ctx = error.get("ctx") or {}
    if "problems" in ctx:  # ours: every refusal of the field, first one first (handles.api.schemas.refuse)
        return [tuple(problem) for problem in ctx["problems"]]
    return [_PYDANTIC_CODES.get(error["type"], ("invalid", error["msg"]))]


def validation_failed(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    """Ninja's 422 as our 400: the first problem's code, a summary, and every problem by field."""
    errors = sorted(exc.errors, key=lambda error: _ORDER.get(error["loc"][0], 1))
    where, *loc = errors[0]["loc"]
    if where == "body" and len(loc) <= 1:  # the body as a whole (Ninja's one body parameter)
        if errors[0]["type"] == "missing":
            return error_response(400, "missing_body", "Send a JSON object as the body "
                                  "(Content-Type: application/json).")
        return error_response(400, "invalid_body", "The body must be a JSON object, such as {\"url\": \"https://...\"}.")
    if where in ("path", "header"):  # one value with no form around it: its code and words alone
        code, message = _problems_of(errors[0])[0]
        return error_response(400, code, message)
    fields: FieldErrors = {}
    for error in errors:
        if error["loc"][0] in ("query", "body"):
            fields.setdefault(_field_of(error["loc"]), []).extend(
                {"code": code, "message": message} for code, message in _problems_of(error))
    return invalid_input(fields).response()


def invalid_input(fields: FieldErrors) -> ApiError:
    """Bad input, every problem by field (unknown fields first): the first problem's code, and a summary
    naming each field."""
    fields = dict(sorted(fields.items(), key=lambda item: item[1][0]["code"] != "unknown_field"))
    first = next(iter(fields.values()))[0]
    summary = "; ".join(f"{name}: {problems[0]['message']}" for name, problems in fields.items())
    return ApiError(400, first["code"], summary, fields=fields)


def fields_of(exc: PydanticValidationError) -> FieldErrors:
    """A pydantic model's refusal of a flat mapping (a query string), by field."""
    fields: FieldErrors = {}
    for error in exc.errors():
        fields.setdefault(str(error["loc"][0]), []).extend(
            {"code": code, "message": message} for code, message in _problems_of(dict(error)))
    return fields


_QUERY_PARAMETERS = {"filters", "query"}  # the views' names of their query schemas: an error on one is cross-field


def _field_of(loc: tuple[Any, ...]) -> str:
    """The field a problem is about: ("body", <the body parameter>, field) or ("query", field); a check
    across fields names the schema itself, and is reported as "_body", as the first version did."""
    where, *rest = loc
    if where == "body":
        rest = rest[1:]
    elif rest and rest[-1] in _QUERY_PARAMETERS:
        rest = []
    return str(rest[-1]) if rest else "_body"


# --- Installing -----------------------------------------------------------------------------------
def install(api: NinjaAPI) -> None:
    _on(api, ApiError, lambda request, exc: exc.response())
    _on(api, HandleServiceError, lambda request, exc: error_response(exc.http_status, exc.code, exc.message))
    _on(api, NinjaValidationError, validation_failed)
    _on(api, HttpError, _http_error)
    _on(api, RequestDataTooBig, lambda request, exc: too_large().response())
    _on(api, Exception, _bug)


E = TypeVar("E", bound=Exception)


def _on(api: NinjaAPI, kind: type[E], answer: Callable[[HttpRequest, E], HttpResponse]) -> None:
    """Ninja's type of a handler also admits the exception's class, which it never passes: registered as is."""
    api.add_exception_handler(kind, cast(Any, answer))


def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    if isinstance(exc.__cause__, ApiError):  # our parser's refusal, wrapped by Ninja
        return exc.__cause__.response()
    return error_response(exc.status_code, "invalid", str(exc))


def _bug(request: HttpRequest, exc: Exception) -> HttpResponse:
    """A bug: log it, and still answer in the API's own format, not with Django's HTML page."""
    logger.error("API error on %s %s", request.method, request.path, exc_info=exc)
    return error_response(500, "internal_error", "Something went wrong on our side; it has been logged.")
