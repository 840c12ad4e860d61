"""Admin pages: subscriptions (each staff member their own), webhook endpoints (those allowed to manage
them), the notification and delivery log, the watchdog's history, and the settings page with a test send.

Thin: forms and buttons call handles.notify.services (or its tasks) and say what happened.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join

from handles.labels import LabelledFieldsAdmin, counted
from handles.notify import services, tasks
from handles.notify.forms import SubscriptionForm, WebhookEndpointForm
from handles.notify.models import (
    Delivery,
    DeliveryAttempt,
    Kind,
    Notification,
    Subscription,
    WatchdogRun,
    WebhookEndpoint,
)

STATUS_BADGE = {"sent": "ok", "pending": "pending", "sending": "running", "failed": "error",
                "green": "ok", "red": "error"}


def _badge(state: str, label: str) -> str:
    return format_html('<span class="hd-badge hd-{}">{}</span>', STATUS_BADGE.get(state, state), label)


def _kinds(kinds: list[str]) -> str:
    labels = dict(Kind.choices)
    return ", ".join(labels.get(k, k).split(" (")[0] for k in kinds or []) or "—"


def _staff(request: HttpRequest) -> User:
    """The logged-in staff member: the admin's pages and forms are only ever shown to one."""
    if not isinstance(request.user, User):
        raise PermissionDenied
    return request.user


class ReadOnlyAdmin(LabelledFieldsAdmin, admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(Subscription)
class SubscriptionAdmin(LabelledFieldsAdmin, admin.ModelAdmin):
    form = SubscriptionForm
    list_display = ["user", "prefix_display", "kinds_display", "address", "active"]
    list_filter = ["active", "prefix"]
    change_list_template = "admin/notify/subscription_changelist.html"

    @admin.display(description="Prefix")
    def prefix_display(self, obj: Subscription) -> str:
        return obj.prefix.prefix if obj.prefix else "every prefix"

    @admin.display(description="Events")
    def kinds_display(self, obj: Subscription) -> str:
        return _kinds(obj.kinds)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Subscription]:
        queryset = super().get_queryset(request).select_related("user", "prefix")
        return queryset if request.user.is_superuser else queryset.filter(user=_staff(request))

    def get_fields(self, request: HttpRequest, obj: Subscription | None = None) -> tuple[str, ...]:
        fields = ("user", "prefix", "kinds", "email", "active")
        return fields if request.user.is_superuser else fields[1:]

    def get_form(self, request: HttpRequest, obj: Subscription | None = None, change: bool = False,
                 **kwargs: Any) -> type[ModelForm[Any]]:
        form = super().get_form(request, obj, change=change, **kwargs)
        if issubclass(form, SubscriptionForm):
            form.current_user = _staff(request)
        return form

    def _own(self, request: HttpRequest, obj: Subscription | None) -> bool:
        return obj is None or request.user.is_superuser or obj.user_id == request.user.pk

    def has_change_permission(self, request: HttpRequest, obj: Subscription | None = None) -> bool:
        return super().has_change_permission(request, obj) and self._own(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Subscription | None = None) -> bool:
        return super().has_delete_permission(request, obj) and self._own(request, obj)

    def save_model(self, request: HttpRequest, obj: Subscription, form: ModelForm[Any], change: bool) -> None:
        if not request.user.is_superuser:
            obj.user = _staff(request)
        services.subscription_save(subscription=obj)

    def get_urls(self) -> list[URLPattern]:
        return [path("settings/", self.admin_site.admin_view(self.settings_view), name="handles_notify_settings"),
                *super().get_urls()]

    def settings_view(self, request: HttpRequest) -> HttpResponse:
        """What the notifications run on, and a button that sends a test through every channel."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        user = _staff(request)
        may_endpoints = request.user.has_perm("handles_notify.change_webhookendpoint")
        endpoints = list(WebhookEndpoint.objects.filter(active=True)) if may_endpoints else []
        if request.method == "POST":
            notification = services.test_send(actor=user, endpoints=endpoints)
            count = notification.deliveries.count()
            level = messages.SUCCESS if count else messages.WARNING
            self.message_user(request, f"Test sent: {counted(count, 'delivery', 'deliveries')}; their outcome is in "
                              "the delivery log."
                              if count else "Nothing to send to: give yourself an email address or a subscription.",
                              level)
            return HttpResponseRedirect(reverse("admin:handles_notify_notification_change", args=[notification.pk]))
        mail = [("Backend", settings.EMAIL_BACKEND), ("Server", f"{settings.EMAIL_HOST}:{settings.EMAIL_PORT}"),
                ("TLS", "STARTTLS" if settings.EMAIL_USE_TLS else "TLS" if settings.EMAIL_USE_SSL else "none"),
                ("From", settings.DEFAULT_FROM_EMAIL)]
        policy = [("Digest of request errors", f"at most one per prefix every {settings.HANDLES_NOTIFY_DIGEST_SECONDS} s"),
                  ("Retries", f"{settings.HANDLES_NOTIFY_MAX_ATTEMPTS} attempts, backoff from "
                              f"{settings.HANDLES_NOTIFY_BACKOFF_BASE_SECONDS:g} s up to "
                              f"{settings.HANDLES_NOTIFY_BACKOFF_MAX_SECONDS:g} s"),
                  ("Global proxy (watchdog)", settings.HANDLES_GLOBAL_PROXY_URL),
                  ("Watchdog checks", ", ".join(settings.HANDLES_WATCHDOG_CHECKS))]
        context = {**self.admin_site.each_context(request), "title": "Notification settings", "mail": mail,
                   "policy": policy, "endpoints": endpoints, "may_endpoints": may_endpoints,
                   "subscriptions": Subscription.objects.filter(user=user).select_related("prefix"),
                   "address": user.email, "opts": self.model._meta}
        return render(request, "admin/notify/settings.html", context)


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(LabelledFieldsAdmin, admin.ModelAdmin):
    """Model permissions decide: superusers, and staff given handles_notify.*_webhookendpoint."""

    form = WebhookEndpointForm
    list_display = ["name", "url", "prefix", "kinds_display", "active"]
    actions = ["send_test"]

    @admin.display(description="Events")
    def kinds_display(self, obj: WebhookEndpoint) -> str:
        return _kinds(obj.kinds)

    def save_model(self, request: HttpRequest, obj: WebhookEndpoint, form: ModelForm[Any], change: bool) -> None:
        services.endpoint_save(endpoint=obj)

    @admin.action(description="Send a test to the selected endpoints", permissions=["change"])
    def send_test(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        notification = services.test_send(actor=_staff(request), endpoints=list(queryset), to_self=False)
        self.message_user(request, f"Test sent to {counted(queryset.count(), 'endpoint')}: see notification "
                                   f"#{notification.pk} for the responses.")


class DeliveryInline(admin.TabularInline):
    model = Delivery
    fields = ("channel", "recipient", "status_badge", "attempts", "next_attempt_at", "sent_at", "last_error", "log_link")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Notification | None = None) -> bool:
        return False

    @admin.display(description="Status")
    def status_badge(self, obj: Delivery) -> str:
        return _badge(obj.status, obj.get_status_display())

    @admin.display(description="Log")
    def log_link(self, obj: Delivery) -> str:
        return format_html('<a href="{}">{}</a>', reverse("admin:handles_notify_delivery_change", args=[obj.pk]),
                           counted(obj.attempts, "attempt"))


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "kind", "prefix", "subject", "occurrences", "digest_state", "delivered"]
    list_filter = ["kind", "is_digest", "prefix"]
    search_fields = ["subject", "details"]
    fields = ("created_at", "kind", "prefix", "subject", "details", "occurrences", "is_digest", "digest",
              "dedupe_key")
    readonly_fields = fields
    inlines = [DeliveryInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Notification]:
        return super().get_queryset(request).select_related("prefix")

    @admin.display(description="Digest")
    def digest_state(self, obj: Notification) -> str:
        if obj.is_digest:
            return "digest"
        if obj.kind == Kind.REQUEST_ERRORS:
            return f"in digest #{obj.digest_id}" if obj.digest_id else "waiting for the digest"
        return "—"

    @admin.display(description="Deliveries")
    def delivered(self, obj: Notification) -> str:
        rows = list(obj.deliveries.values_list("status", flat=True))
        return ", ".join(f"{rows.count(s)} {s}" for s in sorted(set(rows))) or "—"


class AttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    fields = ("at", "ok", "status_code", "response_excerpt", "error", "elapsed_ms")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Delivery | None = None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "notification", "channel", "recipient", "status_badge", "attempts",
                    "last_status", "last_error"]
    list_filter = ["status", "channel"]
    search_fields = ["recipient", "notification__subject"]
    fields = ("notification", "channel", "recipient", "status", "attempts", "next_attempt_at", "sent_at",
              "last_error")
    readonly_fields = fields
    inlines = [AttemptInline]
    actions = ["send_again"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Delivery]:
        return super().get_queryset(request).select_related("notification")

    @admin.display(description="Status")
    def status_badge(self, obj: Delivery) -> str:
        return _badge(obj.status, obj.get_status_display())

    @admin.display(description="Last response")
    def last_status(self, obj: Delivery) -> str:
        attempt = obj.log.first()
        return f"{attempt.status_code or ''} {attempt.response_excerpt[:80]}".strip() if attempt else "—"

    def has_send_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("handles_notify.view_delivery")

    @admin.action(description="Send again (a fresh set of attempts)", permissions=["send"])
    def send_again(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        count = services.deliveries_retry(delivery_ids=queryset.values_list("pk", flat=True))
        self.message_user(request, f"{counted(count, 'delivery', 'deliveries')} will be sent again.")


@admin.register(WatchdogRun)
class WatchdogRunAdmin(ReadOnlyAdmin):
    list_display = ["started_at", "prefix", "light_badge", "failing_display"]
    list_filter = ["light", "prefix"]
    fields = ("prefix", "started_at", "finished_at", "light", "results_table")
    readonly_fields = fields
    change_list_template = "admin/notify/watchdogrun_changelist.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[WatchdogRun]:
        return super().get_queryset(request).select_related("prefix")

    @admin.display(description="Light")
    def light_badge(self, obj: WatchdogRun) -> str:
        return _badge(obj.light, obj.get_light_display())

    @admin.display(description="Failing checks")
    def failing_display(self, obj: WatchdogRun) -> str:
        return ", ".join(obj.failing) or "—"

    @admin.display(description="Checks")
    def results_table(self, obj: WatchdogRun) -> str:
        rows = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", (
            (services.CHECK_LABELS.get(r["check"], r["check"]),
             _badge({True: "green", False: "red"}.get(r["ok"], "skipped"),
                    {True: "pass", False: "FAIL"}.get(r["ok"], "not checked")), r["detail"])
            for r in obj.results))
        return format_html('<table class="hd-table">{}</table>', rows)

    def get_urls(self) -> list[URLPattern]:
        return [path("run/", self.admin_site.admin_view(self.run_view), name="handles_notify_watchdog_run"),
                *super().get_urls()]

    def run_view(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST":
            if not request.user.has_perm("handles.change_handle"):
                raise PermissionDenied
            self.message_user(request, tasks.watchdog_all() + ". Results appear here when the worker ran them.")
        return HttpResponseRedirect(reverse("admin:handles_notify_watchdogrun_changelist"))
