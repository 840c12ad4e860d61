"""Bulk jobs (progress page, JSON status, CSV report, cancel) and collections, in the admin."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from handles.admin_log import log_desk_action
from handles.desk import exports, services
from handles.desk.models import BulkJob, BulkJobItem, Collection
from handles.exceptions import HandleServiceError
from handles.jobs import WAITING, JobState
from handles.labels import LabelledFieldsAdmin, counted


def job_status(job: BulkJob) -> dict:
    """The progress page polls this. `succeeded` counts the handles whose request was queued; what became
    of those requests is `verification` (success alone is verified on the server). While the job is
    verifying, `percent` is the share verified and `finished` is false."""
    return {
        "id": job.pk, "kind": job.kind, "state": job.state, "state_display": job.get_state_display(),
        "finished": job.finished, "total": job.progress_total, "done": job.progress_done, "succeeded": job.succeeded,
        "skipped": job.skipped, "failed": job.failed, "percent": job.percent, "error": job.error,
        "verification": job.verification, "cancel_requested": job.cancel_requested,
        "report_url": reverse("admin:handles_desk_bulkjob_report", args=[job.pk]),
        "selection": selection_note(job),
    }


def selection_note(job: BulkJob) -> str:
    """Which handles the job acts on: those the selection held when it was confirmed, and how many of them
    stopped matching before the job reached them (skipped, left unchanged)."""
    if job.on_requests or "ids" not in job.selection:
        return ""
    note = f"Acts on the {counted(len(job.selection['ids']), 'handle')} the selection held when the job was confirmed"
    if job.selection.get("preview_count") is not None:
        note += f" (its preview showed {job.selection['preview_count']})"
    gone = job.items.filter(outcome=BulkJobItem.Outcome.SKIPPED,
                            message__startswith=services.NO_LONGER_MATCHES).count()
    if gone:
        note += (f"; {gone} of them no longer matched when the job reached {'it' if gone == 1 else 'them'} and "
                 f"{'was' if gone == 1 else 'were'} left unchanged")
    return note + "."


@admin.register(BulkJob)
class BulkJobAdmin(admin.ModelAdmin):
    list_display = ["__str__", "description", "state_label", "progress", "created_by", "created_at", "finished_at"]
    list_filter = ["state", "kind"]
    ordering = ["-pk"]
    show_full_result_count = False
    change_form_template = "admin/handles_desk/bulkjob/change_form.html"
    view_on_site = False
    readonly_fields = ["kind", "description", "parameters", "state", "progress_total", "progress_done", "succeeded",
                       "skipped", "failed", "verification", "error", "created_by", "created_at", "started_at",
                       "finished_at"]
    fields = tuple(readonly_fields)

    @admin.display(description="Progress")
    def progress(self, obj: BulkJob) -> str:
        if obj.verification:  # verifying or settled: how many of its requests the server confirmed
            return format_html('<progress max="100" value="{}"></progress> {} / {} verified', obj.percent,
                               obj.verification.get("success", 0), sum(obj.verification.values()))
        total = obj.progress_total if obj.progress_total is not None else "?"
        return format_html('<progress max="100" value="{}"></progress> {} / {}', obj.percent, obj.progress_done, total)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # jobs are started by the handle list's actions

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False  # a job's report is part of the history

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        job = self.get_object(request, object_id)
        context = {"show_save": False, "show_save_and_continue": False, "show_save_and_add_another": False,
                   "show_delete": False, **(extra_context or {})}
        if job is not None:
            may_change = request.user.has_perm("handles_desk.change_bulkjob")
            context.update(
                status=job_status(job),
                may_cancel=may_change and job.state in WAITING,
                may_retry=may_change and job.state in (JobState.VERIFYING, JobState.INCOMPLETE)
                and job.verification.get("error", 0) > 0,
                problems=list(job.items.exclude(outcome=BulkJobItem.Outcome.OK).order_by("key")[:20]),
            )
        return super().change_view(request, object_id, form_url, extra_context=context)

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("<int:pk>/status/", wrap(self.status_view), name="handles_desk_bulkjob_status"),
            path("<int:pk>/report.csv", wrap(self.report_view), name="handles_desk_bulkjob_report"),
            path("<int:pk>/cancel/", wrap(require_POST(self.cancel_view)), name="handles_desk_bulkjob_cancel"),
            path("<int:pk>/retry-failed/", wrap(require_POST(self.retry_failed_view)),
                 name="handles_desk_bulkjob_retry_failed"),
        ] + super().get_urls()

    def _job(self, request: HttpRequest, pk: int) -> BulkJob:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return get_object_or_404(BulkJob, pk=pk)

    def status_view(self, request: HttpRequest, pk: int) -> JsonResponse:
        return JsonResponse(job_status(self._job(request, pk)))

    def report_view(self, request: HttpRequest, pk: int) -> StreamingHttpResponse:
        job = self._job(request, pk)
        return exports.csv_response(f"job-{job.pk}-{job.kind}.csv", exports.job_report_rows(job))

    def cancel_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        job = self._job(request, pk)
        if not self.has_change_permission(request, job):
            raise PermissionDenied
        try:
            services.bulk_job_cancel(job=job, actor=request.user)
        except HandleServiceError as exc:
            self.message_user(request, exc.message, messages.WARNING)
        else:
            log_desk_action(request, [job], "Cancelled.")
            self.message_user(request, f"{job} stops after its current chunk.", messages.SUCCESS)
        return HttpResponseRedirect(job.get_absolute_url())

    def retry_failed_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        job = self._job(request, pk)
        if not self.has_change_permission(request, job):
            raise PermissionDenied
        try:
            retried = services.bulk_job_retry_failed(job=job, actor=request.user)
        except HandleServiceError as exc:
            self.message_user(request, exc.message, messages.WARNING)
        else:
            log_desk_action(request, [job], f"Retried {counted(retried, 'failed request')}.")
            self.message_user(request, f"{counted(retried, 'failed request')} queued again; the job verifies them on the "
                                       "server.", messages.SUCCESS)
        return HttpResponseRedirect(job.get_absolute_url())


@admin.register(Collection)
class CollectionAdmin(LabelledFieldsAdmin, admin.ModelAdmin):
    list_display = ["name", "source_system", "external_id_prefix", "url_prefix", "browse_link"]
    search_fields = ["name"]
    fields = ["name", "source_system", "external_id_prefix", "url_prefix", "description"]

    @admin.display(description="Handles")
    def browse_link(self, obj: Collection) -> str:
        return format_html('<a href="{}?collection={}">browse</a>', reverse("desk:browse"), obj.pk)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        services.collection_save(collection=obj)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        services.collection_delete(collection=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for collection in queryset:
            services.collection_delete(collection=collection)
