"""Read-only pages for collection managers (and staff): browse, a handle's page, CSV export.

Outside the admin on purpose: every view here is a GET that reads, so "changes nothing" holds by
construction, and the list pages by keyset (a cursor on the sort key) so page 2,000 of a million
handles costs what page 1 costs. Access needs only the handles.view_handle permission.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime

from django.contrib.auth.decorators import login_required, permission_required
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET

from handles.desk import exports
from handles.desk.forms import BrowseForm
from handles.desk.selectors import HandleFilter, InvalidFilter, capped_count, health_of, with_health
from handles.models import Handle, HandleRequest

PAGE_SIZE = 50


def _reader(view):
    """Logged in, with permission to view handles; GET only."""
    return login_required(permission_required("handles.view_handle", raise_exception=True)(require_GET(view)))


CURSORS = ("after", "before")


def _problems(request: HttpRequest, form: BrowseForm) -> list[str]:
    """Why the query string cannot select exactly what it asks for ([] if it can): an unknown parameter
    (a typo would otherwise show every handle), or an invalid value."""
    problems = [f"Unknown parameter {name!r} (the filters are: {', '.join(form.fields)})."
                for name in request.GET if name not in form.fields and name not in CURSORS]
    if form.is_bound and not form.is_valid():
        for name, messages in form.errors.items():
            label = (form.fields[name].label or name.capitalize()) if name in form.fields else "Filters"
            problems += [f"{label}: {message}" for message in messages]
    return problems  # a cursor this list did not give out shows the first page of the same selection


def _filtered(request: HttpRequest) -> tuple[BrowseForm, HandleFilter, QuerySet]:
    """The handles the query string selects. Raises InvalidFilter (-> 400) rather than select more."""
    form = BrowseForm(request.GET or None)
    if problems := _problems(request, form):
        raise InvalidFilter({str(i): problem for i, problem in enumerate(problems)})
    handle_filter = HandleFilter.from_params(form.cleaned_data if form.is_bound else {})
    return form, handle_filter, handle_filter.apply(Handle.objects.all())


# --- Keyset pagination --------------------------------------------------------------------------------
def _encode(values: list) -> str:
    plain = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    return base64.urlsafe_b64encode(json.dumps(plain).encode()).decode().rstrip("=")


def _decode(cursor: str, fields: list[str]) -> list | None:
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError:
        return None
    if not isinstance(values, list) or len(values) != len(fields):
        return None
    decoded = []
    for field, value in zip(fields, values, strict=True):
        name = field.lstrip("-")
        if name.endswith("_at"):
            value = parse_datetime(value) if isinstance(value, str) else None
        elif name in ("pk", "prefix_id"):
            value = value if isinstance(value, int) else None
        elif not isinstance(value, str):
            value = None
        if value is None:
            return None
        decoded.append(value)
    return decoded


def _after(fields: list[str], values: list) -> Q:
    """Rows after `values` in the order `fields`: (a > x) | (a = x & b > y) | ..., each in its direction."""
    condition = Q(pk__in=[])
    for i, field in enumerate(fields):
        name = field.lstrip("-")
        step = Q(**{f"{name}__{'lt' if field.startswith('-') else 'gt'}": values[i]})
        for earlier, value in zip(fields[:i], values[:i], strict=True):
            step &= Q(**{earlier.lstrip("-"): value})
        condition |= step
    return condition


def _reverse(fields: list[str]) -> list[str]:
    return [f[1:] if f.startswith("-") else f"-{f}" for f in fields]


def _key(handle: Handle, fields: list[str]) -> list:
    return [getattr(handle, f.lstrip("-")) for f in fields]


@_reader
def browse(request: HttpRequest) -> HttpResponse:
    try:
        form, handle_filter, handles = _filtered(request)
    except InvalidFilter as exc:
        return render(request, "desk/browse.html", {"form": BrowseForm(request.GET), "refused": exc.problems.values(),
                                                    "rows": []}, status=400)
    sort, fields = form.ordering()
    rows = with_health(handles.select_related("prefix", "asset"))
    after = _decode(request.GET.get("after", ""), fields)
    before = _decode(request.GET.get("before", ""), fields)
    if before is not None:
        page = list(rows.filter(_after(_reverse(fields), before)).order_by(*_reverse(fields))[: PAGE_SIZE + 1])
        has_more_before = len(page) > PAGE_SIZE
        page = page[:PAGE_SIZE][::-1]
        has_more_after = True
    else:
        if after is not None:
            rows = rows.filter(_after(fields, after))
        page = list(rows.order_by(*fields)[: PAGE_SIZE + 1])
        has_more_after = len(page) > PAGE_SIZE
        page = page[:PAGE_SIZE]
        has_more_before = after is not None
    count, capped = capped_count(handles)
    base = request.GET.copy()
    for name in ("after", "before"):
        base.pop(name, None)
    return render(request, "desk/browse.html", {
        "form": form, "rows": [(h, health_of(h)) for h in page], "count": count, "capped": capped,
        "description": handle_filter.describe(), "query": base.urlencode(),
        "next_cursor": _encode(_key(page[-1], fields)) if page and has_more_after else "",
        "previous_cursor": _encode(_key(page[0], fields)) if page and has_more_before else "",
        "sort": sort,
    })


@_reader
def export(request: HttpRequest) -> StreamingHttpResponse:
    """The browse list's current filter as CSV, streamed: a million rows in bounded memory."""
    try:
        _, _, handles = _filtered(request)
    except InvalidFilter as exc:
        return HttpResponseBadRequest("Nothing was exported: " + " ".join(exc.problems.values()) + "\n",
                                      content_type="text/plain; charset=utf-8")
    return exports.handles_csv(handles)


@_reader
def detail(request: HttpRequest, pk: int) -> HttpResponse:
    handle = get_object_or_404(with_health(Handle.objects.select_related("prefix", "asset")), pk=pk)
    history = list(HandleRequest.objects.filter(handle=handle).select_related("requested_by").order_by("-pk")[:200])
    others = list(Handle.objects.filter(asset=handle.asset).exclude(pk=handle.pk).select_related("prefix")[:20]) \
        if handle.asset_id else []
    return render(request, "desk/detail.html", {
        "handle": handle, "health": health_of(handle), "history": history, "others": others,
    })
