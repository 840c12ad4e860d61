"""Sending one delivery: an email through Django's mail settings, or a signed JSON POST to a webhook.

No retries here and no database writes: the caller (tasks.deliver) records what came back, and the minute
sweep sends again after a backoff.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import time
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.mail import EmailMessage
from django.template import Context, Engine

from handles.notify.models import Delivery, Notification, WebhookEndpoint
from handles.notify.services import AttemptResult, admin_url

SIGNATURE_HEADER = "X-Handles-Signature"
TIMESTAMP_HEADER = "X-Handles-Timestamp"
_template_engine = Engine(autoescape=False)


def notification_url(notification: Notification) -> str:
    return admin_url("admin:handles_notify_notification_change", notification.pk)


def payload(notification: Notification) -> dict[str, Any]:
    """The standard webhook body."""
    return {
        "id": notification.pk,
        "kind": notification.kind,
        "prefix": notification.prefix.prefix if notification.prefix else None,
        "subject": notification.subject,
        "details": notification.details,
        "occurrences": notification.occurrences,
        "created_at": notification.created_at.isoformat(),
        "url": notification_url(notification),
    }


def render_body(template: str, notification: Notification) -> str:
    """The body an endpoint's template makes (its variables are in WebhookEndpoint.body_template's help)."""
    data = payload(notification)
    text = f"{notification.subject}\n{notification.details}".strip()
    context = {**{k: "" if v is None else v for k, v in data.items()},
               "subject_json": json.dumps(notification.subject), "details_json": json.dumps(notification.details),
               "text_json": json.dumps(text), "payload_json": json.dumps(data)}
    return _template_engine.from_string(template).render(Context(context, autoescape=False))


def webhook_body(endpoint: WebhookEndpoint, notification: Notification) -> bytes:
    if endpoint.body_template.strip():
        return render_body(endpoint.body_template, notification).encode("utf-8")
    return json.dumps(payload(notification), ensure_ascii=False).encode("utf-8")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256 over "<timestamp>.<body>": a receiver rejects an old timestamp, so a captured request
    cannot be replayed later, and a changed body or timestamp breaks the signature."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def send_webhook(delivery: Delivery) -> AttemptResult:
    endpoint, notification = delivery.endpoint, delivery.notification
    if endpoint is None:
        return AttemptResult(ok=False, error="The endpoint was deleted.")
    try:
        body = webhook_body(endpoint, notification)
    except Exception as exc:  # a broken template: staff see it in the log
        return AttemptResult(ok=False, error=f"The body template failed: {exc}")
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "handles-notify/1.0",
               TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign(endpoint.secret, timestamp, body),
               "X-Handles-Event": notification.kind, "X-Handles-Delivery": str(delivery.pk)}
    started = time.monotonic()
    try:
        response = requests.post(endpoint.url, data=body, headers=headers, allow_redirects=False,
                                 timeout=settings.HANDLES_NOTIFY_WEBHOOK_TIMEOUT)
    except requests.RequestException as exc:
        return AttemptResult(ok=False, error=_redacted(f"{exc.__class__.__name__}: {exc}", endpoint.url)[:2000],
                             elapsed_ms=int((time.monotonic() - started) * 1000))
    return AttemptResult(ok=200 <= response.status_code < 300, status_code=response.status_code,
                         response_excerpt=response.text[:500], elapsed_ms=int((time.monotonic() - started) * 1000))


def _redacted(text: str, url: str) -> str:
    """The error without the endpoint's path and query, which may hold its token (see webhook_recipient)."""
    parts = urlsplit(url)
    for secret in filter(None, [parts.path + (f"?{parts.query}" if parts.query else ""), parts.path, parts.query]):
        if secret not in ("/", ""):
            text = text.replace(secret, "/…")
    return text


def email_text(notification: Notification) -> str:
    lines = [notification.subject, "", notification.details or "(no details)", ""]
    if notification.prefix:
        lines.append(f"Prefix: {notification.prefix.prefix}")
    lines += [f"When: {notification.created_at:%Y-%m-%d %H:%M:%S %Z}", f"In the admin: {notification_url(notification)}",
              "", "You receive this because you subscribed to these events. Change that under "
              f"{admin_url('admin:handles_notify_subscription_changelist')}"]
    return "\n".join(lines)


def send_email(delivery: Delivery) -> AttemptResult:
    notification = delivery.notification
    message = EmailMessage(subject=f"{settings.HANDLES_NOTIFY_SUBJECT_PREFIX}{notification.subject}",
                           body=email_text(notification), to=[delivery.recipient])
    started = time.monotonic()
    try:
        message.send(fail_silently=False)
    except smtplib.SMTPResponseException as exc:
        return AttemptResult(ok=False, status_code=exc.smtp_code, error=f"SMTP {exc.smtp_code}: {exc.smtp_error!r}",
                             elapsed_ms=int((time.monotonic() - started) * 1000))
    except Exception as exc:  # refused, unreachable, or a message Django will not send: logged, tried again
        return AttemptResult(ok=False, error=f"{exc.__class__.__name__}: {exc}"[:2000],
                             elapsed_ms=int((time.monotonic() - started) * 1000))
    return AttemptResult(ok=True, response_excerpt=f"accepted by {settings.EMAIL_HOST}:{settings.EMAIL_PORT}",
                         elapsed_ms=int((time.monotonic() - started) * 1000))


def send(delivery: Delivery) -> AttemptResult:
    if delivery.channel == Delivery.Channel.WEBHOOK:
        return send_webhook(delivery)
    return send_email(delivery)
