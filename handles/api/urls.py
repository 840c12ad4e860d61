"""/api/v1/: the Ninja API's routes (handles.api.views), plus the root's redirect to the docs and JSON answers
where Ninja would answer in text: a method an endpoint does not take (405) and a path it does not know (404)."""

from collections.abc import Callable
from functools import wraps
from typing import cast

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.urls import URLPattern, path, re_path, register_converter
from django.views.decorators.csrf import csrf_exempt
from django.views.generic import RedirectView

from handles.api.errors import error_response
from handles.api.views import api


class SuffixConverter:
    """Like <path:>, but a newline matches too, so the view can refuse it with a JSON error."""

    regex = r"[\s\S]+"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(SuffixConverter, "suffix")


def api_route(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @wraps(view)  # keeps Ninja's csrf_exempt: session writes are CSRF-checked by handles.api.auth
    def wrapped(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        response = view(request, *args, **kwargs)
        if isinstance(response, HttpResponseNotAllowed):
            allowed = ", ".join(sorted(method.strip() for method in response["Allow"].split(",")))
            return error_response(405, "method_not_allowed", f"{request.method} is not allowed here; use {allowed}.",
                                  headers={"Allow": allowed})
        return response

    return wrapped


@csrf_exempt
def not_found(request: HttpRequest, path: str = "") -> HttpResponse:
    return error_response(404, "not_found", f"There is no API endpoint at {request.path}; see the docs at "
                          "/api/v1/docs.")


def _routes() -> list[URLPattern]:
    """Ninja's patterns, one per path (it makes one per operation, all with the path's one view), the
    ArchivesSpace lookups first: Django tries the patterns in turn, and the lookups are the busiest calls."""
    patterns, _app, _namespace = api.urls
    unique = {(str(pattern.pattern), pattern.name): pattern for pattern in reversed(patterns)
              if isinstance(pattern, URLPattern)}  # Ninja makes no resolvers
    ordered = sorted(reversed(unique.values()), key=lambda pattern: not str(pattern.pattern).startswith("lookup/"))
    for pattern in ordered:
        pattern.callback = api_route(cast("Callable[..., HttpResponse]", pattern.callback))  # never None
    return ordered


app_name = "handles_api"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="handles_api:openapi-view", permanent=False), name="root"),
    *_routes(),
    re_path(r"^(?P<path>[\s\S]*)$", not_found),  # JSON 404s, never the HTML page
]
