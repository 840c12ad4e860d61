"""The API's HTTP edge: JSON bodies in; JSON answers and errors out.

Every error is `{"error": {"code": "...", "message": "..."}}` (plus `fields` for form errors) with a
stable machine code. Nothing a client sends may produce a 500: bad input is a 4xx with a code.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import lru_cache, wraps
from typing import Any
from urllib.parse import parse_qsl

from django import forms
from django.conf import settings
from django.core.exceptions import RequestDataTooBig, ValidationError
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from handles.api.auth import authenticate, require_write
from handles.api.errors import ApiError, error_response
from handles.exceptions import HandleServiceError

logger = logging.getLogger(__name__)

READ = "read"
WRITE = "write"
PUBLIC = "public"


# --- Input ----------------------------------------------------------------------------------------
def json_body(request: HttpRequest) -> dict[str, Any]:
    """The request's JSON object, or an ApiError that says what is wrong with it."""
    limit = settings.HANDLES_API_MAX_BODY_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise ApiError(400, "invalid_body", "The Content-Length header is not a number.") from None
    if declared > limit:
        raise ApiError(413, "body_too_large", f"The body is larger than {limit} bytes.")
    try:
        raw = request.body
    except RequestDataTooBig:
        raise ApiError(413, "body_too_large", f"The body is larger than {limit} bytes.") from None
    if len(raw) > limit:
        raise ApiError(413, "body_too_large", f"The body is larger than {limit} bytes.")
    if not raw.strip():
        raise ApiError(400, "missing_body", "Send a JSON object as the body (Content-Type: application/json).")
    content_type = request.content_type or ""
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise ApiError(415, "unsupported_media_type",
                       f"Send the body as JSON with 'Content-Type: application/json' (got {content_type or 'none'!r}).")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ApiError(400, "malformed_json", f"The body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_body", "The body must be a JSON object, such as {\"url\": \"https://...\"}.")
    return data


def query_params(request: HttpRequest) -> dict[str, str]:
    """The query string as {name: last value}: what `request.GET.get()` gives, decoded as Django decodes
    it, without building a QueryDict (a tenth of a lookup's CPU, for lists of values the API never takes)."""
    raw = request.META.get("QUERY_STRING", "").encode("iso-8859-1")  # WSGI hands over bytes as latin-1 text
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("iso-8859-1")  # as QueryDict falls back
    try:
        return dict(parse_qsl(text, keep_blank_values=True, encoding="utf-8",
                              max_num_fields=settings.DATA_UPLOAD_MAX_NUMBER_FIELDS))
    except ValueError:
        raise ApiError(400, "too_many_fields", "The query string has too many parameters.") from None


def validated(form_class: type[forms.Form], data: Any, *, strict: bool = True) -> dict[str, Any]:
    """Clean `data` with a form. `strict` refuses keys the form does not know (typos such as "URL")."""
    fields = _plain_fields(form_class)
    problems: dict[str, list[dict[str, str]]] = {}
    for key in data:
        field = form_class.base_fields.get(key)
        if field is None:
            if strict:
                expected = ", ".join(form_class.base_fields)
                problems[key] = [{"code": "unknown_field", "message": f"Unknown field; expected: {expected}."}]
        elif data.get(key) == "" and not field.required and not getattr(field, "allow_blank", False):
            # An empty value is not "no value": say so rather than guess (e.g. `?prefix=` is not all prefixes).
            problems[key] = [{"code": "blank", "message": "Empty; leave the field out instead."}]
    if fields is None:
        form = form_class(data)
        cleaned = form.cleaned_data if form.is_valid() else {}
        errors = form.errors.as_data().items()
    else:
        cleaned, errors = _clean_fields(fields, data)
    for name, field_errors in errors:
        problems.setdefault("_body" if name == "__all__" else name, []).extend(
            {"code": error.code or "invalid", "message": " ".join(error.messages)} for error in field_errors
        )
    if problems:
        first = next(iter(problems.values()))[0]
        summary = "; ".join(f"{name}: {errors[0]['message']}" for name, errors in problems.items())
        raise ApiError(400, first["code"], summary, fields=problems)
    return cleaned


@lru_cache
def _plain_fields(form_class: type[forms.Form]) -> tuple[tuple[str, forms.Field], ...] | None:
    """A form's fields when cleaning them one by one is all its validation does (no clean hooks, no
    disabled or file fields); None when the full Form must run. The plain way gives the same values and
    errors at a fifth of the cost, which matters on the ArchivesSpace lookups."""
    fields = tuple(form_class.base_fields.items())
    hooks = any(hasattr(form_class, f"clean_{name}") for name, _ in fields)
    plain = all(not field.disabled and not isinstance(field, forms.FileField) for _, field in fields)
    overridden = form_class.clean is not forms.Form.clean or form_class._post_clean is not forms.Form._post_clean
    return fields if plain and not hooks and not overridden else None


def _clean_fields(fields: tuple[tuple[str, forms.Field], ...],
                  data: Any) -> tuple[dict[str, Any], list[tuple[str, list[ValidationError]]]]:
    """Form._clean_fields for plain fields: each widget reads its value, each field cleans it."""
    cleaned: dict[str, Any] = {}
    errors: list[tuple[str, list[ValidationError]]] = []
    for name, field in fields:
        try:
            cleaned[name] = field.clean(field.widget.value_from_datadict(data, {}, name))
        except ValidationError as exc:
            errors.append((name, exc.error_list))
    return cleaned, errors


# --- Views ----------------------------------------------------------------------------------------
def endpoint(scope: str) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Authenticate, throttle and check the scope; turn every error into a JSON error body.

    Read and write views receive the Caller after the request; public views (the docs) do not.
    """

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                if scope == PUBLIC:
                    return view(request, *args, **kwargs)
                caller = authenticate(request)
                if scope == WRITE:
                    require_write(request, caller)
                response = view(request, caller, *args, **kwargs)
                response["Cache-Control"] = "no-store"
                return response
            except ApiError as exc:
                return exc.response()
            except HandleServiceError as exc:
                return error_response(exc.http_status, exc.code, exc.message)
            except Exception:  # a bug: log it, and still answer in the API's own format
                logger.exception("API error on %s %s", request.method, request.path)
                return error_response(500, "internal_error", "Something went wrong on our side; it has been logged.")

        return wrapped

    return decorate


def route(**handlers: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """One URL, one view per HTTP method (GET=..., POST=...); other methods get a JSON 405."""
    allowed = ", ".join(sorted(handlers))

    @csrf_exempt  # token calls need no CSRF token; session writes are checked in require_write
    def view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        handler = handlers.get(request.method or "")
        if handler is None:
            return error_response(405, "method_not_allowed", f"{request.method} is not allowed here; use {allowed}.",
                                  headers={"Allow": allowed})
        return handler(request, *args, **kwargs)

    return view
