"""Admin pages of reconciliations and the repairs chosen from them."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
)
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse

from handles.admin_log import ADDITION, log_desk_action
from handles.exceptions import HandleServiceError
from handles.repair import selectors, services
from handles.repair.admin.common import (
    ROWS_PER_PAGE,
    ReadOnlyJobAdmin,
    csv_response,
    job_status,
    may_write,
    require_write,
    retry_failed_requests,
)
from handles.repair.forms import (
    ReconcileForm,
    RepairForm,
)
from handles.repair.models import (
    ReconciliationRow,
    ReconciliationRun,
    RepairJob,
)


# --- Reconciliation and repair ---------------------------------------------------------------------------
@admin.register(ReconciliationRun)
class ReconciliationRunAdmin(ReadOnlyJobAdmin):
    list_display = ["__str__", "state_label", "in_sync", "drift_display", "finished_at"]
    list_filter = ["state", "prefix"]
    list_select_related = ["prefix"]

    @admin.display(description="In sync")
    def in_sync(self, obj: ReconciliationRun) -> int:
        return obj.counts.get("in_sync", 0)

    @admin.display(description="Not in sync")
    def drift_display(self, obj: ReconciliationRun) -> int:
        return obj.drift

    def has_add_permission(self, request: HttpRequest) -> bool:
        return may_write(request)

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("<int:pk>/status.json", wrap(self.status_view), name="handles_repair_reconciliationrun_status"),
            path("<int:pk>/repair/", wrap(self.repair_view), name="handles_repair_reconciliationrun_repair"),
            path("<int:pk>/rows.csv", wrap(self.rows_csv_view), name="handles_repair_reconciliationrun_rows"),
            path("repair-status/<int:pk>.json", wrap(self.repair_status_view),
                 name="handles_repair_repairjob_status"),
            path("repair-retry/<int:pk>/", wrap(self.repair_retry_view), name="handles_repair_repairjob_retry_failed"),
            path("<int:pk>/cancel/", wrap(self.cancel_view), name="handles_repair_reconciliationrun_cancel"),
            path("repair-cancel/<int:pk>/", wrap(self.repair_cancel_view), name="handles_repair_repairjob_cancel"),
        ] + super().get_urls()

    def cancel_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        return self._cancel(request, "reconcile", pk, "admin:handles_repair_reconciliationrun_change")

    def repair_cancel_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        job = get_object_or_404(RepairJob, pk=pk)
        return self._cancel(request, "repair", pk, "admin:handles_repair_reconciliationrun_change", job.run_id)

    def add_view(self, request: HttpRequest, form_url: str = "",
                 extra_context: dict[str, Any] | None = None) -> HttpResponse:
        require_write(request)
        form = ReconcileForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            run = services.reconciliation_start(prefix=form.cleaned_data["prefix"], actor=request.user)
            log_desk_action(request, [run], f"Started reconciling {run.prefix}.", flag=ADDITION)
            return HttpResponseRedirect(reverse("admin:handles_repair_reconciliationrun_change", args=[run.pk]))
        return self._page(request, "reconcile_start.html", "Reconcile a prefix with its Handle server", form=form,
                          latest=selectors.latest_reconciliations(), schedule=selectors.reconcile_schedule())

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        self._require_view(request)
        run = get_object_or_404(ReconciliationRun.objects.select_related("prefix"), pk=object_id)
        kind = request.GET.get("kind", "")
        rows = run.rows.select_related("handle", "asset", "repair_request").order_by("kind", "pk")
        if kind in ReconciliationRow.Kind.values:
            rows = rows.filter(kind=kind)
        page = Paginator(rows, ROWS_PER_PAGE).get_page(request.GET.get("page"))
        classes = [(k, label, run.counts.get(k, 0)) for k, label in ReconciliationRow.Kind.choices]
        return self._page(request, "reconciliation.html", str(run), run=run, page=page, kind=kind, classes=classes,
                          repairs=run.repairs.select_related("created_by")[:10],
                          verification=selectors.repair_verification(run))

    def status_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        self._require_view(request)
        return job_status(get_object_or_404(ReconciliationRun, pk=pk))

    def repair_status_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        self._require_view(request)
        return job_status(get_object_or_404(RepairJob, pk=pk))

    def repair_retry_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        require_write(request)
        job = get_object_or_404(RepairJob, pk=pk)
        if request.method == "POST":
            retry_failed_requests(self, request, services.repair_job_retry_failed, job=job)
        return HttpResponseRedirect(reverse("admin:handles_repair_reconciliationrun_change", args=[job.run_id]))

    def repair_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        """Repairs: a dry run first (what would be queued), then the same choice confirmed."""
        require_write(request)
        run = get_object_or_404(ReconciliationRun.objects.select_related("prefix"), pk=pk)
        form = RepairForm(request.POST or None)
        if request.method != "POST" or not form.is_valid():
            for error in form.errors.get("__all__", []):
                self.message_user(request, str(error), messages.ERROR)
            return HttpResponseRedirect(reverse("admin:handles_repair_reconciliationrun_change", args=[pk]))
        kinds, row_ids = form.cleaned_data["kinds"], form.cleaned_data["row_ids"]
        if "confirm" in request.POST:
            try:
                job = services.repair_start(run=run, kinds=kinds, row_ids=row_ids, actor=request.user)
            except HandleServiceError as exc:
                self.message_user(request, exc.message, messages.ERROR)
            else:
                log_desk_action(request, [run], f"Started repair #{job.pk}.")
                self.message_user(request, f"Repair #{job.pk} started; each request is verified on the server.",
                                  messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:handles_repair_reconciliationrun_change", args=[pk]))
        plan = selectors.repair_plan(run, kinds=kinds, row_ids=row_ids)
        return self._page(request, "repair_plan.html", f"Repair: dry run for {run}", run=run, plan=plan,
                          kinds=kinds, rows=",".join(map(str, row_ids)))

    def rows_csv_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        self._require_view(request)
        run = get_object_or_404(ReconciliationRun, pk=pk)
        rows = run.rows.order_by("kind", "pk").values_list("kind", "full_handle", "server_url", "our_url", "vendor",
                                                           "note", "repair_request_id")
        return csv_response(f"reconciliation-{run.pk}.csv", ["class", "handle", "server_url", "our_url",
                                                              "vendor", "note", "repair_request"],
                             rows.iterator(chunk_size=5000))
