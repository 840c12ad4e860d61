"""Forms that validate API input: JSON bodies (strict types) and query strings.

They check shape and syntax only; the services check state (exists, deleted, allowed ...).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator

from handles.models import Handle
from handles.validators import validate_new_suffix, validate_prefix, validate_target_url

MAX_PAGE_SIZE = 1000
SOURCE_SYSTEM_VALIDATOR = RegexValidator(r"^[a-z0-9][a-z0-9_.-]*$", "Lower-case letters, digits, '.', '_' and '-'.",
                                         code="invalid_source_system")


class JsonText(forms.CharField):
    """A JSON string: numbers, lists and objects are refused, not turned into text. Not stripped:
    what the client sent is what we check."""

    default_error_messages = {"invalid_type": "Must be a JSON string.",
                              "invalid_text": "Contains characters that are not valid Unicode text."}

    def __init__(self, *, allow_blank: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("strip", False)
        super().__init__(**kwargs)
        self.allow_blank = allow_blank  # "" is a value (e.g. clear the title), not a missing one

    def to_python(self, value: Any) -> str:
        if value is not None and not isinstance(value, str):
            raise ValidationError(self.error_messages["invalid_type"], code="invalid_type")
        try:
            (value or "").encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate such as "\ud800" is valid JSON but not text
            raise ValidationError(self.error_messages["invalid_text"], code="invalid_text") from None
        return super().to_python(value)


def url_field(**kwargs: Any) -> JsonText:
    return JsonText(max_length=settings.HANDLES_MAX_URL_LENGTH, validators=[validate_target_url], **kwargs)


def prefix_field(**kwargs: Any) -> forms.CharField:
    return JsonText(max_length=64, validators=[validate_prefix], **kwargs)


# --- Bodies ---------------------------------------------------------------------------------------
class CreateHandleForm(forms.Form):
    handle = JsonText(required=False, max_length=255, validators=[validate_new_suffix])
    url = url_field()
    prefix = prefix_field(required=False)

    def clean_handle(self) -> str:
        suffix = self.cleaned_data["handle"]
        if suffix.lower().startswith(("hdl:", "http://", "https://")):
            raise ValidationError("Give the suffix only, such as 'x7kq2m', not a full or resolver form.",
                                  code="invalid_suffix")
        return suffix


class UpdateHandleForm(forms.Form):
    url = url_field()


class AssetRefForm(forms.Form):
    source_system = JsonText(max_length=64, validators=[SOURCE_SYSTEM_VALIDATOR])
    external_id = JsonText(max_length=255)


class PublishForm(AssetRefForm):
    url = url_field()
    title = JsonText(required=False, max_length=1000, allow_blank=True)
    prefix = prefix_field(required=False)
    handle = JsonText(required=False, max_length=255, validators=[validate_new_suffix])


class ChangeUrlForm(AssetRefForm):
    url = url_field()


class AssetDeleteForm(AssetRefForm):
    reason = JsonText(required=False, max_length=2000, allow_blank=True)


# --- Query strings --------------------------------------------------------------------------------
class HandleListForm(forms.Form):
    prefix = forms.CharField(required=False, max_length=64, validators=[validate_prefix])
    status = forms.ChoiceField(required=False, choices=Handle.Status.choices)
    source_system = forms.CharField(required=False, max_length=64, validators=[SOURCE_SYSTEM_VALIDATOR])
    external_id = forms.CharField(required=False, max_length=255, strip=False)
    changed_since = forms.DateTimeField(required=False)
    cursor = forms.CharField(required=False, max_length=200)
    limit = forms.IntegerField(required=False, min_value=1, max_value=MAX_PAGE_SIZE)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("external_id") and not data.get("source_system"):
            raise ValidationError("Filtering by external_id needs source_system too.", code="source_system_required")
        return data


class RemoteListForm(forms.Form):
    page = forms.IntegerField(required=False, min_value=0, max_value=10_000_000)
    page_size = forms.IntegerField(required=False, min_value=1, max_value=MAX_PAGE_SIZE)


class AssetQueryForm(forms.Form):
    source_system = forms.CharField(max_length=64, validators=[SOURCE_SYSTEM_VALIDATOR])
    external_id = forms.CharField(max_length=255, strip=False)


class HandleQueryForm(forms.Form):
    handle = forms.CharField(max_length=400, help_text="PREFIX/SUFFIX, hdl:PREFIX/SUFFIX or a resolver URL.")


class UrlQueryForm(forms.Form):
    url = forms.CharField(max_length=settings.HANDLES_MAX_URL_LENGTH, strip=False, validators=[validate_target_url])
