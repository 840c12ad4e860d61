"""Template helpers for the custom admin pages, so their forms look and behave like the admin's own."""

from __future__ import annotations

from django import forms, template
from django.contrib.admin import helpers
from django.forms.utils import pretty_name

from handles.labels import label

register = template.Library()


@register.simple_tag
def admin_form(form: forms.BaseForm) -> helpers.AdminForm:
    """The form as the admin's change form wraps it: one fieldset of every field, for the admin's own
    `admin/includes/fieldset.html` (aligned rows, labels, errors, help texts, checkbox rows), with the
    labels spelled as people read them ("URL template", not "Url template")."""
    for name, field in form.fields.items():
        field.label = label(str(field.label) if field.label else pretty_name(name))
    # AdminForm lays out any form (it reads only fields and errors); the stubs ask for a ModelForm.
    return helpers.AdminForm(form, [(None, {"fields": list(form.fields)})], prepopulated_fields={})  # type: ignore[arg-type]
