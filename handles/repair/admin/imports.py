"""Admin pages of import presets, imports (upload, mapping, dry run, apply, conflicts) and assets with several handles."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, Model, Q, QuerySet
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
)
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, render
from django.urls import URLPattern, path, reverse

from handles import services as core
from handles.admin_log import ADDITION, log_desk_action
from handles.exceptions import HandleServiceError
from handles.labels import LabelledFieldsAdmin, counted
from handles.models import Handle
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
from handles.repair.conflicts import conflict_groups
from handles.repair.csvfile import ImportFileError
from handles.repair.forms import (
    ConflictForm,
    ImportPresetForm,
    MappingForm,
    UploadForm,
)
from handles.repair.models import (
    MAPPING_FIELDS,
    AssetWithSeveralHandles,
    ImportBatch,
    ImportPreset,
    ImportRow,
)


# --- Presets ---------------------------------------------------------------------------------------------
@admin.register(ImportPreset)
class ImportPresetAdmin(LabelledFieldsAdmin, admin.ModelAdmin):
    form = ImportPresetForm
    list_display = ["name", "handle_column", "external_id_column", "url_column", "prefix", "source_system", "mode"]
    readonly_fields = ["created_by", "created_at", "updated_at"]

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
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

    def has_add_permission(self, request: HttpRequest) -> bool:
        return may_write(request)

    def get_urls(self) -> list[URLPattern]:
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

    def cancel_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        return self._cancel(request, "import", pk, "admin:handles_repair_importbatch_change")

    def add_view(self, request: HttpRequest, form_url: str = "",
                 extra_context: dict[str, Any] | None = None) -> HttpResponse:
        """Step 1: upload. A file whose header cannot be read is refused here, with the reason."""
        require_write(request)
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

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
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
                require_write(request)
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

    def status_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        self._require_view(request)
        return job_status(get_object_or_404(ImportBatch, pk=pk))

    def report_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        self._require_view(request)
        batch = get_object_or_404(ImportBatch, pk=pk)
        rows = batch.rows.order_by("line").values_list("line", "handle_text", "outcome", "reason", "target_url",
                                                       "source_system", "external_id", "title", "vendor", "primary")
        return csv_response(f"import-{batch.pk}-report.csv", ["line", "handle", "outcome", "reason", "target_url",
                                                               "source_system", "external_id", "title", "vendor",
                                                               "primary"], rows.iterator(chunk_size=5000))

    def apply_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        return self._batch_step(request, pk, services.import_batch_start_apply, "Applied.")

    def continue_push_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        return self._batch_step(request, pk, services.import_batch_continue_push, "Continued pushing.")

    def _batch_step(self, request: HttpRequest, pk: int, start: Callable[..., object], logged: str) -> HttpResponseBase:
        """A POST that starts one step of an import through its service, then back to the import's page."""
        require_write(request)
        batch = get_object_or_404(ImportBatch, pk=pk)
        if request.method == "POST":
            try:
                start(batch=batch, actor=request.user)
            except HandleServiceError as exc:
                self.message_user(request, exc.message, messages.ERROR)
            else:
                log_desk_action(request, [batch], logged)
        return HttpResponseRedirect(reverse("admin:handles_repair_importbatch_change", args=[pk]))

    def conflicts_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        """Handles the file cites for several records: both records, where the server resolves the handle
        now, and the choice of the record that keeps it (the others flagged, or given new handles)."""
        self._require_view(request)
        batch = get_object_or_404(ImportBatch.objects.defer("content"), pk=pk)
        if request.method == "POST":
            require_write(request)
            form = ConflictForm(request.POST)
            if "_read_server" in request.POST:
                services.import_conflict_start_read(batch=batch)
                self.message_user(request, "The conflicting handles are read from the server again, in the "
                                           "background; reload this page in a moment.", messages.SUCCESS)
            elif not form.is_valid():
                for errors in form.errors.values():
                    for error in errors:
                        self.message_user(request, str(error), messages.ERROR)
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

    def retry_failed_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        require_write(request)
        batch = get_object_or_404(ImportBatch.objects.defer("content"), pk=pk)
        if request.method == "POST":
            retry_failed_requests(self, request, services.import_batch_retry_failed, batch=batch)
        return HttpResponseRedirect(reverse("admin:handles_repair_importbatch_change", args=[pk]))



# --- Assets with several handles -----------------------------------------------------------------------
@admin.register(AssetWithSeveralHandles)
class AssetWithSeveralHandlesAdmin(admin.ModelAdmin):
    list_display = ["__str__", "source_system", "handle_count", "primary_handle"]
    list_filter = ["source_system"]
    search_fields = ["external_id", "title"]
    show_full_result_count = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[AssetWithSeveralHandles]:
        return (super().get_queryset(request).annotate(handle_count=Count("handles"))
                .filter(handle_count__gt=1).annotate(primaries=Count("handles", filter=Q(handles__is_primary=True))))

    @admin.display(description="Handles", ordering="handle_count")
    def handle_count(self, obj: Any) -> int:
        return obj.handle_count

    @admin.display(description="Primary handle")
    def primary_handle(self, obj: Any) -> str:
        primary = obj.handles.filter(is_primary=True).select_related("prefix").first()
        return primary.full_handle if primary else "— choose one"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        """The asset's handles, primary first, vendor ones flagged; staff choose the primary."""
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        asset = get_object_or_404(self.get_queryset(request), pk=object_id)
        if request.method == "POST":
            require_write(request)
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
