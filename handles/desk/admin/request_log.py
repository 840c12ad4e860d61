"""The desk's request log: retrying failed requests (the ones selected, or a whole error group from the
failures page; in the request when few, else as a bulk job). It extends the core's request log admin
and registers itself in its place."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.shortcuts import render
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_POST

from handles.admin import HandleRequestAdmin
from handles.admin.common import day_range, form_problems, may_change_handles
from handles.admin_log import ADDITION, log_desk_action
from handles.desk import services as desk_services
from handles.desk.models import BulkJob
from handles.forms import DateRangeForm
from handles.labels import counted
from handles.models import HandleRequest, Prefix
from handles.selectors import capped_count, failed_requests, failure_groups, with_signature

Kind = BulkJob.Kind

admin.site.unregister(HandleRequest)


@admin.register(HandleRequest)
class DeskHandleRequestAdmin(HandleRequestAdmin):
    actions = ["retry_selected", *HandleRequestAdmin.actions]

    @admin.action(description="Retry selected failed requests")
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        failed = queryset.filter(status=HandleRequest.Status.ERROR)
        _, too_many = capped_count(failed, settings.HANDLES_DESK_INLINE_LIMIT)
        if not too_many:
            results = desk_services.bulk_apply(kind=Kind.RETRY, objects=failed.select_related("handle__prefix")
                                               .order_by("pk"), actor=request.user)
            log_desk_action(request, [obj for obj, result in results if result.outcome == "ok"], "Retried.")
            self.message_user(request, f"Retrying {counted(len(results), 'failed request')}; the others were left alone.",
                              messages.SUCCESS)
            return None
        # The ids themselves: exact whatever the list's filters were (an outage is retried from the
        # failures page, whose selection is its error group).
        selection = {"ids": list(failed.order_by("pk").values_list("pk", flat=True))}
        return self._retry_job(request, selection, f"{len(selection['ids'])} selected failed requests")


    def _retry_job(self, request: HttpRequest, selection: dict, description: str) -> HttpResponse:
        job = desk_services.bulk_job_create(kind=Kind.RETRY, selection=selection, description=description,
                                            actor=request.user)
        log_desk_action(request, [job], f"Retry: {description}.", flag=ADDITION)
        self.message_user(request, f"Retry: job #{job.pk} runs in the background.", messages.SUCCESS)
        return HttpResponseRedirect(job.get_absolute_url())

    # --- Failures grouped by error ----------------------------------------------------------------------
    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("failures/", wrap(self.failures_view), name="handles_handlerequest_failures"),
            path("failures/retry/", wrap(require_POST(self.retry_group_view)),
                 name="handles_handlerequest_retry_group"),
        ] + super().get_urls()

    def _failures(self, params: QueryDict) -> tuple[QuerySet[HandleRequest] | None, DateRangeForm, str]:
        """The failed requests the page's filters select, or None (and the form's errors) when a filter
        is invalid: never all failures in place of the ones asked for."""
        form = DateRangeForm(params)
        prefix = params.get("prefix", "")
        if prefix and not (prefix.isascii() and prefix.isdigit() and Prefix.objects.filter(pk=int(prefix)).exists()):
            form.add_error(None, f"There is no prefix with id {prefix!r}.")
        if not form.is_valid():
            return None, form, prefix
        since, until = day_range(form.cleaned_data)
        return failed_requests(prefix_id=int(prefix) if prefix else None, since=since, until=until), form, prefix

    def failures_view(self, request: HttpRequest) -> HttpResponse:
        """Failed requests grouped by their error with the handle-specific parts taken out: one outage is
        one row, retried with one button."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        requests, form, prefix = self._failures(request.GET)
        groups = failure_groups(requests) if requests is not None else []
        return render(request, "admin/handles/handlerequest/failures.html", status=200 if requests is not None
                      else 400, context={
            **self.admin_site.each_context(request), "title": "Failed requests, grouped by error",
            "opts": self.model._meta, "groups": groups, "form": form, "prefix": prefix,
            "prefixes": Prefix.objects.order_by("prefix"), "may_retry": may_change_handles(request),
            "query": request.GET.urlencode(),
        })

    def retry_group_view(self, request: HttpRequest) -> HttpResponse:
        if not may_change_handles(request):
            raise PermissionDenied
        requests, form, prefix = self._failures(request.POST)
        if requests is None:
            self.message_user(request, f"Nothing was retried: {form_problems(form)}", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:handles_handlerequest_failures"))
        signature = request.POST.get("signature", "")
        group = with_signature(requests, signature) if signature else requests
        _, too_many = capped_count(group, settings.HANDLES_DESK_INLINE_LIMIT)
        if too_many:
            since, until = day_range(form.cleaned_data)
            selection = {"filters": {"prefix": prefix, "signature": signature,
                                     "since": since.isoformat() if since else None,
                                     "until": until.isoformat() if until else None}}
            return self._retry_job(request, selection, f"failed requests: {signature[:200] or 'all'}")
        results = desk_services.bulk_apply(kind=Kind.RETRY, objects=group.select_related("handle__prefix")
                                           .order_by("pk"), actor=request.user)
        log_desk_action(request, [obj for obj, result in results if result.outcome == "ok"], "Retried.")
        self.message_user(request, f"Retrying {counted(len(results), 'failed request')}.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:handles_handlerequest_failures") + "?" + request.POST.get(
            "query", ""))
