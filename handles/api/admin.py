"""API tokens in the admin: superusers only. The plain token is shown once, on the page after creation."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import URLPattern, path, reverse

from handles.api import services
from handles.api.models import ApiToken
from handles.labels import counted

# The session key that carries a new token's plain text from the POST to the page that shows it once.
_SHOW_ONCE = "handles_api_new_token"


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "scope", "prefix_list", "token_hint", "created_by", "created_at", "last_used_at",
                    "revoked_at"]
    list_filter = ["scope", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "lookup"]
    fields = ["name", "scope", "prefixes", "token_hint", "created_by", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["token_hint", "created_by", "created_at", "last_used_at", "revoked_at"]
    filter_horizontal = ["prefixes"]
    actions = ["revoke_selected"]

    @admin.display(description="Prefixes")
    def prefix_list(self, obj: ApiToken) -> str:
        return ", ".join(p.prefix for p in obj.prefixes.all()) or "all"

    @admin.display(description="Token")
    def token_hint(self, obj: ApiToken) -> str:
        return f"hdl_{obj.lookup}_…" if obj.lookup else "shown once, after saving"

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiToken]:
        return super().get_queryset(request).select_related("created_by").prefetch_related("prefixes")

    # --- Superusers only ---------------------------------------------------------------------------
    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return self.has_module_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self.has_module_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return self.has_module_permission(request) and not (obj and obj.is_revoked)

    def has_delete_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return False  # revoke instead: the row says who used the API, and when

    # --- Saving through the services ----------------------------------------------------------------
    def save_model(self, request: HttpRequest, obj: ApiToken, form: forms.ModelForm, change: bool) -> None:
        prefixes = form.cleaned_data["prefixes"]
        if change:
            services.token_update(token=obj, prefixes=prefixes)
        else:
            # The plain token waits in the session for the one page that shows it (response_add).
            plain = services.token_create(token=obj, prefixes=prefixes, created_by=request.user if request.user.is_authenticated else None)
            request.session[_SHOW_ONCE] = {"token_id": obj.pk, "plain": plain}

    def save_related(self, request: HttpRequest, form: forms.ModelForm, formsets: Any, change: bool) -> None:
        """The services saved the prefixes already."""

    def response_add(self, request: HttpRequest, obj: ApiToken, post_url_continue: str | None = None) -> HttpResponse:
        """Post/redirect/get: the page that shows the plain token once is reached by a GET, so a refresh of
        it never posts the form again (no second token)."""
        return HttpResponseRedirect(reverse("admin:handles_api_apitoken_created", args=[obj.pk]))

    def get_urls(self) -> list[URLPattern]:
        own = [path("<int:pk>/created/", self.admin_site.admin_view(self.created_view),
                    name="handles_api_apitoken_created")]
        return own + super().get_urls()

    def created_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        token = get_object_or_404(ApiToken, pk=pk)
        waiting = request.session.get(_SHOW_ONCE) or {}
        plain = waiting.get("plain") if waiting.get("token_id") == token.pk else None
        if plain:
            del request.session[_SHOW_ONCE]
        context = {**self.admin_site.each_context(request), "title": "API token created", "token": token,
                   "plain": plain, "opts": self.model._meta,
                   "change_url": reverse("admin:handles_api_apitoken_change", args=[token.pk])}
        response = render(request, "admin/handles_api/apitoken/created.html", context)
        response["Cache-Control"] = "no-store"  # the only time the token is shown: keep it out of caches
        return response

    @admin.action(description="Revoke selected tokens (at once, for good)")
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        revoked = sum(services.token_revoke(token=token) for token in queryset)
        self.message_user(request, f"Revoked {counted(revoked, 'token')}.", messages.SUCCESS)
