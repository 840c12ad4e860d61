"""Labels people read: Django derives them from field names ("server_url" -> "Server url"), which spells
acronyms and the Handle System's own names wrongly. One place fixes them for the admin's forms."""

from __future__ import annotations

import re

from django.utils.text import capfirst
from django.utils.translation import ngettext

_SPELLINGS = [
    (re.compile(r"\bhs[ _]admin\b", re.IGNORECASE), "HS_ADMIN"),
    (re.compile(r"\b(url|tls|api|csv|http|json|iiif)\b", re.IGNORECASE), lambda m: m.group(1).upper()),
]


def label(text: str) -> str:
    """'server url' -> 'Server URL', 'hs admin handle' -> 'HS_ADMIN handle', 'tls mode' -> 'TLS mode'."""
    for pattern, replacement in _SPELLINGS:
        text = pattern.sub(replacement, text)
    return capfirst(text)


class LabelledFieldsAdmin:
    """ModelAdmin mixin: the change form's labels spelled by `label` (no model or migration change)."""

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if field is not None and field.label:
            field.label = label(str(field.label))
        return field


def counted(number: int, singular: str, plural: str = "") -> str:
    """A count and its noun, agreeing: '1 handle', '2 handles', '12,078 lines' (Django's ngettext)."""
    return f"{number:,} {ngettext(singular, plural or singular + 's', number)}"
