"""Forms of the desk: the find-and-replace rule, and the browse pages' filter form."""

from __future__ import annotations

from typing import Any

from django import forms
from django.forms.utils import ErrorDict, ErrorList

from handles.desk.filters import BROWSE


class RedirectRuleForm(forms.Form):
    find = forms.CharField(max_length=2000, strip=False, widget=forms.TextInput(attrs={"size": 80}),
                           help_text="Text to find in the target URLs (case-sensitive), e.g. http://old-dams.example.edu/")
    replace = forms.CharField(max_length=2000, required=False, strip=False,
                              widget=forms.TextInput(attrs={"size": 80}),
                              help_text="What to put in its place (every occurrence), e.g. https://dams.example.edu/")

    def clean_find(self) -> str:
        find = self.cleaned_data["find"]
        if not find.strip():
            raise forms.ValidationError("Give the text to find.")
        return find

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        if cleaned.get("find") is not None and cleaned.get("find") == cleaned.get("replace"):
            raise forms.ValidationError("Find and replace are the same: nothing would change.")
        return cleaned


class BrowseForm(forms.Form):
    """The browse page's filter menus. It shows the query string's values; handles.desk.filters.BROWSE
    checks them (one check for every surface), so this form is never validated itself."""

    q = forms.CharField(required=False, label="Search",
                        widget=forms.TextInput(attrs={"placeholder": "Handle, suffix, URL, title or asset id",
                                                      "size": 40, "type": "search"}))
    # A field named prefix: the stubs take it for BaseForm.prefix (the metaclass leaves that one alone).
    prefix = forms.ChoiceField(required=False)  # type: ignore[assignment]
    collection = forms.ChoiceField(required=False)
    source = forms.ChoiceField(required=False, label="Source system")
    status = forms.ChoiceField(required=False)
    sync = forms.ChoiceField(required=False)
    health = forms.ChoiceField(required=False, label="Latest health check")
    sort = forms.ChoiceField(required=False)

    ANY = {"prefix": "Any prefix", "collection": "Any collection", "source": "Any source", "status": "Any status",
           "sync": "Any sync state", "health": "Any health"}

    def __init__(self, *args: Any, problems: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.problems = problems or {}
        for name, field in self.fields.items():
            if isinstance(field, forms.ChoiceField):
                any_value = [("", self.ANY[name])] if name in self.ANY else []
                field.choices = any_value + BROWSE.choices(name)

    def full_clean(self) -> None:
        """The errors shown beside the menus are the filter's refusals (the form checks nothing itself)."""
        self.cleaned_data = {}
        self._errors = ErrorDict({name: ErrorList([message]) for name, message in self.problems.items()
                                  if name in self.fields})
