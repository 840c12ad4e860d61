"""Notifications to staff (email, webhooks) and the prefix watchdog's history.

Never lost, never a flood: every event is a Notification row; request errors are collected into one digest
per prefix and interval; each message to each recipient is a Delivery that is retried with backoff, and
every attempt is kept (DeliveryAttempt) with what the other side answered. Writes happen in services.py.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from handles.models import Prefix


class Kind(models.TextChoices):
    REQUEST_ERRORS = "request_errors", "Requests that ended in error (a digest per interval)"
    SERVER = "server", "Handle server unreachable or refusing our credentials, and its recovery"
    DRIFT = "drift", "Drift found by a reconciliation"
    HEALTH = "health", "Resolution health dropped, or more broken / wrong-object handles"
    JOB = "job", "A job that ended incomplete or failed"
    WATCHDOG = "watchdog", "Watchdog alarm (registration, homing, global resolution, our pages) and recovery"
    TEST = "test", "Test message"


SUBSCRIBABLE = [(value, label) for value, label in Kind.choices if value != Kind.TEST]


class Subscription(models.Model):
    """A staff member's email subscription: these kinds of event, for one prefix or for every prefix."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notify_subscriptions")
    prefix = models.ForeignKey(Prefix, on_delete=models.CASCADE, null=True, blank=True, related_name="+",
                               help_text="Leave empty for every prefix (and events that concern no one prefix).")
    kinds = models.JSONField(default=list, help_text="The kinds of event to be told about.")
    email = models.EmailField(blank=True, help_text="Where to send; empty: the user's own address.")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["user__username", "prefix__prefix"]
        constraints = [
            models.UniqueConstraint(fields=["user", "prefix"], name="one_subscription_per_user_prefix"),
            models.UniqueConstraint(fields=["user"], condition=Q(prefix__isnull=True),
                                    name="one_all_prefix_subscription_per_user"),
        ]

    def __str__(self) -> str:
        return f"{self.user} · {self.prefix.prefix if self.prefix else 'every prefix'}"

    @property
    def address(self) -> str:
        return self.email or getattr(self.user, "email", "") or ""


def new_webhook_secret() -> str:
    return secrets.token_urlsafe(32)


class WebhookEndpoint(models.Model):
    """A URL that receives events as JSON, signed with HMAC-SHA256 under this endpoint's own secret."""

    name = models.CharField(max_length=100)
    url = models.URLField(max_length=1000)
    secret = models.CharField(max_length=200, default=new_webhook_secret,
                              help_text="Shared with the receiver, who checks the X-Handles-Signature header.")
    prefix = models.ForeignKey(Prefix, on_delete=models.CASCADE, null=True, blank=True, related_name="+",
                               help_text="Leave empty for every prefix.")
    kinds = models.JSONField(default=list)
    body_template = models.TextField(
        blank=True,
        help_text='Optional: the JSON body as a Django template, e.g. {"text": {{ text_json }}} for a chat '
        "service. Variables: id, kind, prefix, subject, details, created_at, url (plain text) and "
        "subject_json, details_json, text_json, payload_json (JSON values). Empty: the standard JSON body.",
    )
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Notification(models.Model):
    """One event (or one digest of request errors) to tell subscribers about."""

    kind = models.CharField(max_length=20, choices=Kind.choices, db_index=True)
    prefix = models.ForeignKey(Prefix, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    subject = models.CharField(max_length=300)
    details = models.TextField(blank=True)
    dedupe_key = models.CharField(max_length=200, blank=True, db_index=True)
    occurrences = models.PositiveIntegerField(default=1, help_text="How many events this row stands for.")
    # Request errors wait for their prefix's digest: `digest` is the digest that collected them.
    digest = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="collected")
    is_digest = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["kind", "prefix"], condition=Q(digest__isnull=True, is_digest=False),
                                name="notification_undigested_idx")]

    def __str__(self) -> str:
        return self.subject


class Delivery(models.Model):
    """One notification to one recipient (an email address or a webhook endpoint), retried until sent."""

    class Channel(models.TextChoices):
        EMAIL = "email", "Email"
        WEBHOOK = "webhook", "Webhook"

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        SENDING = "sending", "sending"
        SENT = "sent", "sent"
        FAILED = "failed", "failed (gave up)"

    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.CharField(max_length=10, choices=Channel.choices)
    subscription = models.ForeignKey(Subscription, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.SET_NULL, null=True, blank=True,
                                 related_name="deliveries")
    recipient = models.CharField(max_length=1000, help_text="The email address, or the endpoint's name and host.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "deliveries"

    def __str__(self) -> str:
        return f"{self.channel} to {self.recipient}: {self.status}"


class DeliveryAttempt(models.Model):
    """What one try at a delivery got back: the log the admin shows."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="log")
    at = models.DateTimeField(default=timezone.now)
    ok = models.BooleanField()
    status_code = models.PositiveIntegerField(null=True, blank=True, help_text="HTTP status, or SMTP reply code.")
    response_excerpt = models.CharField(max_length=1000, blank=True)
    error = models.TextField(blank=True)
    elapsed_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {'ok' if self.ok else 'failed'}"


class Condition(models.Model):
    """The last known state of something that alarms on change only (a prefix's server, one watchdog check):
    staff hear when it starts failing and when it recovers, never again while it keeps failing."""

    key = models.CharField(max_length=200, unique=True)
    failing = models.BooleanField(default=False)
    detail = models.TextField(blank=True)
    changed_at = models.DateTimeField(default=timezone.now)
    checked_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.key}: {'failing' if self.failing else 'ok'}"


class WatchdogRun(models.Model):
    """One watchdog pass over one prefix: each check's result, and the light the dashboard shows."""

    class Light(models.TextChoices):
        GREEN = "green", "all checks pass"
        RED = "red", "a check fails"

    prefix = models.ForeignKey(Prefix, on_delete=models.CASCADE, related_name="+")
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    light = models.CharField(max_length=10, choices=Light.choices)
    results = models.JSONField(default=list, help_text="[{check, ok (true/false/null: not checked), detail}]")
    failing = models.JSONField(default=list, help_text="Names of the checks that failed.")

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["prefix", "-id"], name="watchdog_prefix_latest_idx")]

    def __str__(self) -> str:
        return f"Watchdog {self.prefix.prefix} {self.started_at:%Y-%m-%d %H:%M} {self.light}"
