"""Admin pages of imports, reconciliation, repairs, health checks and assets with several handles.

Thin: each view parses a form, calls handles.repair.services (or handles.services) and shows the result.
Long jobs run on the task queue; their pages poll a JSON status view and draw a progress bar. Staff
(handles.change_handle) start jobs and apply changes; collection managers may look.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, render
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from handles import services as core
from handles.admin_log import ADDITION, log_desk_action
from handles.exceptions import HandleServiceError
from handles.labels import LabelledFieldsAdmin, counted
from handles.models import Handle
from handles.repair import selectors, services
from handles.repair.conflicts import conflict_groups
from handles.repair.csvfile import ImportFileError, csv_lines
from handles.repair.forms import (
    ConflictForm,
    HealthCheckForm,
    HealthRepairForm,
    HealthResultsFilter,
    ImportPresetForm,
    MappingForm,
    ReconcileForm,
    RepairForm,
    UploadForm,
)
from handles.repair.models import (
    MAPPING_FIELDS,
    AssetWithSeveralHandles,
    HandleCheck,
    HealthOutcome,
    HealthRun,
    ImportBatch,
    ImportPreset,
    ImportRow,
    ReconciliationRow,
    ReconciliationRun,
    RepairJob,
)
from handles.repair.trend import trend_svg

ROWS_PER_PAGE = 100


def may_write(request: HttpRequest) -> bool:
    return request.user.has_perm("handles.change_handle")


def _require_write(request: HttpRequest) -> None:
    if not may_write(request):
        raise PermissionDenied


def job_status(job) -> JsonResponse:
    """The JSON the progress bars poll: state, done/total, percent, counts, message, error. While an import
    or repair is verifying, done/total are its requests verified on the server of all it queued, and
    `verification` tallies them by status; `finished` is false until it is applied/done or incomplete."""
    return JsonResponse({
        "id": job.pk, "state": job.state, "state_display": job.get_state_display(), "finished": job.finished,
        "done": job.progress_done, "total": job.progress_total, "percent": job.percent, "message": job.message,
        "counts": job.counts, "error": job.error, "verifying": job.state == "verifying",
        "verification": job.verification,
    })


def _retry_failed(model_admin: admin.ModelAdmin, request: HttpRequest, retry, **job) -> None:
    """Retry the failed requests of an import or repair, and say what happened."""
    try:
        retried = retry(actor=request.user, **job)
    except HandleServiceError as exc:
        model_admin.message_user(request, exc.message, messages.ERROR)
    else:
        log_desk_action(request, job.values(), f"Retried {counted(retried, 'failed request')}.")
        model_admin.message_user(request, f"{counted(retried, 'failed request')} queued again; the job verifies them on "
                                          "the server.", messages.SUCCESS)


def _bad_filter(form) -> HttpResponse:
    """A filter value that is not one of its choices: 400 with the reason, never a wider list."""
    problems = "; ".join(f"{name}: {' '.join(errors)}" for name, errors in form.errors.items())
    return HttpResponseBadRequest(f"Bad filter: {problems}", content_type="text/plain; charset=utf-8")


def _csv_response(filename: str, header: list[str], rows) -> StreamingHttpResponse:
    response = StreamingHttpResponse(csv_lines(header, rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


class ReadOnlyJobAdmin(admin.ModelAdmin):
    """Jobs are started from their own forms and never edited or deleted by hand."""

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def _require_view(self, request: HttpRequest) -> None:
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied

    def _page(self, request: HttpRequest, template: str, title: str, **context) -> HttpResponse:
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "title": title,
                   "may_write": may_write(request), **context}
        return render(request, f"admin/handles_repair/{template}", context)

    def _cancel(self, request: HttpRequest, kind: str, pk: int, back: str, *back_args) -> HttpResponse:
        """Staff stop a job; it stops at the end of the slice under way, and its page says so."""
        _require_write(request)
        if request.method == "POST":
            try:
                job = services.job_cancel(kind=kind, job_id=pk, actor=request.user)
            except HandleServiceError as exc:
                self.message_user(request, exc.message, messages.ERROR)
            else:
                done = job.state == "cancelled"
                self.message_user(request, f"{job} is cancelled." if done else
                                  f"{job} stops at the end of the slice under way; what it did stays done.",
                                  messages.SUCCESS)
        return HttpResponseRedirect(reverse(back, args=back_args or [pk]))


# --- Presets ---------------------------------------------------------------------------------------------
@admin.register(ImportPreset)
class ImportPresetAdmin(LabelledFieldsAdmin, admin.ModelAdmin):
    form = ImportPresetForm
    list_display = ["name", "handle_column", "external_id_column", "url_column", "prefix", "source_system", "mode"]
    readonly_fields = ["created_by", "created_at", "updated_at"]

    def save_model(self, request, obj, form, change):
        services.preset_save(preset=obj, actor=request.user)  # the form has checked the template


# --- Imports ---------------------------------------------------------------------------------------------
@admin.register(ImportBatch)
class ImportBatchAdmin(ReadOnlyJobAdmin):
    list_display = ["__str__", "state_label", "mode", "summary", "created_by", "created_at"]
    list_filter = ["step", "state", "mode"]

    @admin.display(description="Lines")
    def summary(self, obj: ImportBatch) -> str:
        counts = obj.counts
        if not counts:
            return "—"
        return ", ".join(f"{counts.get(o, 0):,} {o}" for o in ImportRow.Outcome.values if counts.get(o))

    def has_add_permission(self, request) -> bool:
        return may_write(request)

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<int:pk>/status.json", wrap(self.status_view), name="handles_repair_importbatch_status"),
            path("<int:pk>/report.csv", wrap(self.report_view), name="handles_repair_importbatch_report"),
            path("<int:pk>/apply/", wrap(self.apply_view), name="handles_repair_importbatch_apply"),
            path("<int:pk>/continue-push/", wrap(self.continue_push_view),
                 name="handles_repair_importbatch_continue_push"),
            path("<int:pk>/retry-failed/", wrap(self.retry_failed_view),
                 name="handles_repair_importbatch_retry_failed"),
            path("<int:pk>/cancel/", wrap(self.cancel_view), name="handles_repair_importbatch_cancel"),
            path("<int:pk>/conflicts/", wrap(self.conflicts_view), name="handles_repair_importbatch_conflicts"),
        ] + super().get_urls()

    def cancel_view(self, request, pk):
        return self._cancel(request, "import", pk, "admin:handles_repair_importbatch_change")

    def add_view(self, request, form_url="", extra_context=None):
        """Step 1: upload. A file whose header cannot be read is refused here, with the reason."""
        _require_write(request)
        form = UploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                batch = services.import_batch_create(
                    file_name=upload.name, content=upload.read(), encoding=form.cleaned_data["encoding"],
                    delimiter=form.cleaned_data["delimiter"], preset=form.cleaned_data["preset"], actor=request.user)
            except ImportFileError as exc:
                form.add_error("file", exc.message)
            else:
                log_desk_action(request, [batch], f"Uploaded {batch.file_name}.", flag=ADDITION)
                return HttpResponseRedirect(reverse("admin:handles_repair_importbatch_change", args=[batch.pk]))
        return self._page(request, "import_upload.html", "Import handles from a CSV file", form=form)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """Step 2: map the columns and run the dry run; step 3: review the report and apply."""
        self._require_view(request)
        batch = get_object_or_404(ImportBatch.objects.select_related("prefix", "preset"), pk=object_id)
        form = None
        if batch.reconfigurable:
            initial = {f"column_{k}": v for k, v in batch.mapping.items()}
            initial.update(prefix=batch.prefix, source_system=batch.source_system, url_template=batch.url_template,
                           mode=batch.mode)
            form = MappingForm(request.POST or None, header=batch.header, initial=initial)
            if request.method == "POST":
                _require_write(request)
                if form.is_valid():
                    try:
                        batch = services.import_batch_configure(
                            batch=batch, mapping=form.mapping(), prefix=form.cleaned_data["prefix"],
                            source_system=form.cleaned_data["source_system"],
                            url_template=form.cleaned_data["url_template"], mode=form.cleaned_data["mode"],
                            save_preset_as=form.cleaned_data["save_preset_as"], actor=request.user)
                        services.import_batch_start_analysis(batch=batch, actor=request.user)
                    except HandleServiceError as exc:
                        form.add_error(None, exc.message)
                    else:
                        log_desk_action(request, [batch], "Mapped the columns; dry run started.")
                        return HttpResponseRedirect(request.path)
        outcome = request.GET.get("outcome", "")
        rows = batch.rows.select_related("prefix").order_by("line")
        if outcome in ImportRow.Outcome.values:
            rows = rows.filter(outcome=outcome)
        page = Paginator(rows, ROWS_PER_PAGE).get_page(request.GET.get("page"))
        return self._page(
            request, "import_batch.html", str(batch), batch=batch, form=form, page=page, outcome=outcome,
            left_out=selectors.import_left_out(batch.pk) if batch.analysed_at else None,
            outcomes=[(o, label, batch.counts.get(o, 0)) for o, label in ImportRow.Outcome.choices],
            verification=batch.verification if batch.applied_at else None, mapping_fields=MAPPING_FIELDS,
        )

    def status_view(self, request, pk):
        self._require_view(request)
        return job_status(get_object_or_404(ImportBatch, pk=pk))

    def report_view(self, request, pk):
        self._require_view(request)
        batch = get_object_or_404(ImportBatch, pk=pk)
        rows = batch.rows.order_by("line").values_list("line", "handle_text", "outcome", "reason", "target_url",
                                                       "source_system", "external_id", "title", "vendor", "primary")
        return _csv_response(f"import-{batch.pk}-report.csv", ["line", "handle", "outcome", "reason", "target_url",
                                                               "source_system", "external_id", "title", "vendor",
                                                               "primary"], rows.iterator(chunk_size=5000))

    def apply_view(self, request, pk):
        _require_write(request)
        batch = get_object_or_404(ImportBatch, pk=pk)
        if request.method == "POST":
            try:
                services.import_batch_start_apply(batch=batch, actor=request.user)
            except HandleServiceError as exc:
                self.message_user(request, exc.message, messages.ERROR)
            else:
                log_desk_action(request, [batch], "Applied.")
        return HttpResponseRedirect(reverse("admin:handles_repair_importbatch_change", args=[pk]))

    def continue_push_view(self, request, pk):
        _require_write(request)
        batch = get_object_or_404(ImportBatch, pk=pk)
        if request.method == "POST":
            try:
                services.import_batch_continue_push(batch=batch, actor=request.user)
            except HandleServiceError as exc:
                self.message_user(request, exc.message, messages.ERROR)
            else:
                log_desk_action(request, [batch], "Continued pushing.")
        return HttpResponseRedirect(reverse("admin:handles_repair_importbatch_change", args=[pk]))

    def conflicts_view(self, request, pk):
        """Handles the file cites for several records: both records, where the server resolves the handle
        now, and the choice of the record that keeps it (the others flagged, or given new handles)."""
        self._require_view(request)
        batch = get_object_or_404(ImportBatch.objects.defer("content"), pk=pk)
        if request.method == "POST":
            _require_write(request)
            form = ConflictForm(request.POST)
            if "_read_server" in request.POST:
                services.import_conflict_start_read(batch=batch)
                self.message_user(request, "The conflicting handles are read from the server again, in the "
                                           "background; reload this page in a moment.", messages.SUCCESS)
            elif not form.is_valid():
                for errors in form.errors.values():
                    for error in errors:
                        self.message_user(request, error, messages.ERROR)
            else:
                try:
                    services.import_conflict_resolve(batch=batch, keep_row_id=form.cleaned_data["keep"],
                                                     others=form.cleaned_data["others"], actor=request.user)
                except HandleServiceError as exc:
                    self.message_user(request, exc.message, messages.ERROR)
                else:
                    self.message_user(request, "Resolved; the requests are queued and verified on the server.",
                                      messages.SUCCESS)
            return HttpResponseRedirect(request.path)
        return self._page(request, "import_conflicts.html", f"Conflicts of {batch}", batch=batch,
                          groups=conflict_groups(batch.pk))

    def retry_failed_view(self, request, pk):
        _require_write(request)
        batch = get_object_or_404(ImportBatch.objects.defer("content"), pk=pk)
        if request.method == "POST":
            _retry_failed(self, request, services.import_batch_retry_failed, batch=batch)
        return HttpResponseRedirect(reverse("admin:handles_repair_importbatch_change", args=[pk]))


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

    def has_add_permission(self, request) -> bool:
        return may_write(request)

    def get_urls(self):
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

    def cancel_view(self, request, pk):
        return self._cancel(request, "reconcile", pk, "admin:handles_repair_reconciliationrun_change")

    def repair_cancel_view(self, request, pk):
        job = get_object_or_404(RepairJob, pk=pk)
        return self._cancel(request, "repair", pk, "admin:handles_repair_reconciliationrun_change", job.run_id)

    def add_view(self, request, form_url="", extra_context=None):
        _require_write(request)
        form = ReconcileForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            run = services.reconciliation_start(prefix=form.cleaned_data["prefix"], actor=request.user)
            log_desk_action(request, [run], f"Started reconciling {run.prefix}.", flag=ADDITION)
            return HttpResponseRedirect(reverse("admin:handles_repair_reconciliationrun_change", args=[run.pk]))
        return self._page(request, "reconcile_start.html", "Reconcile a prefix with its Handle server", form=form,
                          latest=selectors.latest_reconciliations(), schedule=selectors.reconcile_schedule())

    def change_view(self, request, object_id, form_url="", extra_context=None):
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

    def status_view(self, request, pk):
        self._require_view(request)
        return job_status(get_object_or_404(ReconciliationRun, pk=pk))

    def repair_status_view(self, request, pk):
        self._require_view(request)
        return job_status(get_object_or_404(RepairJob, pk=pk))

    def repair_retry_view(self, request, pk):
        _require_write(request)
        job = get_object_or_404(RepairJob, pk=pk)
        if request.method == "POST":
            _retry_failed(self, request, services.repair_job_retry_failed, job=job)
        return HttpResponseRedirect(reverse("admin:handles_repair_reconciliationrun_change", args=[job.run_id]))

    def repair_view(self, request, pk):
        """Repairs: a dry run first (what would be queued), then the same choice confirmed."""
        _require_write(request)
        run = get_object_or_404(ReconciliationRun.objects.select_related("prefix"), pk=pk)
        form = RepairForm(request.POST or None)
        if request.method != "POST" or not form.is_valid():
            for error in form.errors.get("__all__", []):
                self.message_user(request, error, messages.ERROR)
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

    def rows_csv_view(self, request, pk):
        self._require_view(request)
        run = get_object_or_404(ReconciliationRun, pk=pk)
        rows = run.rows.order_by("kind", "pk").values_list("kind", "full_handle", "server_url", "our_url", "vendor",
                                                           "note", "repair_request_id")
        return _csv_response(f"reconciliation-{run.pk}.csv", ["class", "handle", "server_url", "our_url",
                                                              "vendor", "note", "repair_request"],
                             rows.iterator(chunk_size=5000))


# --- Resolution health -----------------------------------------------------------------------------------
@admin.register(HealthRun)
class HealthRunAdmin(ReadOnlyJobAdmin):
    """The changelist is the health page: shares, trend, failing handles, and the form to check again."""

    def has_add_permission(self, request) -> bool:
        return may_write(request)

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<int:pk>/status.json", wrap(self.status_view), name="handles_repair_healthrun_status"),
            path("failing.csv", wrap(self.failing_csv_view), name="handles_repair_healthrun_failing"),
            path("<int:pk>/cancel/", wrap(self.cancel_view), name="handles_repair_healthrun_cancel"),
        ] + super().get_urls()

    def cancel_view(self, request, pk):
        return self._cancel(request, "health", pk, "admin:handles_repair_healthrun_change")

    def changelist_view(self, request, extra_context=None):
        """The health page: a run's results filtered (by outcome, prefix, source system, vendor or legacy),
        with the handles chosen there repaired or verified through the queue."""
        self._require_view(request)
        filters = HealthResultsFilter(request.GET)
        if not filters.is_valid():
            return _bad_filter(filters)
        data = filters.cleaned_data
        run = HealthRun.objects.get(pk=data["run"]) if data["run"] else selectors.latest_run_with_results()
        results = selectors.health_results(run, outcome=data["outcome"], prefix=data["prefix"],
                                           source=data["source"], origin=data["origin"]) if run else None
        form = HealthCheckForm(request.POST or None) if "_repair" not in request.POST else HealthCheckForm()
        if request.method == "POST":
            _require_write(request)
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

    def _repair(self, request: HttpRequest, results, run) -> HttpResponse:
        back = HttpResponseRedirect(request.get_full_path())
        form = HealthRepairForm(request.POST)
        if results is None or not form.is_valid():
            for error in form.errors.get("__all__", []) or (["There are no health results to act on."]
                                                            if results is None else ["Choose an action."]):
                self.message_user(request, error, messages.ERROR)
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

    def add_view(self, request, form_url="", extra_context=None):
        return HttpResponseRedirect(reverse("admin:handles_repair_healthrun_changelist"))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        self._require_view(request)
        run = get_object_or_404(HealthRun, pk=object_id)
        checks = HandleCheck.objects.filter(run=run).failing().select_related("handle__prefix", "handle__asset")
        page = Paginator(checks.order_by("outcome", "handle_id"), ROWS_PER_PAGE).get_page(request.GET.get("page"))
        return self._page(request, "health_run.html", str(run), run=run, page=page,
                          outcomes=[(o, label, run.counts.get(o, 0)) for o, label in HealthOutcome.choices])

    def status_view(self, request, pk):
        self._require_view(request)
        return job_status(get_object_or_404(HealthRun, pk=pk))

    def failing_csv_view(self, request):
        """The health page's list as CSV: the same filters (a run's results not resolving correctly)."""
        self._require_view(request)
        filters = HealthResultsFilter(request.GET)
        if not filters.is_valid():
            return _bad_filter(filters)
        data = filters.cleaned_data
        run = HealthRun.objects.get(pk=data["run"]) if data["run"] else selectors.latest_run_with_results()
        checks = selectors.health_results(run, outcome=data["outcome"], prefix=data["prefix"], source=data["source"],
                                          origin=data["origin"]) if run else HandleCheck.objects.none()
        rows = ((c.handle.full_handle, c.outcome, c.http_status, c.server_url, c.final_url, c.detail,
                 c.handle.asset.source_system if c.handle.asset else "", c.handle.asset.external_id if c.handle.asset
                 else "", c.handle.asset.title if c.handle.asset else "", c.checked_at.isoformat())
                for c in checks.iterator(chunk_size=2000))
        return _csv_response("handles-not-resolving.csv", ["handle", "outcome", "http_status", "server_url",
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

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_actions(self, request):
        return super().get_actions(request) if may_write(request) else {}

    @admin.action(description="Check the selected handles again")
    def recheck_selected(self, request, queryset):
        run = services.health_start(filters={"handle_ids": list(queryset.order_by().values_list("handle_id", flat=True)
                                                                  .distinct()[:10000])},
                                    actor=request.user)
        log_desk_action(request, [run], "Started a health check of selected handles.", flag=ADDITION)
        return HttpResponseRedirect(reverse("admin:handles_repair_healthrun_change", args=[run.pk]))


# --- Assets with several handles -----------------------------------------------------------------------
@admin.register(AssetWithSeveralHandles)
class AssetWithSeveralHandlesAdmin(admin.ModelAdmin):
    list_display = ["__str__", "source_system", "handle_count", "primary_handle"]
    list_filter = ["source_system"]
    search_fields = ["external_id", "title"]
    show_full_result_count = False

    def get_queryset(self, request):
        return (super().get_queryset(request).annotate(handle_count=Count("handles"))
                .filter(handle_count__gt=1).annotate(primaries=Count("handles", filter=Q(handles__is_primary=True))))

    @admin.display(description="Handles", ordering="handle_count")
    def handle_count(self, obj) -> int:
        return obj.handle_count

    @admin.display(description="Primary handle")
    def primary_handle(self, obj) -> str:
        primary = obj.handles.filter(is_primary=True).select_related("prefix").first()
        return primary.full_handle if primary else "— choose one"

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The asset's handles, primary first, vendor ones flagged; staff choose the primary."""
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        asset = get_object_or_404(self.get_queryset(request), pk=object_id)
        if request.method == "POST":
            _require_write(request)
            handle = get_object_or_404(Handle, pk=request.POST.get("primary"), asset=asset)
            try:
                redirects = core.handle_make_primary(handle=handle, actor=request.user)
            except HandleServiceError as exc:
                self.message_user(request, exc.message, messages.ERROR)
            else:
                log_desk_action(request, [handle], "Made the primary handle of its asset.")
                self.message_user(request, f"{handle} is now the primary handle."
                                  + (f" {counted(len(redirects), 'other handle')} queued to resolve to the same target."
                                     if redirects else " The others already resolve to the same target."),
                                  messages.SUCCESS)
            return HttpResponseRedirect(request.path)
        return render(request, "admin/handles_repair/asset_handles.html", {
            **self.admin_site.each_context(request), "opts": self.model._meta, "title": f"Handles of {asset}",
            "asset": asset, "siblings": selectors.asset_handles(asset), "may_write": may_write(request)})

