"""The handle desk for staff: declarative ModelAdmins whose actions and pages parse input, call a service
and report. Nothing here writes a model: every change goes through handles.services (one HandleRequest
per handle) or, for many handles at once, through a background job of handles.desk.services.

Lists stay fast at a million handles: searches and filters come from handles.desk.selectors (shaped for
the indexes of migration handles_desk.0002), counts are capped (CappedCountPaginator) and sortable columns
are the indexed ones.
"""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Callable
from urllib.parse import urlencode

from django.apps import apps
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from handles import services
from handles.admin_log import ADDITION, log_desk_action
from handles.citation import citation_url
from handles.connection_check import check_connection
from handles.desk import services as desk_services
from handles.desk.forms import DateRangeForm, RedirectRuleForm
from handles.desk.models import BulkJob, Collection
from handles.desk.selectors import (
    CappedCountPaginator,
    HandleFilter,
    InvalidFilter,
    SyncState,
    capped_count,
    failed_requests,
    failure_groups,
    health_choices,
    health_of,
    open_failures_of,
    redirect_rule_matches,
    redirect_rule_preview,
    request_search,
    selection_digest,
    selection_ids,
    source_systems,
    with_health,
    with_signature,
)
from handles.exceptions import HandleServiceError
from handles.forms import ConfirmForm, MintForm, RedirectForm, TombstoneForm
from handles.labels import LabelledFieldsAdmin, counted
from handles.models import Asset, Handle, HandleRequest, Prefix

Kind = BulkJob.Kind
HISTORY_ROWS = 200  # the handle page shows this many latest requests; the request log has them all


def _may_change_handles(request: HttpRequest) -> bool:
    return request.user.has_perm("handles.change_handle")


def _badge(state: str, label: str, title: str = "") -> str:
    return format_html('<span class="hd-badge hd-{}" title="{}">{}</span>', state, title, label)


# --- Prefixes and assets ------------------------------------------------------------------------------
class SuperuserOnlyAdmin(admin.ModelAdmin):
    """Prefixes hold the Handle server configuration: superusers manage them, staff may look."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # a prefix with handles must never disappear


@admin.register(Prefix)
class PrefixAdmin(LabelledFieldsAdmin, SuperuserOnlyAdmin):
    list_display = ["prefix", "site_name", "is_default", "server_url_column", "suffix_policy", "asset_delete_action",
                    "last_contact", "authentication"]
    readonly_fields = ["last_contact_at", "last_contact_ok", "last_contact_error", "authentication"]
    # Handle servers are reached over HTTPS; a bare host name in the form means https (as Django 6 will).
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    fieldsets = [
        (None, {"fields": ["prefix", "site_name", "is_default"]}),
        ("Handle server", {"fields": ["server_url", "auth_identity", "secret_env_var", "tls_mode",
                                      "pinned_certificate", "client_cert_path", "client_key_path"]}),
        ("New handles", {"fields": ["hs_admin_handle", "hs_admin_index", "hs_admin_permissions", "suffix_policy",
                                    "suffix_length", "suffix_alphabet", "asset_delete_action"]}),
        ("Imports and repairs", {"fields": ["url_template", "vendor_suffix_pattern"]}),
        ("Last contact with the server", {"fields": ["last_contact_at", "last_contact_ok", "last_contact_error",
                                                     "authentication"]}),
    ]

    @admin.display(description="Server URL", ordering="server_url")
    def server_url_column(self, obj: Prefix) -> str:
        return obj.server_url

    @admin.display(description="Authentication")
    def authentication(self, obj: Prefix) -> str:
        """While the server refuses our credentials: since when, why, and the requests that wait."""
        if obj is None or obj.pk is None or not obj.auth_failing:
            return _badge("in_sync", "ok")
        obj.waiting = HandleRequest.objects.paused().filter(handle__prefix_id=obj.pk).count()
        return render_to_string("admin/handles/prefix/auth_failing.html", {"p": obj})

    @admin.display(description="Last contact")
    def last_contact(self, obj: Prefix) -> str:
        if obj.last_contact_at is None:
            return _badge("pending", "never")
        when = timezone.localtime(obj.last_contact_at).strftime("%Y-%m-%d %H:%M")
        if obj.last_contact_ok:
            return _badge("in_sync", f"ok {when}")
        return _badge("error", f"failed {when}", obj.last_contact_error)

    def save_model(self, request, obj, form, change):
        services.prefix_save(prefix=obj)

    change_form_template = "admin/handles/prefix/change_form.html"

    def get_urls(self):
        own = [path("<int:pk>/check-connection/", self.admin_site.admin_view(self.check_connection_view),
                    name="handles_prefix_check_connection")]
        return own + super().get_urls()

    def check_connection_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """GET explains the check; POST runs it and shows the report. For those who may change handles: it
        creates, changes and deletes a scratch handle on the server."""
        if not _may_change_handles(request):
            raise PermissionDenied
        prefix = get_object_or_404(Prefix, pk=pk)
        report = check_connection(prefix) if request.method == "POST" else None
        context = {**self.admin_site.each_context(request), "title": f"Check connection: {prefix.prefix}",
                   "opts": self.model._meta, "original": prefix, "report": report}
        return render(request, "admin/handles/prefix/check_connection.html", context)


class SourceSystemFilter(admin.SimpleListFilter):
    title = "source system"
    parameter_name = "source_system"

    def lookups(self, request, model_admin):
        return [(s, s) for s in source_systems()]

    def queryset(self, request, queryset):
        return queryset.filter(source_system=self.value()) if self.value() else queryset


@admin.register(Asset)
class AssetAdmin(LabelledFieldsAdmin, admin.ModelAdmin):
    list_display = ["source_system", "external_id", "title", "state", "handle_count"]
    list_filter = [SourceSystemFilter, "state"]
    search_fields = ["external_id", "title"]
    search_help_text = "External id or title (contains, case-insensitive)."
    readonly_fields = ["created_at", "updated_at"]
    paginator = CappedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    ordering = ["-pk"]

    def get_queryset(self, request):
        # A count per row shown, not a GROUP BY over every handle.
        handles = Handle.objects.filter(asset=OuterRef("pk")).order_by().values("asset").annotate(n=Count("pk"))
        return super().get_queryset(request).annotate(n_handles=Subquery(handles.values("n")))

    @admin.display(description="Handles")
    def handle_count(self, obj: Asset) -> str:
        url = reverse("admin:handles_handle_changelist") + f"?q={obj.source_system}:{obj.external_id}"
        return format_html('<a href="{}">{}</a>', url, obj.n_handles or 0)

    def save_model(self, request, obj, form, change):
        services.asset_save(asset=obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # assets are marked deleted, never removed: their handles must keep their history


def _check_history(handle: Handle) -> list:
    """The handle's resolution checks, one per health run that checked it (latest first)."""
    if not apps.is_installed("handles.repair"):
        return []
    from handles.repair.selectors import check_history

    return check_history(handle)


# --- Handles: list filters ----------------------------------------------------------------------------
class _HandleFilter(admin.SimpleListFilter):
    """A filter named after a HandleFilter field, so the admin list, the browse pages, CSV exports and
    bulk jobs select exactly the same handles for the same query string."""

    def has_output(self) -> bool:
        # With a value given, the filter must run even when it offers no choice (no collection yet):
        # the admin would otherwise drop the parameter and list every handle.
        return self.value() is not None or super().has_output()

    def queryset(self, request, queryset):
        value = self.value()
        return _filtered(request, queryset, HandleFilter(**{self.parameter_name: value})) if value else queryset


def _filtered(request: HttpRequest, queryset: QuerySet, handle_filter: HandleFilter) -> QuerySet:
    """The admin's convention for an invalid lookup (IncorrectLookupParameters: the list redirects to
    ?e=1), with the reason as a message: the list never shows more handles than were asked for."""
    try:
        return handle_filter.apply(queryset)
    except InvalidFilter as exc:
        messages.error(request, f"The list's filter was refused: {exc}")
        raise IncorrectLookupParameters(str(exc)) from exc


class PrefixFilter(_HandleFilter):
    title = "prefix"
    parameter_name = "prefix"

    def lookups(self, request, model_admin):
        return [(str(p.pk), p.prefix) for p in Prefix.objects.order_by("prefix")]


class StatusFilter(_HandleFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return Handle.Status.choices


class SyncFilter(_HandleFilter):
    title = "sync with the server"
    parameter_name = "sync"

    def lookups(self, request, model_admin):
        return SyncState.CHOICES


class SourceFilter(_HandleFilter):
    title = "asset source"
    parameter_name = "source"

    def lookups(self, request, model_admin):
        return [(s, s) for s in source_systems()]


class LastHealthFilter(_HandleFilter):
    title = "latest health check"
    parameter_name = "health"

    def lookups(self, request, model_admin):
        return health_choices()


class CollectionFilter(_HandleFilter):
    title = "collection"
    parameter_name = "collection"

    def lookups(self, request, model_admin):
        return [(str(c.pk), c.name) for c in Collection.objects.order_by("name")]


class HandleChangeList(ChangeList):
    def get_ordering(self, request, queryset):
        """Sorting by handle uses the (prefix, suffix_key) unique index instead of sorting every row."""
        expanded = []
        for field in super().get_ordering(request, queryset):
            if field in ("suffix_key", "-suffix_key"):
                expanded += [field.replace("suffix_key", "prefix_id"), field]
            else:
                expanded.append(field)
        return expanded


# --- Handles ------------------------------------------------------------------------------------------
@admin.register(Handle)
class HandleAdmin(LabelledFieldsAdmin, admin.ModelAdmin):
    list_display = ["full_handle_display", "target_link", "status_badge", "health", "asset_display", "updated_at"]
    list_filter = [PrefixFilter, StatusFilter, SyncFilter, SourceFilter, CollectionFilter, LastHealthFilter]
    # Assets are fetched for the rows shown (prefetch), not joined: a join makes PostgreSQL weigh reading
    # every asset whenever it misjudges how many handles a filter keeps.
    list_select_related = ["prefix"]
    search_fields = ["suffix_key"]  # shows the search box; get_search_results does the searching
    search_help_text = ("A full handle (20.500.14725/x7kq2m, hdl:..., https://hdl.handle.net/...), part of a "
                        "suffix or URL, an asset's title or id (dams:node-1001). Case-insensitive.")
    ordering = ["-updated_at"]
    paginator = CappedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 50
    fieldsets = [
        (None, {"fields": ["full_handle_display", "status_badge", "target_link", "resolver_link", "asset_display"]}),
        ("Withdrawal", {"fields": ["tombstone_reason", "successor_link", "tombstoned_at", "deleted_at"]}),
        ("Sync with the Handle server", {"fields": ["health", "version", "synced_version", "synced_at"]}),
        ("Record", {"fields": ["is_primary", "created_by", "created_at", "updated_at"]}),
    ]
    readonly_fields = ["full_handle_display", "status_badge", "target_link", "resolver_link", "asset_display",
                       "tombstone_reason", "successor_link", "tombstoned_at", "deleted_at", "health", "version",
                       "synced_version", "synced_at", "is_primary", "created_by", "created_at", "updated_at"]
    actions = ["verify_selected", "retry_selected", "redirect_rule_selected", "tombstone_selected",
               "restore_selected", "delete_selected_handles"]
    change_form_template = "admin/handles/handle/change_form.html"

    def get_changelist(self, request, **kwargs):
        return HandleChangeList

    def changelist_view(self, request, extra_context=None):
        # The export and browse links carry the list's filters only: /browse/ refuses the admin's own
        # parameters (sorting, page), as it refuses any parameter it does not know.
        query = urlencode(HandleFilter.from_params(request.GET).as_params())
        return super().changelist_view(request, {"filter_query": query, **(extra_context or {})})

    def get_queryset(self, request):
        return with_health(super().get_queryset(request)).prefetch_related("asset")

    def get_search_results(self, request, queryset, search_term):
        return _filtered(request, queryset, HandleFilter(q=search_term.strip())), False

    # --- Columns ------------------------------------------------------------------------------------
    @admin.display(description="Handle", ordering="suffix_key")
    def full_handle_display(self, obj: Handle) -> str:
        return obj.full_handle

    @admin.display(description="Successor URL")
    def successor_link(self, obj: Handle) -> str:
        return format_html('<a href="{0}" rel="noreferrer nofollow">{0}</a>', obj.successor_url) if obj.successor_url else "-"

    @admin.display(description="Target URL")
    def target_link(self, obj: Handle) -> str:
        shown = obj.target_url if len(obj.target_url) <= 70 else obj.target_url[:67] + "…"
        return format_html('<a href="{}" rel="noreferrer nofollow" title="{}">{}</a>', obj.target_url,
                           obj.target_url, shown)

    @admin.display(description="Resolves at")
    def resolver_link(self, obj: Handle) -> str:
        return format_html('<a href="{0}" rel="noreferrer">{0}</a>', obj.resolver_url)

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: Handle) -> str:
        return _badge(obj.status, obj.get_status_display())

    @admin.display(description="Sync")
    def health(self, obj: Handle) -> str:
        state = health_of(obj)
        return _badge(state.state, state.label, state.detail)

    @admin.display(description="Asset")
    def asset_display(self, obj: Handle) -> str:
        if obj.asset is None:
            return "—"
        return format_html('{} <span class="hd-muted">{}:{}</span>', obj.asset.title[:60] or "(untitled)",
                           obj.asset.source_system, obj.asset.external_id)

    # --- Permissions: the desk edits only through its pages and actions ---------------------------------
    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("handles.add_handle")

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # rows are kept forever; "delete" removes the handle from the server

    def get_actions(self, request):
        if not _may_change_handles(request):
            return {}
        return super().get_actions(request)

    # --- The handle page: fields, object tools, history ------------------------------------------------
    def change_view(self, request, object_id, form_url="", extra_context=None):
        handle = self.get_object(request, object_id)
        context = {"show_save": False, "show_save_and_continue": False, "show_save_and_add_another": False,
                   "show_delete": False, **(extra_context or {})}
        if handle is not None:
            context.update(self._history_context(handle))
        return super().change_view(request, object_id, form_url, extra_context=context)

    def _history_context(self, handle: Handle) -> dict:
        rows = list(HandleRequest.objects.filter(handle=handle).select_related("requested_by")
                    .order_by("-pk")[:HISTORY_ROWS])
        total = HandleRequest.objects.filter(handle=handle).count() if len(rows) == HISTORY_ROWS else len(rows)
        restorable: set[str] = set()
        if handle.status in (Handle.Status.ACTIVE, Handle.Status.PENDING):
            restorable = {url for row in rows if row.action in (HandleRequest.Action.MINT,
                                                                HandleRequest.Action.REDIRECT)
                          for url in (row.from_url, row.url) if url}
            restorable -= {handle.target_url, handle.tombstone_url}
        return {"history": rows, "history_total": total, "restorable": restorable, "checks": _check_history(handle),
                "handle_health": health_of(handle),
                "open_failures": open_failures_of(Handle.objects.filter(pk=handle.pk)).count()}

    # --- Custom pages ---------------------------------------------------------------------------------
    def get_urls(self):
        wrap = self.admin_site.admin_view
        own = [
            path("<int:pk>/redirect/", wrap(self.redirect_view), name="handles_handle_redirect"),
            path("<int:pk>/tombstone/", wrap(self.tombstone_view), name="handles_handle_tombstone"),
            path("<int:pk>/restore/", wrap(self.restore_view), name="handles_handle_restore"),
            path("<int:pk>/delete-handle/", wrap(self.delete_handle_view), name="handles_handle_delete_handle"),
            path("<int:pk>/verify/", wrap(self.verify_view), name="handles_handle_verify"),
            path("<int:pk>/retry/", wrap(self.retry_view), name="handles_handle_retry"),
        ]
        return own + super().get_urls()

    def _page(self, request, template: str, title: str, **context) -> HttpResponse:
        context = {**self.admin_site.each_context(request), "title": title, "opts": self.model._meta, **context}
        return render(request, template, context)

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context=None) -> HttpResponse:
        """Minting, in two steps: the preview names the exact handle (for a random suffix too), then the
        same suffix is minted. A taken or deleted suffix is refused with the service's message."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = MintForm(request.POST or None, admin_site=self.admin_site)
        preview = None
        if request.method == "POST" and "_edit" not in request.POST and form.is_valid():
            data = form.cleaned_data
            try:
                if "_mint" in request.POST:
                    req = services.handle_mint(actor=request.user, via="admin", **data)
                    self.log_addition(request, req.handle, f"Minted; request #{req.pk} queued.")
                    self.message_user(request, f"Minted {req.full_handle}; request #{req.pk} is {req.status}.",
                                      messages.SUCCESS)
                    return HttpResponseRedirect(reverse("admin:handles_handle_change", args=[req.handle_id]))
                suffix = services.handle_mint_preview(prefix=data["prefix"], target_url=data["target_url"],
                                                      suffix=data["suffix"], asset=data["asset"])
                # The confirm step carries the chosen suffix, so what is minted is what was previewed.
                form = MintForm({**request.POST.dict(), "suffix": suffix}, admin_site=self.admin_site)
                form.is_valid()
                preview = {"full_handle": f"{data['prefix'].prefix}/{suffix}", "suffix": suffix,
                           "resolver_url": citation_url(data["prefix"].prefix, suffix)}
            except HandleServiceError as exc:
                form.add_error("suffix" if exc.code in ("handle_exists", "suffix_required", "invalid_suffix")
                               else None, exc.message)
        return self._page(request, "admin/handles/handle/mint.html", "Mint a handle", form=form, preview=preview)

    def _handle_action(self, request: HttpRequest, pk: int, title: str, form_class, submit: str,
                       run: Callable[[Handle, dict], HandleRequest], danger: bool = False,
                       note: str = "", initial: dict | None = None) -> HttpResponse:
        if not _may_change_handles(request):
            raise PermissionDenied
        handle = get_object_or_404(Handle.objects.select_related("prefix", "asset"), pk=pk)
        form = form_class(request.POST or None, initial=initial)
        if request.method == "POST" and form.is_valid():
            try:
                req = run(handle, form.cleaned_data)
            except HandleServiceError as exc:
                form.add_error(None, exc.message)
            else:
                self.log_change(request, handle, f"{req.get_action_display()} queued as request #{req.pk}.")
                self.message_user(request, f"{req.get_action_display()} of {handle} queued as request #{req.pk}.",
                                  messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:handles_handle_change", args=[handle.pk]))
        return self._page(request, "admin/handles/handle/action_form.html", f"{title} {handle}", form=form,
                          handle=handle, submit_label=submit, danger=danger, note=note)

    def redirect_view(self, request, pk):
        # "Restore this earlier URL" on the history links here with ?target_url=...
        initial = {"target_url": request.GET.get("target_url", "")}
        return self._handle_action(request, pk, "Redirect", RedirectForm, "Redirect", lambda h, d: services.handle_redirect(
            handle=h, target_url=d["target_url"], actor=request.user), initial=initial,
            note="The handle will resolve to the new URL once the worker has pushed and read it back.")

    def tombstone_view(self, request, pk):
        return self._handle_action(request, pk, "Tombstone", TombstoneForm, "Tombstone", lambda h, d: services.handle_tombstone(
            handle=h, reason=d["reason"], successor_url=d["successor_url"], actor=request.user), danger=True,
            note="The handle will keep resolving, to a public page that says it was withdrawn and why.")

    def restore_view(self, request, pk):
        return self._handle_action(request, pk, "Restore", ConfirmForm, "Restore", lambda h, d: services.handle_restore(
            handle=h, actor=request.user), note="The handle will resolve to its target URL again.")

    def delete_handle_view(self, request, pk):
        return self._handle_action(request, pk, "Delete", ConfirmForm, "Delete from the Handle server",
                                   lambda h, d: services.handle_delete(handle=h, reason=d["reason"], actor=request.user),
                                   danger=True, note="The handle will stop resolving. Our record stays, and the "
                                   "suffix can never be minted again.")

    def verify_view(self, request, pk):
        return self._handle_action(request, pk, "Verify", ConfirmForm, "Verify now", lambda h, d: services.handle_verify(
            handle=h, actor=request.user), note="Reads the Handle server's record and compares it with ours.")

    def retry_view(self, request, pk):
        def retry(handle: Handle, data: dict) -> HandleRequest:
            failures = list(open_failures_of(Handle.objects.filter(pk=handle.pk)))
            if not failures:
                raise HandleServiceError(f"{handle} has no failed request to retry.", code="nothing_to_retry")
            for failure in failures:
                services.request_retry(request=failure, actor=request.user)
            return failure

        return self._handle_action(request, pk, "Retry", ConfirmForm, "Retry now", retry,
                                   note="Gives the failed request a fresh set of attempts. It pushes the handle's "
                                   "current state, so retrying is always safe.")

    # --- Actions on a selection -------------------------------------------------------------------------
    def _selection(self, request: HttpRequest) -> dict:
        """The selection as a bulk job stores it: the ids ticked, or the list's filters ("select all")."""
        if request.POST.get("select_across") == "1":
            return {"filters": HandleFilter.from_params(request.GET).as_params()}
        return {"ids": [int(pk) for pk in request.POST.getlist(ACTION_CHECKBOX_NAME) if pk.isdigit()]}

    def _describe(self, request: HttpRequest, selection: dict) -> str:
        if "ids" in selection:
            return f"{counted(len(selection['ids']), 'selected handle')}"
        return HandleFilter.from_params(request.GET).describe()

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
                selection = {"ids": ids, "filters": HandleFilter.from_params(request.GET).as_params()}
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

    def _confirm(self, request: HttpRequest, queryset: QuerySet, action: str, verb: str, form,
                 template: str = "admin/handles/handle/confirm_selection.html", **context) -> HttpResponse:
        ids = selection_ids(queryset)
        count = len(ids)
        return self._page(
            request, template, f"{verb} {counted(count, 'handle')}?", form=form, count=count, action=action, verb=verb,
            preview_count=count, preview_digest=selection_digest(ids),
            handles=list(queryset.select_related("prefix").order_by("pk")[:100]),
            selected=request.POST.getlist(ACTION_CHECKBOX_NAME), select_across=request.POST.get("select_across", "0"),
            inline_limit=settings.HANDLES_DESK_INLINE_LIMIT, **context)

    @admin.action(description="Verify selected handles against the server now")
    def verify_selected(self, request, queryset):
        return self._run(request, queryset, Kind.VERIFY, "Verify")

    @admin.action(description="Retry the failed requests of selected handles")
    def retry_selected(self, request, queryset):
        return self._run(request, queryset, Kind.RETRY, "Retry", objects=open_failures_of(queryset)
                         .select_related("handle__prefix"))

    @admin.action(description="Restore selected tombstoned handles")
    def restore_selected(self, request, queryset):
        return self._run(request, queryset, Kind.RESTORE, "Restore")

    @admin.action(description="Redirect selected handles by find and replace…")
    def redirect_rule_selected(self, request, queryset):
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
    def tombstone_selected(self, request, queryset):
        form = TombstoneForm(request.POST if "confirm" in request.POST else None)
        changed = self._preview_changed(request, queryset) if form.is_bound and form.is_valid() else ""
        if form.is_bound and form.is_valid() and not changed:
            return self._run(request, queryset, Kind.TOMBSTONE, "Tombstone", parameters=form.cleaned_data)
        return self._confirm(request, queryset, "tombstone_selected", "Tombstone", form, changed=changed)

    @admin.action(description="Delete selected handles from the Handle server…")
    def delete_selected_handles(self, request, queryset):
        form = ConfirmForm(request.POST if "confirm" in request.POST else None)
        changed = self._preview_changed(request, queryset) if form.is_bound and form.is_valid() else ""
        if form.is_bound and form.is_valid() and not changed:
            return self._run(request, queryset, Kind.DELETE, "Delete", parameters=form.cleaned_data)
        return self._confirm(request, queryset, "delete_selected_handles", "Delete", form, changed=changed)


# --- The request log --------------------------------------------------------------------------------------
class RequestPrefixFilter(admin.SimpleListFilter):
    title = "prefix"
    parameter_name = "prefix"

    def lookups(self, request, model_admin):
        return [(str(p.pk), p.prefix) for p in Prefix.objects.order_by("prefix")]

    def has_output(self) -> bool:
        return self.value() is not None or super().has_output()

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        if not (value.isdigit() and Prefix.objects.filter(pk=int(value)).exists()):
            _refuse(request, f"There is no prefix with id {value!r}.")
        return queryset.filter(handle__prefix_id=int(value))


def _refuse(request: HttpRequest, reason: str) -> None:
    """An invalid value of a list filter: the admin's convention (the list redirects to ?e=1), with why."""
    messages.error(request, f"The list's filter was refused: {reason}")
    raise IncorrectLookupParameters(reason)


class ErrorGroupFilter(admin.SimpleListFilter):
    """Set from the failures page: the failed requests of one error group."""

    title = "error group"
    parameter_name = "signature"

    def lookups(self, request, model_admin):
        value = request.GET.get(self.parameter_name)
        return [(value, value[:80])] if value else []

    def queryset(self, request, queryset):
        return with_signature(queryset.filter(status=HandleRequest.Status.ERROR), self.value()) if self.value() \
            else queryset


class RequestViaFilter(admin.SimpleListFilter):
    """Set from a bulk job's page: the requests the job made (requested_via = job:<id>)."""

    title = "made by"
    parameter_name = "via"

    def lookups(self, request, model_admin):
        value = request.GET.get(self.parameter_name)
        return [(value, value[:80])] if value else []

    def queryset(self, request, queryset):
        return queryset.filter(requested_via=self.value()) if self.value() else queryset


class RequestDateFilter(admin.ListFilter):
    """Requests made in a date range (days, in the site's time zone): quick links and a from/to form."""

    title = "date"
    template = "admin/desk/date_filter.html"
    parameters = ("since", "until")

    def __init__(self, request, params, model, model_admin):
        super().__init__(request, params, model, model_admin)
        for name in self.parameters:
            if name in params:
                self.used_parameters[name] = params.pop(name)[-1]
        self.form = DateRangeForm(self.used_parameters or None)
        self.other_params = [(k, v) for k, v in request.GET.items() if k not in (*self.parameters, "p")]

    def has_output(self) -> bool:
        return True

    def expected_parameters(self):
        return list(self.parameters)

    def queryset(self, request, queryset):
        if not self.form.is_bound:
            return queryset
        if not self.form.is_valid():
            _refuse(request, _form_problems(self.form))
        since, until = _day_range(self.form.cleaned_data)
        if since:
            queryset = queryset.filter(created_at__gte=since)
        if until:
            queryset = queryset.filter(created_at__lt=until)
        return queryset

    def choices(self, changelist):
        today = timezone.localdate()
        links = [("Any date", {}), ("Today", {"since": today}),
                 ("Past 7 days", {"since": today - datetime.timedelta(days=6)}),
                 ("Past 30 days", {"since": today - datetime.timedelta(days=29)})]
        for label, values in links:
            wanted = {k: v.isoformat() for k, v in values.items()}
            yield {"selected": wanted == self.used_parameters, "display": label,
                   "query_string": changelist.get_query_string(wanted, remove=list(self.parameters))}


def _form_problems(form) -> str:
    return " ".join(f"{name}: {' '.join(errors)}" for name, errors in form.errors.items())


def _day_range(cleaned: dict) -> tuple:
    """Aware datetimes for a since/until pair of days (until is inclusive)."""
    since = until = None
    if cleaned.get("since"):
        since = timezone.make_aware(datetime.datetime.combine(cleaned["since"], datetime.time.min))
    if cleaned.get("until"):
        until = timezone.make_aware(datetime.datetime.combine(cleaned["until"] + datetime.timedelta(days=1),
                                                              datetime.time.min))
    return since, until


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
    actions = ["retry_selected", "cancel_selected"]
    change_list_template = "admin/handles/handlerequest/change_list.html"
    readonly_fields = ["id", "handle_link", "op", "action", "full_handle", "url", "from_url", "from_status",
                       "to_status", "reason", "status_badge", "attempts", "max_attempts", "next_attempt_at",
                       "handle_version", "pushed_version", "requested_by", "requested_via", "idempotency_key",
                       "created_at", "started_at", "finished_at", "server_output", "server_error", "error"]
    fields = readonly_fields

    @admin.display(description="Error")
    def short_error(self, obj: HandleRequest) -> str:
        return obj.error[:120]

    @admin.display(description="Handle")
    def handle_link(self, obj: HandleRequest) -> str:
        url = reverse("admin:handles_handle_change", args=[obj.handle_id])
        return format_html('<a href="{}">{}</a>', url, obj.full_handle)

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: HandleRequest) -> str:
        return _badge(obj.status, obj.status, obj.error)

    @admin.display(description="By")
    def requester(self, obj: HandleRequest) -> str:
        who = obj.requested_by.get_username() if obj.requested_by else ""
        return " ".join(filter(None, [who, f"({obj.requested_via})" if obj.requested_via else ""]))

    def get_search_results(self, request, queryset, search_term):
        return request_search(queryset, search_term), False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # the request log is kept forever

    def get_actions(self, request):
        if not _may_change_handles(request):
            return {}
        return super().get_actions(request)

    @admin.action(description="Retry selected failed requests")
    def retry_selected(self, request, queryset):
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

    @admin.action(description="Cancel selected queued requests (they end in error, unsent)")
    def cancel_selected(self, request, queryset):
        ids = list(queryset.filter(status=HandleRequest.Status.QUEUED).values_list("pk", flat=True)
                   [:settings.HANDLES_DESK_INLINE_LIMIT])
        cancelled = services.requests_cancel(request_ids=ids, actor=request.user)
        self.message_user(request, f"Cancelled {counted(cancelled, 'queued request')}; the others were left alone.",
                          messages.SUCCESS)

    def _retry_job(self, request: HttpRequest, selection: dict, description: str) -> HttpResponse:
        job = desk_services.bulk_job_create(kind=Kind.RETRY, selection=selection, description=description,
                                            actor=request.user)
        log_desk_action(request, [job], f"Retry: {description}.", flag=ADDITION)
        self.message_user(request, f"Retry: job #{job.pk} runs in the background.", messages.SUCCESS)
        return HttpResponseRedirect(job.get_absolute_url())

    # --- Failures grouped by error ----------------------------------------------------------------------
    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("failures/", wrap(self.failures_view), name="handles_handlerequest_failures"),
            path("failures/retry/", wrap(require_POST(self.retry_group_view)),
                 name="handles_handlerequest_retry_group"),
        ] + super().get_urls()

    def _failures(self, params) -> tuple[QuerySet | None, DateRangeForm, str]:
        """The failed requests the page's filters select, or None (and the form's errors) when a filter
        is invalid: never all failures in place of the ones asked for."""
        form = DateRangeForm(params)
        prefix = params.get("prefix", "")
        if prefix and not (prefix.isdigit() and Prefix.objects.filter(pk=int(prefix)).exists()):
            form.add_error(None, f"There is no prefix with id {prefix!r}.")
        if not form.is_valid():
            return None, form, prefix
        since, until = _day_range(form.cleaned_data)
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
            "prefixes": Prefix.objects.order_by("prefix"), "may_retry": _may_change_handles(request),
            "query": request.GET.urlencode(),
        })

    def retry_group_view(self, request: HttpRequest) -> HttpResponse:
        if not _may_change_handles(request):
            raise PermissionDenied
        requests, form, prefix = self._failures(request.POST)
        if requests is None:
            self.message_user(request, f"Nothing was retried: {_form_problems(form)}", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:handles_handlerequest_failures"))
        signature = request.POST.get("signature", "")
        group = with_signature(requests, signature) if signature else requests
        _, too_many = capped_count(group, settings.HANDLES_DESK_INLINE_LIMIT)
        if too_many:
            since, until = _day_range(form.cleaned_data)
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
