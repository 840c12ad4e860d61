"""Read-only pages for collection managers (and staff): browse, a handle's page, CSV export.

Outside the admin on purpose: every view here is a GET that reads, so "changes nothing" holds by
construction, and the list pages by keyset (a cursor on the sort key) so page 2,000 of a million
handles costs what page 1 costs. Access needs only the handles.view_handle permission.
"""

from __future__ import annotations

from collections.abc import Callable

from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from handles.desk import exports
from handles.desk.filters import BROWSE, InvalidFilter, Problem
from handles.desk.forms import BrowseForm
from handles.desk.selectors import health_of, with_health
from handles.keyset import InvalidCursor
from handles.models import Handle, HandleRequest
from handles.selectors import capped_count

PAGE_SIZE = 50
CURSORS = ("after", "before")


def _reader(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """Logged in, with permission to view handles; GET only."""
    return login_required(permission_required("handles.view_handle", raise_exception=True)(require_GET(view)))


def _refused(request: HttpRequest, exc: InvalidFilter) -> HttpResponse:
    return render(request, "desk/browse.html", {"form": BrowseForm(request.GET, problems=exc.problems),
                                                "refused": exc.problems.values(), "rows": []}, status=400)


@_reader
def browse(request: HttpRequest) -> HttpResponse:
    try:
        selection = BROWSE.parse(request.GET, also=CURSORS)
        keyset = selection.keyset
        cursors = {name: keyset.decode(request.GET[name]) for name in CURSORS if request.GET.get(name)}
    except InvalidFilter as exc:
        return _refused(request, exc)
    except InvalidCursor as exc:
        return _refused(request, InvalidFilter({"cursor": Problem("invalid_cursor", str(exc))}))
    handles = selection.queryset()
    rows = with_health(handles.select_related("prefix", "asset"))
    after, before = cursors.get("after"), cursors.get("before")
    if before is not None:
        backwards = keyset.reversed()
        page = list(rows.filter(backwards.after(before)).order_by(*backwards.order)[: PAGE_SIZE + 1])
        has_more_before = len(page) > PAGE_SIZE
        page = page[:PAGE_SIZE][::-1]
        has_more_after = True
    else:
        if after is not None:
            rows = rows.filter(keyset.after(after))
        page = list(rows.order_by(*keyset.order)[: PAGE_SIZE + 1])
        has_more_after = len(page) > PAGE_SIZE
        page = page[:PAGE_SIZE]
        has_more_before = after is not None
    count, capped = capped_count(handles)
    base = request.GET.copy()
    for name in CURSORS:
        base.pop(name, None)
    return render(request, "desk/browse.html", {
        "form": BrowseForm(request.GET), "rows": [(h, health_of(h)) for h in page], "count": count,
        "capped": capped, "description": selection.describe(), "query": base.urlencode(),
        "next_cursor": keyset.encode_row(page[-1]) if page and has_more_after else "",
        "previous_cursor": keyset.encode_row(page[0]) if page and has_more_before else "",
        "sort": selection.sort,
    })


@_reader
def export(request: HttpRequest) -> HttpResponseBadRequest | StreamingHttpResponse:
    """The browse list's current filter as CSV, streamed: a million rows in bounded memory."""
    try:
        selection = BROWSE.parse(request.GET)  # the whole selection: a page position would be ignored
    except InvalidFilter as exc:
        return HttpResponseBadRequest("Nothing was exported: " + " ".join(exc.problems.values()) + "\n",
                                      content_type="text/plain; charset=utf-8")
    return exports.handles_csv(selection.queryset())


@_reader
def detail(request: HttpRequest, pk: int) -> HttpResponse:
    handle = get_object_or_404(with_health(Handle.objects.select_related("prefix", "asset")), pk=pk)
    history = list(HandleRequest.objects.filter(handle=handle).select_related("requested_by").order_by("-pk")[:200])
    others = list(Handle.objects.filter(asset=handle.asset).exclude(pk=handle.pk).select_related("prefix")[:20]) \
        if handle.asset_id else []
    return render(request, "desk/detail.html", {
        "handle": handle, "health": health_of(handle), "history": history, "others": others,
    })
