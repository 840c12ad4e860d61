"""API errors: `{"error": {"code": "...", "message": "..."}}`, plus `fields` for form errors."""

from __future__ import annotations

from typing import Any

from django.http import JsonResponse


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, *, fields: dict[str, list[dict[str, str]]] | None = None,
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
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def error_response(status: int, code: str, message: str, *, fields: dict[str, list[dict[str, str]]] | None = None,
                   headers: dict[str, str] | None = None) -> JsonResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if fields:
        error["fields"] = fields
    return json_response({"error": error}, status=status, headers=headers)
