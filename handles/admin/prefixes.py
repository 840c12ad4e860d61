"""Prefixes (the Handle server configuration, for superusers) and assets."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin import ModelAdmin
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import Count, Model, OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.template.loader import render_to_string
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from handles import services
from handles.admin.common import badge, may_change_handles
from handles.connection_check import check_connection
from handles.labels import LabelledFieldsAdmin
from handles.models import Asset, Handle, HandleRequest, Prefix
from handles.selectors import CappedCountPaginator, source_systems


class SuperuserOnlyAdmin(admin.ModelAdmin):
    """Prefixes hold the Handle server configuration: superusers manage them, staff may look."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
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
            return badge("in_sync", "ok")
        obj.waiting = HandleRequest.objects.paused().filter(handle__prefix_id=obj.pk).count()
        return render_to_string("admin/handles/prefix/auth_failing.html", {"p": obj})

    @admin.display(description="Last contact")
    def last_contact(self, obj: Prefix) -> str:
        if obj.last_contact_at is None:
            return badge("pending", "never")
        when = timezone.localtime(obj.last_contact_at).strftime("%Y-%m-%d %H:%M")
        if obj.last_contact_ok:
            return badge("in_sync", f"ok {when}")
        return badge("error", f"failed {when}", obj.last_contact_error)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        services.prefix_save(prefix=obj)

    change_form_template = "admin/handles/prefix/change_form.html"

    def get_urls(self) -> list[URLPattern]:
        own = [path("<int:pk>/check-connection/", self.admin_site.admin_view(self.check_connection_view),
                    name="handles_prefix_check_connection")]
        return own + super().get_urls()

    def check_connection_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """GET explains the check; POST runs it and shows the report. For those who may change handles: it
        creates, changes and deletes a scratch handle on the server."""
        if not may_change_handles(request):
            raise PermissionDenied
        prefix = get_object_or_404(Prefix, pk=pk)
        report = check_connection(prefix) if request.method == "POST" else None
        context = {**self.admin_site.each_context(request), "title": f"Check connection: {prefix.prefix}",
                   "opts": self.model._meta, "original": prefix, "report": report}
        return render(request, "admin/handles/prefix/check_connection.html", context)


class SourceSystemFilter(admin.SimpleListFilter):
    title = "source system"
    parameter_name = "source_system"

    def lookups(self, request: HttpRequest, model_admin: ModelAdmin[Any]) -> list[tuple[Any, str]]:
        return [(s, s) for s in source_systems()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
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

    def get_queryset(self, request: HttpRequest) -> QuerySet[Asset]:
        # A count per row shown, not a GROUP BY over every handle.
        handles = Handle.objects.filter(asset=OuterRef("pk")).order_by().values("asset").annotate(n=Count("pk"))
        return super().get_queryset(request).annotate(n_handles=Subquery(handles.values("n")))

    @admin.display(description="Handles")
    def handle_count(self, obj: Asset) -> str:
        url = reverse("admin:handles_handle_changelist") + f"?q={obj.source_system}:{obj.external_id}"
        handles = getattr(obj, "n_handles", None) or 0  # get_queryset() adds it
        return format_html('<a href="{}">{}</a>', url, handles)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        services.asset_save(asset=obj)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False  # assets are marked deleted, never removed: their handles must keep their history

