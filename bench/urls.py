"""The project's URLs plus /bench/bare: a bare Django JSON view, the baseline of bench/api_lookup.py."""

from django.http import HttpRequest, JsonResponse
from django.urls import path

from handles_project.urls import urlpatterns as project_urlpatterns

# The shape of a lookup answer, with nothing looked up: the cost of Django, routing and JSON alone.
BARE_ANSWER = {
    "handle": "20.500.14725/bcdfghjk", "prefix": "20.500.14725", "suffix": "bcdfghjk",
    "url": "https://collections.example.edu/node/1", "resolver_url": "https://hdl.handle.net/20.500.14725/bcdfghjk",
    "file_uri": "https://hdl.handle.net/20.500.14725/bcdfghjk", "status": "active", "in_sync": True,
    "is_primary": False, "asset": {"source_system": "dams", "external_id": "1"},
    "created_at": "2026-01-01T00:00:00+00:00", "updated_at": "2026-01-01T00:00:00+00:00",
}


def bare(request: HttpRequest) -> JsonResponse:
    return JsonResponse(BARE_ANSWER)


urlpatterns = [path("bench/bare", bare), *project_urlpatterns]
