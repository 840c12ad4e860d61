"""Admin forms of imports, reconciliation and health checks. They parse input; services decide and write."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile

from handles.models import Handle, Prefix
from handles.repair.models import (
    MAPPING_FIELDS,
    HealthOutcome,
    HealthRun,
    ImportMode,
    ImportPreset,
    ReconciliationRow,
)
from handles.repair.rules import template_error

FIELD_LABELS = {
    "handle": "Handle (11084/99, hdl:11084/99 or https://hdl.handle.net/11084/99)",
    "prefix": "Prefix",
    "suffix": "Suffix",
    "url": "Target URL",
    "source_system": "Asset source system",
    "external_id": "Asset external id",
    "title": "Title",
}


class UploadForm(forms.Form):
    file = forms.FileField(help_text="A CSV file. The first line names the columns.")
    preset = forms.ModelChoiceField(queryset=ImportPreset.objects.all(), required=False,
                                    help_text="Read it with a saved mapping (you can still change it next).")
    encoding = forms.ChoiceField(choices=ImportPreset.Encoding.choices, initial=ImportPreset.Encoding.UTF8)
    delimiter = forms.ChoiceField(choices=ImportPreset.Delimiter.choices, initial=ImportPreset.Delimiter.AUTO)

    def clean_file(self) -> UploadedFile:
        upload = self.cleaned_data["file"]
        if upload.size > settings.HANDLES_IMPORT_MAX_BYTES:
            raise forms.ValidationError(f"The file is {upload.size:,} bytes; at most "
                                        f"{settings.HANDLES_IMPORT_MAX_BYTES:,} are accepted. Split it.")
        return upload


class ImportPresetForm(forms.ModelForm):
    class Meta:
        model = ImportPreset
        fields = ["name", *(f"{name}_column" for name in MAPPING_FIELDS), "prefix", "source_system", "url_template",
                  "mode", "encoding", "delimiter"]

    def clean_url_template(self) -> str:
        template = self.cleaned_data["url_template"].strip()
        if template and (problem := template_error(template)):
            raise forms.ValidationError(problem)
        return template


class MappingForm(forms.Form):
    """Which column of this file is which of our fields; choices are the file's own column names."""

    # A field named prefix: the stubs take it for BaseForm.prefix (the metaclass leaves that one alone).
    prefix = forms.ModelChoiceField(queryset=Prefix.objects.all(), required=False,  # type: ignore[assignment]
                                    help_text="For lines that give only a suffix. Its URL template is used "
                                    "when no column gives the target URL.")
    source_system = forms.CharField(max_length=64, required=False,
                                    help_text="Source system of the assets when no column names it, e.g. alma.")
    url_template = forms.CharField(max_length=2000, required=False, widget=forms.TextInput(attrs={"size": 100}),
                                   help_text="e.g. https://grinnell.primo.exlibrisgroup.com/discovery/fulldisplay/"
                                   "alma{external_id}/01GCL_INST:GCL. Placeholders: {external_id}, {suffix}, "
                                   "{prefix}, {source_system}. Empty: the column, or the prefix's template.")
    mode = forms.ChoiceField(choices=ImportMode.choices, widget=forms.RadioSelect, initial=ImportMode.ADOPT)
    save_preset_as = forms.CharField(max_length=100, required=False,
                                     help_text="Optional: save this mapping as a preset under this name.")

    def __init__(self, *args: Any, header: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = [("", "(not in this file)")] + [(name, name) for name in header if name]
        for name in reversed(MAPPING_FIELDS):
            self.fields = {f"column_{name}": forms.ChoiceField(choices=choices, required=False,
                                                               label=FIELD_LABELS[name]), **self.fields}

    def clean_url_template(self) -> str:
        template = self.cleaned_data["url_template"].strip()
        if template and (problem := template_error(template)):
            raise forms.ValidationError(problem)
        return template

    def mapping(self) -> dict[str, str]:
        return {name: self.cleaned_data.get(f"column_{name}", "") for name in MAPPING_FIELDS}


class ReconcileForm(forms.Form):
    # A field named prefix: the stubs take it for BaseForm.prefix (the metaclass leaves that one alone).
    prefix = forms.ModelChoiceField(queryset=Prefix.objects.all(), empty_label=None)  # type: ignore[assignment]


class RepairForm(forms.Form):
    """Repair whole classes, or the rows ticked in the table."""

    kinds = forms.MultipleChoiceField(choices=ReconciliationRow.Kind.choices, required=False,
                                      widget=forms.CheckboxSelectMultiple)
    rows = forms.CharField(required=False, widget=forms.HiddenInput)

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        try:
            data["row_ids"] = [int(pk) for pk in (data.get("rows") or "").split(",") if pk.strip()]
        except ValueError:
            raise forms.ValidationError("The chosen rows are not valid.") from None
        if not data["row_ids"] and not data.get("kinds"):
            raise forms.ValidationError("Choose the classes or the rows to repair.")
        return data


class HealthCheckForm(forms.Form):
    prefixes = forms.ModelMultipleChoiceField(queryset=Prefix.objects.all(), required=False,
                                              help_text="None chosen: every prefix.")
    source_system = forms.CharField(max_length=64, required=False)
    status = forms.ChoiceField(choices=[("", "any live status"), (Handle.Status.ACTIVE, "active"),
                                        (Handle.Status.PENDING, "pending"), (Handle.Status.TOMBSTONED, "tombstoned")],
                               required=False)
    limit = forms.IntegerField(min_value=1, required=False, help_text="Check at most this many handles.")
    via_proxy = forms.BooleanField(required=False, label="Through the proxy resolver",
                                   help_text=f"Ask {settings.HANDLES_HEALTH_PROXY_BASE} instead of our Handle server.")
    title_check = forms.BooleanField(required=False, label="Compare page titles",
                                     help_text="Also compare each page's title with the asset's title.")

    def filters(self) -> dict:
        data = self.cleaned_data
        filters = {"prefix_ids": [p.pk for p in data["prefixes"]], "source_system": data["source_system"].strip(),
                   "status": data["status"], "limit": data["limit"], "via_proxy": data["via_proxy"],
                   "title_check": data["title_check"]}
        return {key: value for key, value in filters.items() if value}


class HealthResultsFilter(forms.Form):
    """The health page's filters (GET). A value that is not one of the choices is an error (400), never
    a silently wider list."""

    ORIGINS = [("", "Vendor or legacy"), ("vendor", "Vendor sequence"), ("legacy", "Legacy (not the vendor's)")]

    run = forms.IntegerField(required=False, min_value=1, label="Health check #")
    outcome = forms.ChoiceField(required=False, choices=[("", "Not correct (all)"), *HealthOutcome.choices])
    # A field named prefix: the stubs take it for BaseForm.prefix (the metaclass leaves that one alone).
    prefix = forms.ModelChoiceField(  # type: ignore[assignment]
        queryset=Prefix.objects.order_by("prefix"), required=False, empty_label="Any prefix")
    source = forms.CharField(required=False, max_length=64, label="Source system")
    origin = forms.ChoiceField(required=False, choices=ORIGINS, label="Vendor or legacy")
    page = forms.IntegerField(required=False, min_value=1)

    def clean_source(self) -> str:
        return self.cleaned_data["source"].strip().lower()

    def clean_run(self) -> int | None:
        run_id = self.cleaned_data["run"]
        if run_id and not HealthRun.objects.filter(pk=run_id).exists():
            raise forms.ValidationError(f"There is no health check #{run_id}.")
        return run_id

    def as_params(self) -> dict[str, str]:
        data = self.cleaned_data
        params = {"run": data["run"], "outcome": data["outcome"], "prefix": data["prefix"].pk if data["prefix"]
                  else "", "source": data["source"], "origin": data["origin"]}
        return {key: str(value) for key, value in params.items() if value}


class IdsField(forms.MultipleChoiceField):
    """Row ids ticked in a list: any positive integers (the service decides what each may be)."""

    def valid_value(self, value: Any) -> bool:
        return str(value).isdigit() and len(str(value)) < 19

    def clean(self, value: Any) -> list[int]:
        return [int(v) for v in super().clean(value)]


class HealthRepairForm(forms.Form):
    """What to do with the handles chosen on the health page: their ids, or every one the filters match."""

    ACTIONS = [("repair", "Repair: push our record to the Handle server (create it if missing)"),
               ("verify", "Verify: read the server's record and compare it with ours")]

    action = forms.ChoiceField(choices=ACTIONS)
    handles = IdsField(required=False)
    all_matching = forms.BooleanField(required=False)

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        if not cleaned.get("handles") and not cleaned.get("all_matching"):
            raise forms.ValidationError("Choose the handles to act on (or all that match the filters).")
        return cleaned


class ConflictForm(forms.Form):
    """The record that keeps a handle the file cites for several records, and what becomes of the others."""

    keep = forms.IntegerField(min_value=1, error_messages={"required": "Choose the record that keeps the handle."})
    others = forms.ChoiceField(choices=[("flag", "Flag them as needing a handle"),
                                        ("new_handle", "Mint a new handle for each")], initial="flag")
