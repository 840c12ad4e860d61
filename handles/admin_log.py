"""Desk actions in the admin's "Recent actions" and object history (LogEntry), as the admin records the
changes it makes itself: the custom pages (mint, redirect, bulk jobs, imports, repairs) record theirs here."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.db.models import Model
from django.http import HttpRequest

__all__ = ["ADDITION", "CHANGE", "log_desk_action"]


def log_desk_action(request: HttpRequest, objects: Iterable[Model], message: str, flag: int = CHANGE) -> None:
    """One LogEntry per object, by the signed-in user (Django 5.2's LogEntry.objects.log_actions)."""
    objects = list(objects)
    if objects and request.user.is_authenticated:
        LogEntry.objects.log_actions(request.user.pk, objects, flag, change_message=message)
