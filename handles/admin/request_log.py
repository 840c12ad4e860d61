"""The request log: every change asked of the Handle server, kept forever; read-only, with a cancel
action for queued requests. Retrying failures (one by one, by error group, as a background job) is the
desk's (handles.desk.admin.request_log)."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import ModelAdmin
from django.contrib.admin.views.main import ChangeList
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from handles import services
from handles.admin.common import badge, day_range, form_problems, may_change_handles, refuse
from handles.forms import DateRangeForm
from handles.labels import LabelledFieldsAdmin, counted
from handles.models import HandleRequest, Prefix

if TYPE_CHECKING:
    from django.contrib.admin.filters import _ListFilterChoices  # a TypedDict of the stubs only
from handles.selectors import CappedCountPaginator, request_search, with_signature


class RequestPrefixFilter(admin.SimpleListFilter):
    title = "prefix"
    parameter_name = "prefix"

    def lookups(self, request: HttpRequest, model_admin: ModelAdmin[Any]) -> list[tuple[Any, str]]:
        return [(str(p.pk), p.prefix) for p in Prefix.objects.order_by("prefix")]

    def has_output(self) -> bool:
        return self.value() is not None or super().has_output()

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value:
            return queryset
        if not (value.isascii() and value.isdigit() and Prefix.objects.filter(pk=int(value)).exists()):
            refuse(request, f"There is no prefix with id {value!r}.")
        return queryset.filter(handle__prefix_id=int(value))




class ErrorGroupFilter(admin.SimpleListFilter):
    """Set from the failures page: the failed requests of one error group."""

    title = "error group"
    parameter_name = "signature"

    def lookups(self, request: HttpRequest, model_admin: ModelAdmin[Any]) -> list[tuple[Any, str]]:
        value = request.GET.get(self.parameter_name)
        return [(value, value[:80])] if value else []

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        signature = self.value()
        if not signature:
            return queryset
        return with_signature(queryset.filter(status=HandleRequest.Status.ERROR), signature)


class RequestViaFilter(admin.SimpleListFilter):
    """Set from a bulk job's page: the requests the job made (requested_via = job:<id>)."""

    title = "made by"
    parameter_name = "via"

    def lookups(self, request: HttpRequest, model_admin: ModelAdmin[Any]) -> list[tuple[Any, str]]:
        value = request.GET.get(self.parameter_name)
        return [(value, value[:80])] if value else []

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(requested_via=self.value()) if self.value() else queryset


class RequestDateFilter(admin.ListFilter):
    """Requests made in a date range (days, in the site's time zone): quick links and a from/to form."""

    title = "date"
    template = "admin/desk/date_filter.html"
    parameters = ("since", "until")

    def __init__(self, request: HttpRequest, params: dict[str, Any], model: type[Model],
                 model_admin: ModelAdmin[Any]) -> None:
        super().__init__(request, params, model, model_admin)
        for name in self.parameters:
            if name in params:
                self.used_parameters[name] = params.pop(name)[-1]
        self.form = DateRangeForm(self.used_parameters or None)
        self.other_params = [(k, v) for k, v in request.GET.items() if k not in (*self.parameters, "p")]

    def has_output(self) -> bool:
        return True

    def expected_parameters(self) -> list[str | None]:
        return list(self.parameters)

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if not self.form.is_bound:
            return queryset
        if not self.form.is_valid():
            refuse(request, form_problems(self.form))
        since, until = day_range(self.form.cleaned_data)
        if since:
            queryset = queryset.filter(created_at__gte=since)
        if until:
            queryset = queryset.filter(created_at__lt=until)
        return queryset

    def choices(self, changelist: ChangeList) -> Iterator[_ListFilterChoices]:
        today = timezone.localdate()
        links = [("Any date", {}), ("Today", {"since": today}),
                 ("Past 7 days", {"since": today - datetime.timedelta(days=6)}),
                 ("Past 30 days", {"since": today - datetime.timedelta(days=29)})]
        for label, values in links:
            wanted = {k: v.isoformat() for k, v in values.items()}
            yield {"selected": wanted == self.used_parameters, "display": label,
                   "query_string": changelist.get_query_string(wanted, remove=list(self.parameters))}




@admin.register(HandleRequest)
class HandleRequestAdmin(LabelledFieldsAdmin, admin.ModelAdmin):
    list_display = ["id", "created_at", "action", "op", "handle_link", "status_badge", "attempts", "requester",
                    "short_error"]
    list_filter = ["status", "op", "action", RequestPrefixFilter, RequestDateFilter, ErrorGroupFilter,
                   RequestViaFilter]
    search_fields = ["full_handle"]  # shows the search box; get_search_results does the searching
    search_help_text = "A full handle (exact), or part of one."
    ordering = ["-pk"]
    paginator = CappedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_select_related = ["requested_by"]
    actions = ["cancel_selected"]
    change_list_template = "admin/handles/handlerequest/change_list.html"
    readonly_fields = ["id", "handle_link", "op", "action", "full_handle", "url", "from_url", "from_status",
                       "to_status", "reason", "status_badge", "attempts", "max_attempts", "next_attempt_at",
                       "handle_version", "pushed_version", "requested_by", "requested_via", "idempotency_key",
                       "created_at", "started_at", "finished_at", "server_output", "server_error", "error"]
    fields = tuple(readonly_fields)

    @admin.display(description="Error")
    def short_error(self, obj: HandleRequest) -> str:
        return obj.error[:120]

    @admin.display(description="Handle")
    def handle_link(self, obj: HandleRequest) -> str:
        url = reverse("admin:handles_handle_change", args=[obj.handle_id])
        return format_html('<a href="{}">{}</a>', url, obj.full_handle)

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: HandleRequest) -> str:
        return badge(obj.status, obj.status, obj.error)

    @admin.display(description="By")
    def requester(self, obj: HandleRequest) -> str:
        who = obj.requested_by.get_username() if obj.requested_by else ""
        return " ".join(filter(None, [who, f"({obj.requested_via})" if obj.requested_via else ""]))

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
                           ) -> tuple[QuerySet[Any], bool]:
        return request_search(queryset, search_term), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False  # the request log is kept forever

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        if not may_change_handles(request):
            return {}
        return super().get_actions(request)

    @admin.action(description="Cancel selected queued requests (they end in error, unsent)")
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        ids = list(queryset.filter(status=HandleRequest.Status.QUEUED).values_list("pk", flat=True)
                   [:settings.HANDLES_DESK_INLINE_LIMIT])
        cancelled = services.requests_cancel(request_ids=ids, actor=request.user)
        self.message_user(request, f"Cancelled {counted(cancelled, 'queued request')}; the others were left alone.",
                          messages.SUCCESS)

