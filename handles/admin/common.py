"""What the core's ModelAdmins share: badges, the change permission, and the list filters' refusal."""

from __future__ import annotations

import datetime
from typing import NoReturn

from django.contrib import messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.forms import BaseForm
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html


def may_change_handles(request: HttpRequest) -> bool:
    return request.user.has_perm("handles.change_handle")


def badge(state: str, label: str, title: str = "") -> str:
    return format_html('<span class="hd-badge hd-{}" title="{}">{}</span>', state, title, label)


def refuse(request: HttpRequest, reason: str) -> NoReturn:
    """An invalid value of a list filter: the admin's convention (the list redirects to ?e=1), with why.
    The list never shows more rows than were asked for."""
    messages.error(request, f"The list's filter was refused: {reason}")
    raise IncorrectLookupParameters(reason)


def form_problems(form: BaseForm) -> str:
    return " ".join(f"{name}: {' '.join(map(str, errors))}" for name, errors in form.errors.items())


def day_range(cleaned: dict) -> tuple:
    """Aware datetimes for a since/until pair of days (until is inclusive)."""
    since = until = None
    if cleaned.get("since"):
        since = timezone.make_aware(datetime.datetime.combine(cleaned["since"], datetime.time.min))
    if cleaned.get("until"):
        until = timezone.make_aware(datetime.datetime.combine(cleaned["until"] + datetime.timedelta(days=1),
                                                              datetime.time.min))
    return since, until
