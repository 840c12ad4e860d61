"""Labels people read: Django derives them from field names ("server_url" -> "Server url"), which spells
acronyms and the Handle System's own names wrongly. One place fixes them for the admin's forms."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.utils.text import capfirst
from django.utils.translation import ngettext

if TYPE_CHECKING:
    from django import forms
    from django.contrib.admin.options import BaseModelAdmin
    from django.db.models import Field
    from django.http import HttpRequest

    _AdminBase = BaseModelAdmin[Any]  # what the mixin is mixed into, so that super() is typed
else:
    _AdminBase = object

_SPELLINGS: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    (re.compile(r"\bhs[ _]admin\b", re.IGNORECASE), "HS_ADMIN"),
    (re.compile(r"\b(url|tls|api|csv|http|json|iiif)\b", re.IGNORECASE), lambda m: m.group(1).upper()),
]


def label(text: str) -> str:
    """'server url' -> 'Server URL', 'hs admin handle' -> 'HS_ADMIN handle', 'tls mode' -> 'TLS mode'."""
    for pattern, replacement in _SPELLINGS:
        text = pattern.sub(replacement, text)
    return capfirst(text)


class LabelledFieldsAdmin(_AdminBase):
    """ModelAdmin mixin: the change form's labels spelled by `label` (no model or migration change)."""

    def formfield_for_dbfield(self, db_field: Field[Any, Any], request: HttpRequest,
                              **kwargs: Any) -> forms.Field | None:
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if field is not None and field.label:
            field.label = label(str(field.label))
        return field


def counted(number: int, singular: str, plural: str = "") -> str:
    """A count and its noun, agreeing: '1 handle', '2 handles', '12,078 lines' (Django's ngettext)."""
    return f"{number:,} {ngettext(singular, plural or singular + 's', number)}"
