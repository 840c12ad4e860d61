"""The desk's Handle list: its filters (the one handle filter, handles.desk.filters.DESK), the sync state
column, and the actions on a selection (in the request when small, else a bulk job with a progress
page). It extends the core's HandleAdmin and registers itself in its place."""

from __future__ import annotations

from collections import Counter
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import ModelAdmin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.views.main import ERROR_FLAG
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils.http import urlencode

from handles.admin import HandleAdmin
from handles.admin.common import badge, refuse
from handles.admin.handle import SYNC_FIELDSET
from handles.admin_log import ADDITION, log_desk_action
from handles.desk import services as desk_services
from handles.desk.filters import DESK, InvalidFilter, Selection
from handles.desk.forms import RedirectRuleForm
from handles.desk.models import BulkJob
from handles.desk.selectors import (
    health_of,
    redirect_rule_matches,
    redirect_rule_preview,
    selection_digest,
    selection_ids,
    with_health,
)
from handles.exceptions import HandleServiceError
from handles.forms import ConfirmForm, TombstoneForm
from handles.labels import counted
from handles.models import Handle
from handles.selectors import capped_count, open_failures_of

Kind = BulkJob.Kind


# --- List filters: each one filter of DESK ---------------------------------------------------------------
def _selected(request: HttpRequest, queryset: QuerySet, params: dict) -> QuerySet:
    """The handles the filter parameters select, or the admin's refusal of an invalid value (?e=1 and the
    reason as a message): the list never shows more handles than were asked for."""
    try:
        return DESK.parse(params).queryset(queryset)
    except InvalidFilter as exc:
        refuse(request, str(exc))


class DeskListFilter(admin.SimpleListFilter):
    """A list filter that is one filter of DESK, so the admin list, the browse pages, CSV exports and bulk
    jobs select exactly the same handles for the same query string."""

    parameter_name: str  # every subclass names its parameter

    def has_output(self) -> bool:
        # With a value given, the filter must run even when it offers no choice (no collection yet):
        # the admin would otherwise drop the parameter and list every handle.
        return self.value() is not None or super().has_output()

    def lookups(self, request: HttpRequest, model_admin: ModelAdmin[Any]) -> list[tuple[Any, str]]:
        return DESK.choices(self.parameter_name)

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return _selected(request, queryset, {self.parameter_name: value}) if value else queryset


def _list_filter(name: str) -> type[DeskListFilter]:
    attributes = {"title": DESK.filters[name].label.lower(), "parameter_name": name}
    return type(f"{name.capitalize()}ListFilter", (DeskListFilter,), attributes)


def list_selection(request: HttpRequest) -> Selection:
    """The list's filters from its query string (the admin's own parameters, sorting and page, left out)."""
    return DESK.parse({name: request.GET.getlist(name) for name in DESK.filters if name in request.GET})


admin.site.unregister(Handle)


@admin.register(Handle)
class DeskHandleAdmin(HandleAdmin):
    list_display = [*HandleAdmin.list_display[:3], "health", *HandleAdmin.list_display[3:]]
    list_filter = [_list_filter(name) for name in ("prefix", "status", "sync", "source", "collection", "health")]
    fieldsets = [(name, {**options, "fields": ["health", *options["fields"]]}) if name == SYNC_FIELDSET
                 else (name, options) for name, options in HandleAdmin.fieldsets]
    readonly_fields = [*HandleAdmin.readonly_fields, "health"]
    actions = ["verify_selected", "retry_selected", "redirect_rule_selected", "tombstone_selected",
               "restore_selected", "delete_selected_handles"]

    def changelist_view(self, request: HttpRequest,
                        extra_context: dict[str, Any] | None = None) -> HttpResponse:
        # The export and browse links carry the list's filters only: /browse/ refuses the admin's own
        # parameters (sorting, page), as it refuses any parameter it does not know.
        try:
            query = urlencode(list_selection(request).as_params())
        except InvalidFilter as exc:
            # Refused here, as a whole, before the admin reads the query: the admin would list every
            # handle for a search term it cannot read (a NUL), with no more than a message.
            messages.error(request, f"The list's filter was refused: {exc}")
            return HttpResponseRedirect(f"{request.path}?{ERROR_FLAG}=1")
        return super().changelist_view(request, {"filter_query": query, **(extra_context or {})})

    def get_queryset(self, request: HttpRequest) -> QuerySet[Handle]:
        return with_health(super().get_queryset(request))

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
                           ) -> tuple[QuerySet[Any], bool]:
        return _selected(request, queryset, {"q": search_term}), False

    @admin.display(description="Sync")
    def health(self, obj: Handle) -> str:
        state = health_of(obj)
        return badge(state.state, state.label, state.detail)

    def _history_context(self, handle: Handle) -> dict:
        return {**super()._history_context(handle), "handle_health": health_of(handle)}

    # --- Actions on a selection -------------------------------------------------------------------------
    def _selection(self, request: HttpRequest) -> dict:
        """The selection as a bulk job stores it: the ids ticked, or the list's filters ("select all")."""
        if request.POST.get("select_across") == "1":
            return {"filters": list_selection(request).as_params()}
        return {"ids": [int(pk) for pk in request.POST.getlist(ACTION_CHECKBOX_NAME) if pk.isdigit()]}

    def _describe(self, request: HttpRequest, selection: dict) -> str:
        if "ids" in selection:
            return f"{counted(len(selection['ids']), 'selected handle')}"
        return list_selection(request).describe()

    def _preview_changed(self, request: HttpRequest, objects: QuerySet) -> str:
        """Why the confirmation cannot act: the selection no longer holds exactly the handles its preview
        showed ('' when it does, or when nothing was previewed)."""
        shown = request.POST.get("preview_digest", "")
        if not shown:
            return ""
        ids = selection_ids(objects)
        if selection_digest(ids) == shown:
            return ""
        return (f"The selection changed since the preview: it held {request.POST.get('preview_count', '?')} "
                f"then and holds {counted(len(ids), 'handle')} now. Nothing was done: check the list below and "
                "confirm again.")

    def _run(self, request: HttpRequest, queryset: QuerySet, kind: str, verb: str,
             parameters: dict | None = None, objects: QuerySet | None = None) -> HttpResponse | None:
        """In the request when the selection is small; otherwise as a background job with a progress page."""
        objects = queryset if objects is None else objects
        _, too_many = capped_count(objects, settings.HANDLES_DESK_INLINE_LIMIT)
        try:
            if not too_many:
                results = desk_services.bulk_apply(kind=kind, objects=objects.order_by("pk"), parameters=parameters,
                                                   actor=request.user)
                log_desk_action(request, [obj for obj, result in results if result.outcome == "ok"], f"{verb}.")
                self._report(request, verb, results)
                return None
            selection = self._selection(request)
            description = self._describe(request, selection)
            if kind == Kind.RETRY:  # the failed requests of the selected handles
                selection = {"filters": {"handle_filters": selection.get("filters", {}),
                                         "handle_ids": selection.get("ids")}}
            else:
                # Exactly the handles selected now, fixed for the job; with the list's filters, so a handle
                # that stops matching before the job reaches it is skipped and reported, not changed.
                ids = selection_ids(objects)
                selection = {"ids": ids, "filters": list_selection(request).as_params()}
                if request.POST.get("preview_count", "").isdigit():
                    selection["preview_count"] = int(request.POST["preview_count"])
                description = f"{counted(len(ids), 'handle')}: {description}"
            job = desk_services.bulk_job_create(kind=kind, selection=selection, parameters=parameters,
                                                description=description, actor=request.user)
            log_desk_action(request, [job], f"{verb}: {description}.", flag=ADDITION)
        except HandleServiceError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return None
        self.message_user(request, f"{verb}: job #{job.pk} runs in the background; this page shows its progress.",
                          messages.SUCCESS)
        return HttpResponseRedirect(job.get_absolute_url())

    def _report(self, request: HttpRequest, verb: str, results: list) -> None:
        counts = Counter(result.outcome for _, result in results)
        summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) or "nothing to do"
        level = messages.SUCCESS if not counts.get("failed") else messages.WARNING
        self.message_user(request, f"{verb}: {summary} (ok = request queued).", level)
        refused = [result.message for _, result in results if result.outcome != "ok" and result.message]
        for message in refused[:10]:
            self.message_user(request, message, messages.WARNING)
        if len(refused) > 10:
            self.message_user(request, f"… and {len(refused) - 10} more.", messages.WARNING)

    def _confirm(self, request: HttpRequest, queryset: QuerySet[Handle], action: str, verb: str,
                 form: forms.Form, template: str = "admin/handles/handle/confirm_selection.html",
                 **context: Any) -> HttpResponse:
        ids = selection_ids(queryset)
        count = len(ids)
        return self._page(
            request, template, f"{verb} {counted(count, 'handle')}?", form=form, count=count, action=action, verb=verb,
            preview_count=count, preview_digest=selection_digest(ids),
            handles=list(queryset.select_related("prefix").order_by("pk")[:100]),
            selected=request.POST.getlist(ACTION_CHECKBOX_NAME), select_across=request.POST.get("select_across", "0"),
            inline_limit=settings.HANDLES_DESK_INLINE_LIMIT, **context)

    @admin.action(description="Verify selected handles against the server now")
    def verify_selected(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        return self._run(request, queryset, Kind.VERIFY, "Verify")

    @admin.action(description="Retry the failed requests of selected handles")
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        return self._run(request, queryset, Kind.RETRY, "Retry", objects=open_failures_of(queryset)
                         .select_related("handle__prefix"))

    @admin.action(description="Restore selected tombstoned handles")
    def restore_selected(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        return self._run(request, queryset, Kind.RESTORE, "Restore")

    @admin.action(description="Redirect selected handles by find and replace…")
    def redirect_rule_selected(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        bound = any(step in request.POST for step in ("_preview", "confirm", "_edit"))
        form = RedirectRuleForm(request.POST if bound else None)
        if bound and "_edit" not in request.POST and form.is_valid():
            find, replace = form.cleaned_data["find"], form.cleaned_data["replace"]
            matches = redirect_rule_matches(queryset, find)
            changed = self._preview_changed(request, matches) if "confirm" in request.POST else ""
            if "confirm" in request.POST and not changed:
                return self._run(request, queryset, Kind.REDIRECT_RULE, "Redirect by find and replace",
                                 parameters={"find": find, "replace": replace}, objects=matches)
            return self._confirm(request, matches, "redirect_rule_selected", "Redirect", form,
                                 template="admin/handles/handle/redirect_rule.html",
                                 examples=redirect_rule_preview(queryset, find, replace), selection_count=queryset.count(),
                                 find=find, replace=replace, changed=changed)
        return self._confirm(request, queryset, "redirect_rule_selected", "Redirect", form,
                             template="admin/handles/handle/redirect_rule.html", examples=None)

    @admin.action(description="Tombstone selected handles…")
    def tombstone_selected(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        form = TombstoneForm(request.POST if "confirm" in request.POST else None)
        changed = self._preview_changed(request, queryset) if form.is_bound and form.is_valid() else ""
        if form.is_bound and form.is_valid() and not changed:
            return self._run(request, queryset, Kind.TOMBSTONE, "Tombstone", parameters=form.cleaned_data)
        return self._confirm(request, queryset, "tombstone_selected", "Tombstone", form, changed=changed)

    @admin.action(description="Delete selected handles from the Handle server…")
    def delete_selected_handles(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        form = ConfirmForm(request.POST if "confirm" in request.POST else None)
        changed = self._preview_changed(request, queryset) if form.is_bound and form.is_valid() else ""
        if form.is_bound and form.is_valid() and not changed:
            return self._run(request, queryset, Kind.DELETE, "Delete", parameters=form.cleaned_data)
        return self._confirm(request, queryset, "delete_selected_handles", "Delete", form, changed=changed)

