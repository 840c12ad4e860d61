"""What the repair app's admin pages share: permissions, the JSON status, CSV, and the job admin base."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Model
from django.forms import BaseForm
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import render
from django.urls import reverse

from handles import jobs
from handles.admin_log import log_desk_action
from handles.exceptions import HandleServiceError
from handles.labels import counted
from handles.repair import services
from handles.repair.csvfile import csv_lines

ROWS_PER_PAGE = 100


def may_write(request: HttpRequest) -> bool:
    return request.user.has_perm("handles.change_handle")


def require_write(request: HttpRequest) -> None:
    if not may_write(request):
        raise PermissionDenied


def job_status(job: jobs.Job) -> JsonResponse:
    """The JSON the progress bars poll: state, done/total, percent, counts, message, error. While an import
    or repair is verifying, done/total are its requests verified on the server of all it queued, and
    `verification` tallies them by status; `finished` is false until it is applied/done or incomplete."""
    return JsonResponse({
        "id": job.pk, "state": job.state, "state_display": job.get_state_display(), "finished": job.finished,
        "done": job.progress_done, "total": job.progress_total, "percent": job.percent, "message": job.message,
        "counts": job.counts, "error": job.error, "verifying": job.state == "verifying",
        "verification": job.verification,
    })


def retry_failed_requests(model_admin: admin.ModelAdmin[Any], request: HttpRequest, retry: Callable[..., int],
                          **job: Any) -> None:
    """Retry the failed requests of an import or repair, and say what happened."""
    try:
        retried = retry(actor=request.user, **job)
    except HandleServiceError as exc:
        model_admin.message_user(request, exc.message, messages.ERROR)
    else:
        log_desk_action(request, job.values(), f"Retried {counted(retried, 'failed request')}.")
        model_admin.message_user(request, f"{counted(retried, 'failed request')} queued again; the job verifies them on "
                                          "the server.", messages.SUCCESS)


def bad_filter(form: BaseForm) -> HttpResponse:
    """A filter value that is not one of its choices: 400 with the reason, never a wider list."""
    problems = "; ".join(f"{name}: {' '.join(map(str, errors))}" for name, errors in form.errors.items())
    return HttpResponseBadRequest(f"Bad filter: {problems}", content_type="text/plain; charset=utf-8")


def csv_response(filename: str, header: list[str], rows: Iterable[Iterable[object]]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(csv_lines(header, rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


class ReadOnlyJobAdmin(admin.ModelAdmin):
    """Jobs are started from their own forms and never edited or deleted by hand."""

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def _require_view(self, request: HttpRequest) -> None:
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied

    def _page(self, request: HttpRequest, template: str, title: str, **context: Any) -> HttpResponse:
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "title": title,
                   "may_write": may_write(request), **context}
        return render(request, f"admin/handles_repair/{template}", context)

    def _cancel(self, request: HttpRequest, kind: str, pk: int, back: str, *back_args: Any) -> HttpResponse:
        """Staff stop a job; it stops at the end of the slice under way, and its page says so."""
        require_write(request)
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
