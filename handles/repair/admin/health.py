"""Admin pages of resolution health checks and their results."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db.models import Model, QuerySet
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
)
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from handles.admin_log import ADDITION, log_desk_action
from handles.exceptions import HandleServiceError
from handles.labels import LabelledFieldsAdmin, counted
from handles.repair import selectors, services
from handles.repair.admin.common import (
    ROWS_PER_PAGE,
    ReadOnlyJobAdmin,
    bad_filter,
    csv_response,
    job_status,
    may_write,
    require_write,
)
from handles.repair.forms import (
    HealthCheckForm,
    HealthRepairForm,
    HealthResultsFilter,
)
from handles.repair.models import (
    HandleCheck,
    HealthOutcome,
    HealthRun,
)
from handles.repair.trend import trend_svg


# --- Resolution health -----------------------------------------------------------------------------------
@admin.register(HealthRun)
class HealthRunAdmin(ReadOnlyJobAdmin):
    """The changelist is the health page: shares, trend, failing handles, and the form to check again."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return may_write(request)

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("<int:pk>/status.json", wrap(self.status_view), name="handles_repair_healthrun_status"),
            path("failing.csv", wrap(self.failing_csv_view), name="handles_repair_healthrun_failing"),
            path("<int:pk>/cancel/", wrap(self.cancel_view), name="handles_repair_healthrun_cancel"),
        ] + super().get_urls()

    def cancel_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        return self._cancel(request, "health", pk, "admin:handles_repair_healthrun_change")

    def changelist_view(self, request: HttpRequest,
                        extra_context: dict[str, Any] | None = None) -> HttpResponse:
        """The health page: a run's results filtered (by outcome, prefix, source system, vendor or legacy),
        with the handles chosen there repaired or verified through the queue."""
        self._require_view(request)
        filters = HealthResultsFilter(request.GET)
        if not filters.is_valid():
            return bad_filter(filters)
        data = filters.cleaned_data
        run = HealthRun.objects.get(pk=data["run"]) if data["run"] else selectors.latest_run_with_results()
        results = selectors.health_results(run, outcome=data["outcome"], prefix=data["prefix"],
                                           source=data["source"], origin=data["origin"]) if run else None
        form = HealthCheckForm(request.POST or None) if "_repair" not in request.POST else HealthCheckForm()
        if request.method == "POST":
            require_write(request)
            if "_repair" in request.POST:
                return self._repair(request, results, run)
            if form.is_valid():
                run = services.health_start(filters=form.filters(), actor=request.user)
                log_desk_action(request, [run], "Started a health check.", flag=ADDITION)
                return HttpResponseRedirect(reverse("admin:handles_repair_healthrun_change", args=[run.pk]))
        trend = selectors.health_trend()
        page = Paginator(results if results is not None else HandleCheck.objects.none(), ROWS_PER_PAGE).get_page(
            data["page"])
        return self._page(request, "health.html", "Resolution health", form=form, summary=selectors.latest_health(),
                          shares=selectors.health_shares(run), trend=trend, trend_svg=trend_svg(trend), shown=run,
                          runs=HealthRun.objects.order_by("-pk")[:10], failing=page, filters=filters,
                          query=urlencode(filters.as_params()), repair_form=HealthRepairForm(),
                          handle_list_query=urlencode({"health": data["outcome"]}) if data["outcome"] else "")

    def _repair(self, request: HttpRequest, results: QuerySet[HandleCheck] | None, run: HealthRun | None
                ) -> HttpResponse:
        back = HttpResponseRedirect(request.get_full_path())
        form = HealthRepairForm(request.POST)
        if results is None or not form.is_valid():
            for error in form.errors.get("__all__", []) or (["There are no health results to act on."]
                                                            if results is None else ["Choose an action."]):
                self.message_user(request, str(error), messages.ERROR)
            return back
        chosen = results if form.cleaned_data["all_matching"] else results.filter(
            handle_id__in=form.cleaned_data["handles"])
        checks = list(chosen[:services.HEALTH_REPAIR_LIMIT + 1])
        try:
            queued = services.health_repair(checks=checks, action=form.cleaned_data["action"], actor=request.user)
        except HandleServiceError as exc:
            self.message_user(request, exc.message, messages.ERROR)
        else:
            verb = "Repair" if form.cleaned_data["action"] == "repair" else "Verification"
            self.message_user(request, f"{verb} of {counted(queued, 'handle')} queued; each request is verified on the "
                                       "server (see each handle's history).", messages.SUCCESS)
        return back

    def add_view(self, request: HttpRequest, form_url: str = "",
                 extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return HttpResponseRedirect(reverse("admin:handles_repair_healthrun_changelist"))

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        self._require_view(request)
        run = get_object_or_404(HealthRun, pk=object_id)
        checks = HandleCheck.objects.filter(run=run).failing().select_related("handle__prefix", "handle__asset")
        page = Paginator(checks.order_by("outcome", "handle_id"), ROWS_PER_PAGE).get_page(request.GET.get("page"))
        return self._page(request, "health_run.html", str(run), run=run, page=page,
                          outcomes=[(o, label, run.counts.get(o, 0)) for o, label in HealthOutcome.choices])

    def status_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        self._require_view(request)
        return job_status(get_object_or_404(HealthRun, pk=pk))

    def failing_csv_view(self, request: HttpRequest) -> HttpResponseBase:
        """The health page's list as CSV: the same filters (a run's results not resolving correctly)."""
        self._require_view(request)
        filters = HealthResultsFilter(request.GET)
        if not filters.is_valid():
            return bad_filter(filters)
        data = filters.cleaned_data
        run = HealthRun.objects.get(pk=data["run"]) if data["run"] else selectors.latest_run_with_results()
        checks = selectors.health_results(run, outcome=data["outcome"], prefix=data["prefix"], source=data["source"],
                                          origin=data["origin"]) if run else HandleCheck.objects.none()
        rows = ((c.handle.full_handle, c.outcome, c.http_status, c.server_url, c.final_url, c.detail,
                 c.handle.asset.source_system if c.handle.asset else "", c.handle.asset.external_id if c.handle.asset
                 else "", c.handle.asset.title if c.handle.asset else "", c.checked_at.isoformat())
                for c in checks.iterator(chunk_size=2000))
        return csv_response("handles-not-resolving.csv", ["handle", "outcome", "http_status", "server_url",
                                                            "final_url", "detail", "source_system", "external_id",
                                                            "title", "checked_at"], rows)


@admin.register(HandleCheck)
class HandleCheckAdmin(LabelledFieldsAdmin, admin.ModelAdmin):
    """Every check of every run (a handle's history); filter by run, outcome, prefix, source system."""

    list_display = ["handle_link", "run", "outcome", "http_status", "final_url", "detail", "checked_at"]
    list_filter = ["outcome", "run", "handle__prefix", "handle__asset__source_system", "handle__status"]
    list_select_related = ["handle__prefix", "run"]
    search_fields = ["handle__suffix_key", "final_url"]
    show_full_result_count = False
    actions = ["recheck_selected"]

    @admin.display(description="Handle", ordering="handle__suffix_key")
    def handle_link(self, obj: HandleCheck) -> str:
        return format_html('<a href="{}">{}</a>', reverse("admin:handles_handle_change", args=[obj.handle_id]),
                           obj.handle.full_handle)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        return super().get_actions(request) if may_write(request) else {}

    @admin.action(description="Check the selected handles again")
    def recheck_selected(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        run = services.health_start(filters={"handle_ids": list(queryset.order_by().values_list("handle_id", flat=True)
                                                                  .distinct()[:10000])},
                                    actor=request.user)
        log_desk_action(request, [run], "Started a health check of selected handles.", flag=ADDITION)
        return HttpResponseRedirect(reverse("admin:handles_repair_healthrun_change", args=[run.pk]))
