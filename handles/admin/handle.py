"""The Handle admin of the core: its columns, the handle page with its history, minting, and the pages
that redirect, tombstone, restore, delete, verify or retry one handle (each a service call).

The list's filters, its bulk actions and the sync state come from the desk (handles.desk.admin, which
registers a subclass of this admin), and sections of the handle page from other apps through
register_handle_page_section: the core imports neither.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db.models import Expression, Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, render
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from handles import services
from handles.admin.common import badge, may_change_handles
from handles.citation import citation_url
from handles.exceptions import HandleServiceError
from handles.forms import ConfirmForm, MintForm, RedirectForm, TombstoneForm
from handles.labels import LabelledFieldsAdmin
from handles.models import Handle, HandleRequest
from handles.selectors import CappedCountPaginator, handle_search, open_failures_of

SYNC_FIELDSET = "Sync with the Handle server"
HISTORY_ROWS = 200  # the handle page shows this many latest requests; the request log has them all

# Sections other apps add to a handle's page: each takes the handle and returns template context (the
# repair app its resolution checks). Filled in the apps' ready(), so the core imports none of them.
HANDLE_PAGE_SECTIONS: list[Callable[[Handle], dict]] = []


def register_handle_page_section(section: Callable[[Handle], dict]) -> None:
    if section not in HANDLE_PAGE_SECTIONS:
        HANDLE_PAGE_SECTIONS.append(section)


class HandleChangeList(ChangeList):
    def get_ordering(self, request: HttpRequest, queryset: QuerySet[Any]) -> list[Expression | str]:
        """Sorting by handle uses the (prefix, suffix_key) unique index instead of sorting every row."""
        expanded: list[Expression | str] = []
        for field in super().get_ordering(request, queryset):
            if isinstance(field, str) and field in ("suffix_key", "-suffix_key"):
                expanded += [field.replace("suffix_key", "prefix_id"), field]
            else:
                expanded.append(field)
        return expanded




@admin.register(Handle)
class HandleAdmin(LabelledFieldsAdmin, admin.ModelAdmin):
    list_display = ["full_handle_display", "target_link", "status_badge", "asset_display", "updated_at"]
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
        (SYNC_FIELDSET, {"fields": ["version", "synced_version", "synced_at"]}),
        ("Record", {"fields": ["is_primary", "created_by", "created_at", "updated_at"]}),
    ]
    readonly_fields = ["full_handle_display", "status_badge", "target_link", "resolver_link", "asset_display",
                       "tombstone_reason", "successor_link", "tombstoned_at", "deleted_at", "version",
                       "synced_version", "synced_at", "is_primary", "created_by", "created_at", "updated_at"]
    change_form_template = "admin/handles/handle/change_form.html"

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return HandleChangeList

    def get_queryset(self, request: HttpRequest) -> QuerySet[Handle]:
        return super().get_queryset(request).prefetch_related("asset")

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
                           ) -> tuple[QuerySet[Any], bool]:
        return handle_search(queryset, search_term), False

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
        return badge(obj.status, obj.get_status_display())

    @admin.display(description="Asset")
    def asset_display(self, obj: Handle) -> str:
        if obj.asset is None:
            return "—"
        return format_html('{} <span class="hd-muted">{}:{}</span>', obj.asset.title[:60] or "(untitled)",
                           obj.asset.source_system, obj.asset.external_id)

    # --- Permissions: the desk edits only through its pages and actions ---------------------------------
    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("handles.add_handle")

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False  # rows are kept forever; "delete" removes the handle from the server

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        if not may_change_handles(request):
            return {}
        return super().get_actions(request)

    # --- The handle page: fields, object tools, history ------------------------------------------------
    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
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
        context = {"history": rows, "history_total": total, "restorable": restorable,
                   "open_failures": open_failures_of(Handle.objects.filter(pk=handle.pk)).count()}
        for section in HANDLE_PAGE_SECTIONS:
            context.update(section(handle))
        return context

    # --- Custom pages ---------------------------------------------------------------------------------
    def get_urls(self) -> list[URLPattern]:
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

    def _page(self, request: HttpRequest, template: str, title: str, **context: Any) -> HttpResponse:
        context = {**self.admin_site.each_context(request), "title": title, "opts": self.model._meta, **context}
        return render(request, template, context)

    def add_view(self, request: HttpRequest, form_url: str = "",
                 extra_context: dict[str, Any] | None = None) -> HttpResponse:
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

    def _handle_action(self, request: HttpRequest, pk: int, title: str, form_class: type[forms.Form],
                       submit: str, run: Callable[[Handle, dict], HandleRequest], danger: bool = False,
                       note: str = "", initial: dict | None = None) -> HttpResponse:
        if not may_change_handles(request):
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

    def redirect_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        # "Restore this earlier URL" on the history links here with ?target_url=...
        initial = {"target_url": request.GET.get("target_url", "")}
        return self._handle_action(request, pk, "Redirect", RedirectForm, "Redirect", lambda h, d: services.handle_redirect(
            handle=h, target_url=d["target_url"], actor=request.user), initial=initial,
            note="The handle will resolve to the new URL once the worker has pushed and read it back.")

    def tombstone_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        return self._handle_action(request, pk, "Tombstone", TombstoneForm, "Tombstone", lambda h, d: services.handle_tombstone(
            handle=h, reason=d["reason"], successor_url=d["successor_url"], actor=request.user), danger=True,
            note="The handle will keep resolving, to a public page that says it was withdrawn and why.")

    def restore_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        return self._handle_action(request, pk, "Restore", ConfirmForm, "Restore", lambda h, d: services.handle_restore(
            handle=h, actor=request.user), note="The handle will resolve to its target URL again.")

    def delete_handle_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        return self._handle_action(request, pk, "Delete", ConfirmForm, "Delete from the Handle server",
                                   lambda h, d: services.handle_delete(handle=h, reason=d["reason"], actor=request.user),
                                   danger=True, note="The handle will stop resolving. Our record stays, and the "
                                   "suffix can never be minted again.")

    def verify_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        return self._handle_action(request, pk, "Verify", ConfirmForm, "Verify now", lambda h, d: services.handle_verify(
            handle=h, actor=request.user), note="Reads the Handle server's record and compares it with ours.")

    def retry_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
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

