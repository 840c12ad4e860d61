"""Forms for the admin's handle desk. Validation reuses handles.validators; writes go to services."""

from typing import Any

from django import forms
from django.contrib.admin import AdminSite
from django.contrib.admin.widgets import AutocompleteSelect
from django.core.exceptions import ValidationError

from handles.models import Asset, Handle, Prefix
from handles.validators import validate_new_suffix, validate_target_url

URL_WIDGET = forms.URLInput(attrs={"size": 90, "placeholder": "https://..."})


class MintForm(forms.Form):
    # A field named like Form.prefix (the HTML name prefix): the form's metaclass moves declared fields into
    # base_fields, so it never replaces that attribute, which the stubs cannot see.
    prefix = forms.ModelChoiceField(queryset=Prefix.objects.all(), empty_label=None)  # type: ignore[assignment]
    suffix = forms.CharField(
        required=False, max_length=255, validators=[validate_new_suffix],
        help_text="Leave empty to let the prefix's suffix policy choose (random opaque, or the asset's id).",
        widget=forms.TextInput(attrs={"size": 40}),
    )
    target_url = forms.CharField(label="Target URL", max_length=2000, validators=[validate_target_url],
                                 widget=URL_WIDGET)
    asset = forms.ModelChoiceField(queryset=Asset.objects.all(), required=False,
                                   help_text="The digital object this handle identifies (optional): type part of "
                                             "its external id or title.")

    def __init__(self, *args: Any, admin_site: AdminSite | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if admin_site is not None:
            # There may be 100,000 assets: the admin's autocomplete (the Asset admin's search_fields, a page
            # of results at a time) instead of a select that lists them all.
            asset = self.fields["asset"]
            assert isinstance(asset, forms.ModelChoiceField)  # declared above
            asset.widget = AutocompleteSelect(Handle._meta.get_field("asset"), admin_site, attrs={"style": "width: 36em"})
            asset.widget.choices = asset.choices  # as the field does for the widget it was built with
        default = Prefix.objects.filter(is_default=True).first()
        if default is not None:
            self.fields["prefix"].initial = default.pk


class RedirectForm(forms.Form):
    target_url = forms.CharField(label="New target URL", max_length=2000, validators=[validate_target_url],
                                 widget=URL_WIDGET)


class TombstoneForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 80}), max_length=2000,
                             help_text="Shown on the public tombstone page.")
    successor_url = forms.CharField(label="Successor link", required=False, max_length=2000,
                                    validators=[validate_target_url], widget=URL_WIDGET,
                                    help_text="Optional: where the object, or its replacement, now lives.")

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise ValidationError("Give the reason; the tombstone page shows it.")
        return reason


class ConfirmForm(forms.Form):
    reason = forms.CharField(required=False, max_length=2000, widget=forms.TextInput(attrs={"size": 80}),
                             help_text="Optional note kept in the request log.")


class DateRangeForm(forms.Form):
    """Days, in the site's time zone: the request log's date filter and the failures page."""

    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}),
                            help_text="Up to and including this day.")
