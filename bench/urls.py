"""The project's URLs plus /bench/bare: a bare Django JSON view, the baseline of bench/api_lookup.py, and
/bench/bare-insert: a bare view that inserts one row, the baseline of bench/api_create.py."""

from __future__ import annotations

import json
from typing import ClassVar

from django.db import models, transaction
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

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


class BareRow(models.Model):
    """The one row bench/api_create.py's baseline view inserts (the table is made by that benchmark)."""

    url = models.CharField(max_length=2000)
    created_at = models.DateTimeField(auto_now_add=True)

    objects: ClassVar[models.Manager[BareRow]] = models.Manager()  # declared: mypy's plugin reads only installed apps

    class Meta:
        app_label = "handles"
        db_table = "bench_bare_row"
        managed = False  # no migration: it exists in the benchmark's database only

    def __str__(self) -> str:
        return self.url


@csrf_exempt
def bare_insert(request: HttpRequest) -> JsonResponse:
    """Read a JSON body, insert one row (the ORM, in a transaction), answer it: the least a create does."""
    with transaction.atomic():
        row = BareRow.objects.create(url=json.loads(request.body)["url"])
    return JsonResponse({"id": row.pk, "url": row.url}, status=201)


urlpatterns = [path("bench/bare", bare), path("bench/bare-insert", bare_insert), *project_urlpatterns]
