"""The handle desk. Declarative ModelAdmins; every action parses input, calls a service and reports.

Nothing here writes a model directly: minting, redirecting, tombstoning, restoring, deleting, verifying
and retrying all go through handles.services, which records a request for the background worker.
"""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import path, reverse
from django.utils.html import format_html

from handles import services
from handles.exceptions import HandleServiceError
from handles.forms import ConfirmForm, MintForm, RedirectForm, TombstoneForm
from handles.models import Asset, Handle, HandleRequest, Prefix


class SuperuserOnlyAdmin(admin.ModelAdmin):
    """Prefixes hold the Handle server configuration: superusers manage them, staff may look."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # a prefix with handles must never disappear


@admin.register(Prefix)
class PrefixAdmin(SuperuserOnlyAdmin):
    list_display = ["prefix", "site_name", "is_default", "server_url", "suffix_policy", "asset_delete_action"]
    fieldsets = [
        (None, {"fields": ["prefix", "site_name", "is_default"]}),
        ("Handle server", {"fields": ["server_url", "auth_identity", "secret_env_var", "tls_mode",
                                      "pinned_certificate", "client_cert_path", "client_key_path"]}),
        ("New handles", {"fields": ["hs_admin_handle", "hs_admin_index", "hs_admin_permissions", "suffix_policy",
                                    "suffix_length", "suffix_alphabet", "asset_delete_action"]}),
    ]

    def save_model(self, request, obj, form, change):
        services.prefix_save(prefix=obj)


@admin.register(Asset)
class AssetAdmin(admin.ModelAdmin):
    list_display = ["source_system", "external_id", "title", "state", "handle_count"]
    list_filter = ["source_system", "state"]
    search_fields = ["external_id", "title"]
    readonly_fields = ["created_at", "updated_at"]

    @admin.display(description="Handles")
    def handle_count(self, obj: Asset) -> int:
        return obj.handles.count()

    def save_model(self, request, obj, form, change):
        services.asset_save(asset=obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # assets are marked deleted, never removed: their handles must keep their history


class RequestInline(admin.TabularInline):
    model = HandleRequest
    fk_name = "handle"
    extra = 0
    can_delete = False
    ordering = ["-id"]
    fields = ["request_link", "created_at", "action", "from_url", "url", "status", "attempts", "requested_by",
              "error"]
    readonly_fields = fields
    verbose_name = "change"
    verbose_name_plural = "History (every change and the request that carried it)"

    @admin.display(description="Request")
    def request_link(self, obj: HandleRequest) -> str:
        url = reverse("admin:handles_handlerequest_change", args=[obj.pk])
        return format_html('<a href="{}">#{}</a>', url, obj.pk)

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


def _sync_badge(handle: Handle) -> str:
    if handle.in_sync:
        return format_html('<span class="hd-badge hd-ok" title="The server holds version {}">in sync</span>',
                           handle.synced_version)
    return format_html('<span class="hd-badge hd-pending" title="Version {} not yet confirmed on the server">'
                       "pending</span>", handle.version)


@admin.register(Handle)
class HandleAdmin(admin.ModelAdmin):
    list_display = ["full_handle_display", "target_link", "status", "sync_state", "asset", "updated_at"]
    list_filter = ["status", "prefix"]
    list_select_related = ["prefix", "asset"]
    search_fields = ["suffix_key", "target_url", "asset__title", "asset__external_id"]
    show_full_result_count = False
    list_per_page = 50
    readonly_fields = ["full_handle_display", "status", "target_link", "resolver_link", "asset", "tombstone_reason",
                       "successor_url", "tombstoned_at", "deleted_at", "version", "synced_version", "synced_at",
                       "sync_state", "created_by", "created_at", "updated_at"]
    fields = readonly_fields
    inlines = [RequestInline]
    actions = ["verify_selected", "restore_selected", "tombstone_selected", "delete_selected_handles"]
    change_form_template = "admin/handles/handle/change_form.html"

    # --- Display --------------------------------------------------------------------------------
    @admin.display(description="Handle", ordering="suffix_key")
    def full_handle_display(self, obj: Handle) -> str:
        return obj.full_handle

    @admin.display(description="Target URL", ordering="target_url")
    def target_link(self, obj: Handle) -> str:
        shown = obj.target_url if len(obj.target_url) <= 80 else obj.target_url[:77] + "..."
        return format_html('<a href="{}" rel="noreferrer nofollow">{}</a>', obj.target_url, shown)

    @admin.display(description="Resolves at")
    def resolver_link(self, obj: Handle) -> str:
        return format_html('<a href="{0}" rel="noreferrer">{0}</a>', obj.resolver_url)

    @admin.display(description="Sync")
    def sync_state(self, obj: Handle) -> str:
        return _sync_badge(obj)

    def get_search_results(self, request, queryset, search_term):
        """A full handle (or hdl:/resolver form) finds that handle; anything else searches the fields."""
        from django.core.exceptions import ValidationError

        from handles.validators import split_handle

        term = search_term.strip()
        if "/" in term and not term.lower().startswith(("http://", "https://")) or term.lower().startswith(
            ("hdl:", "http://hdl.handle.net/", "https://hdl.handle.net/")
        ):
            try:
                prefix, suffix = split_handle(term)
            except ValidationError:
                pass
            else:
                return queryset.by_name(prefix, suffix), False
        return super().get_search_results(request, queryset, term)

    # --- Permissions: the desk edits only through its actions --------------------------------------
    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("handles.add_handle")

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # rows are kept forever; "delete" removes the handle from the server

    def _may_change(self, request: HttpRequest) -> bool:
        return request.user.has_perm("handles.change_handle")

    def get_actions(self, request):
        actions = super().get_actions(request)
        if not self._may_change(request):
            return {}
        actions.pop("delete_selected", None)
        return actions

    # --- Custom pages -----------------------------------------------------------------------------
    def get_urls(self):
        wrap = self.admin_site.admin_view
        own = [
            path("<int:pk>/redirect/", wrap(self.redirect_view), name="handles_handle_redirect"),
            path("<int:pk>/tombstone/", wrap(self.tombstone_view), name="handles_handle_tombstone"),
            path("<int:pk>/restore/", wrap(self.restore_view), name="handles_handle_restore"),
            path("<int:pk>/delete-handle/", wrap(self.delete_handle_view), name="handles_handle_delete_handle"),
            path("<int:pk>/verify/", wrap(self.verify_view), name="handles_handle_verify"),
        ]
        return own + super().get_urls()

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context=None) -> HttpResponse:
        """Minting replaces the model add form: the service chooses the suffix and queues the create."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = MintForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                req = services.handle_mint(actor=request.user, via="admin", **form.cleaned_data)
            except HandleServiceError as exc:
                form.add_error("suffix" if exc.code in ("handle_exists", "suffix_required") else None, exc.message)
            else:
                self.message_user(request, f"Minted {req.full_handle}; request #{req.pk} is queued.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:handles_handle_change", args=[req.handle_id]))
        return self._form_page(request, "Mint a handle", form, None, "Mint")

    def _form_page(self, request, title: str, form, handle: Handle | None, submit: str, danger: bool = False,
                   note: str = "") -> HttpResponse:
        context = {**self.admin_site.each_context(request), "title": title, "form": form, "handle": handle,
                   "opts": self.model._meta, "submit_label": submit, "danger": danger, "note": note}
        return render(request, "admin/handles/handle/action_form.html", context)

    def _handle_action(self, request: HttpRequest, pk: int, title: str, form_class, submit: str,
                       run: Callable[[Handle, dict], HandleRequest], danger: bool = False,
                       note: str = "") -> HttpResponse:
        if not self._may_change(request):
            raise PermissionDenied
        handle = get_object_or_404(Handle.objects.select_related("prefix"), pk=pk)
        form = form_class(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                req = run(handle, form.cleaned_data)
            except HandleServiceError as exc:
                form.add_error(None, exc.message)
            else:
                self.message_user(request, f"{req.get_action_display()} of {handle} queued as request #{req.pk}.",
                                  messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:handles_handle_change", args=[handle.pk]))
        return self._form_page(request, f"{title} {handle}", form, handle, submit, danger, note)

    def redirect_view(self, request, pk):
        return self._handle_action(request, pk, "Redirect", RedirectForm, "Redirect", lambda h, d: services.handle_redirect(
            handle=h, target_url=d["target_url"], actor=request.user))

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

    # --- Actions on a selection ---------------------------------------------------------------------
    def _each(self, request: HttpRequest, queryset: QuerySet, run: Callable[[Handle], HandleRequest],
              verb: str) -> None:
        done, refused = 0, []
        for handle in queryset.select_related("prefix"):
            try:
                run(handle)
                done += 1
            except HandleServiceError as exc:
                refused.append(exc.message)
        if done:
            self.message_user(request, f"{verb}: {done} request(s) queued.", messages.SUCCESS)
        for message in refused[:20]:
            self.message_user(request, message, messages.WARNING)
        if len(refused) > 20:
            self.message_user(request, f"... and {len(refused) - 20} more refused.", messages.WARNING)

    @admin.action(description="Verify selected handles against the server")
    def verify_selected(self, request, queryset):
        self._each(request, queryset, lambda h: services.handle_verify(handle=h, actor=request.user), "Verify")

    @admin.action(description="Restore selected tombstoned handles")
    def restore_selected(self, request, queryset):
        self._each(request, queryset, lambda h: services.handle_restore(handle=h, actor=request.user), "Restore")

    @admin.action(description="Tombstone selected handles…")
    def tombstone_selected(self, request, queryset):
        form = TombstoneForm(request.POST if "confirm" in request.POST else None)
        if "confirm" in request.POST and form.is_valid():
            self._each(request, queryset, lambda h: services.handle_tombstone(
                handle=h, reason=form.cleaned_data["reason"], successor_url=form.cleaned_data["successor_url"],
                actor=request.user), "Tombstone")
            return None
        return self._confirm_selection(request, queryset, form, "tombstone_selected", "Tombstone")

    @admin.action(description="Delete selected handles from the Handle server…")
    def delete_selected_handles(self, request, queryset):
        form = ConfirmForm(request.POST if "confirm" in request.POST else None)
        if "confirm" in request.POST and form.is_valid():
            self._each(request, queryset, lambda h: services.handle_delete(
                handle=h, reason=form.cleaned_data["reason"], actor=request.user), "Delete")
            return None
        return self._confirm_selection(request, queryset, form, "delete_selected_handles", "Delete")

    def _confirm_selection(self, request, queryset, form, action: str, verb: str) -> HttpResponse:
        handles = list(queryset.select_related("prefix")[:200])
        context = {**self.admin_site.each_context(request), "title": f"{verb} {queryset.count()} handle(s)?",
                   "form": form, "handles": handles, "count": queryset.count(), "action": action, "verb": verb,
                   "opts": self.model._meta, "selected": request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME)}
        return render(request, "admin/handles/handle/confirm_selection.html", context)


@admin.register(HandleRequest)
class HandleRequestAdmin(admin.ModelAdmin):
    list_display = ["id", "created_at", "action", "op", "full_handle", "status", "attempts", "requested_by",
                    "short_error"]
    list_filter = ["status", "op", "action", "handle__prefix"]
    search_fields = ["full_handle", "error"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    list_select_related = ["requested_by"]
    actions = ["retry_selected"]
    readonly_fields = ["id", "handle_link", "op", "action", "full_handle", "url", "from_url", "from_status",
                       "to_status", "reason", "status", "attempts", "max_attempts", "next_attempt_at", "handle_version",
                       "pushed_version", "requested_by", "requested_via", "created_at", "started_at", "finished_at",
                       "server_output", "server_error", "error"]
    fields = readonly_fields

    @admin.display(description="Error")
    def short_error(self, obj: HandleRequest) -> str:
        return obj.error[:120]

    @admin.display(description="Handle")
    def handle_link(self, obj: HandleRequest) -> str:
        url = reverse("admin:handles_handle_change", args=[obj.handle_id])
        return format_html('<a href="{}">{}</a>', url, obj.full_handle)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # the request log is kept forever

    def get_actions(self, request):
        actions = super().get_actions(request)
        if not request.user.has_perm("handles.change_handle"):
            return {}
        return actions

    @admin.action(description="Retry selected failed requests")
    def retry_selected(self, request, queryset):
        retried, skipped = 0, 0
        for req in queryset.filter(status=HandleRequest.Status.ERROR):
            services.request_retry(request=req, actor=request.user)
            retried += 1
        skipped = queryset.exclude(status=HandleRequest.Status.ERROR).count()
        self.message_user(request, f"Retrying {retried} request(s)." + (
            f" {skipped} were not failed and were left alone." if skipped else ""), messages.SUCCESS)
