"""Forms of the desk: the find-and-replace rule, and the browse pages' filter form."""

from __future__ import annotations

from django import forms

from handles.desk.models import Collection
from handles.desk.selectors import SyncState, health_choices, source_systems
from handles.models import Handle, Prefix


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

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("find") is not None and cleaned.get("find") == cleaned.get("replace"):
            raise forms.ValidationError("Find and replace are the same: nothing would change.")
        return cleaned


class DateRangeForm(forms.Form):
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}),
                            help_text="Up to and including this day.")


SORTS = {
    "handle": ("Handle A–Z", ["prefix_id", "suffix_key"]),
    "-handle": ("Handle Z–A", ["-prefix_id", "-suffix_key"]),
    "-updated": ("Recently changed", ["-updated_at", "-pk"]),
    "updated": ("Least recently changed", ["updated_at", "pk"]),
    "-created": ("Newest", ["-pk"]),
    "created": ("Oldest", ["pk"]),
}


class BrowseForm(forms.Form):
    """The browse page's filters: the same names as the admin list's, so a link works in both."""

    q = forms.CharField(required=False, max_length=500, label="Search",
                        widget=forms.TextInput(attrs={"placeholder": "Handle, suffix, URL, title or asset id",
                                                      "size": 40, "type": "search"}))
    prefix = forms.ChoiceField(required=False, error_messages={"invalid_choice": "There is no prefix with id %(value)s."})
    collection = forms.ChoiceField(required=False,
                                   error_messages={"invalid_choice": "There is no collection with id %(value)s."})
    source = forms.ChoiceField(required=False, label="Source system",
                               error_messages={"invalid_choice": "No asset comes from the source system %(value)s."})
    status = forms.ChoiceField(required=False, choices=[("", "Any status"), *Handle.Status.choices],
                               error_messages={"invalid_choice": "Unknown status %(value)s."})
    sync = forms.ChoiceField(required=False, choices=[("", "Any sync state"), *SyncState.CHOICES],
                             error_messages={"invalid_choice": "Unknown sync state %(value)s."})
    health = forms.ChoiceField(required=False, label="Latest health check",
                               error_messages={"invalid_choice": "Unknown health check outcome %(value)s."})
    sort = forms.ChoiceField(required=False, choices=[(key, label) for key, (label, _) in SORTS.items()],
                             error_messages={"invalid_choice": "Unknown sort order %(value)s (one of "
                                             + ", ".join(SORTS) + ")."})

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["prefix"].choices = [("", "Any prefix")] + [
            (str(p.pk), f"{p.prefix} ({p.site_name})") for p in Prefix.objects.order_by("prefix")]
        self.fields["collection"].choices = [("", "Any collection")] + [
            (str(c.pk), c.name) for c in Collection.objects.order_by("name")]
        self.fields["source"].choices = [("", "Any source")] + [(s, s) for s in source_systems()]
        self.fields["health"].choices = [("", "Any health")] + health_choices()

    def ordering(self) -> tuple[str, list[str]]:
        key = (self.cleaned_data.get("sort") if self.is_valid() else "") or "handle"
        return key, SORTS[key][1]
