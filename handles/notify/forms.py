"""Admin forms: subscriptions and webhook endpoints, with the kinds of event as checkboxes."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django import forms
from django.utils import timezone

from handles.notify.models import SUBSCRIBABLE, Kind, Notification, Subscription, WebhookEndpoint

if TYPE_CHECKING:
    from django.contrib.auth.models import User


class _KindsForm(forms.ModelForm):
    kinds = forms.MultipleChoiceField(choices=SUBSCRIBABLE, widget=forms.CheckboxSelectMultiple,
                                      help_text="The kinds of event to be told about.")


class SubscriptionForm(_KindsForm):
    current_user: User | None = None  # set by the admin: staff subscribe themselves

    class Meta:
        model = Subscription
        fields = ["user", "prefix", "kinds", "email", "active"]

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        user = data.get("user") or self.current_user
        if user is not None:
            self.instance.user = user
            same = Subscription.objects.filter(user=user, prefix=data.get("prefix")).exclude(pk=self.instance.pk)
            if same.exists():
                raise forms.ValidationError(f"{user} already has a subscription for "
                                            f"{data.get('prefix') or 'every prefix'}: change that one.")
            if not (data.get("email") or user.email):
                raise forms.ValidationError(f"{user} has no email address: give one here.")
        return data


class WebhookEndpointForm(_KindsForm):
    url = forms.URLField(label="URL", max_length=1000, assume_scheme="https")

    class Meta:
        model = WebhookEndpoint
        fields = ["name", "url", "secret", "prefix", "kinds", "body_template", "active"]

    def clean_body_template(self) -> str:
        """A template must make valid JSON for a sample event, so a typo shows here and not at 3 a.m."""
        from handles.notify.delivery import render_body

        template = self.cleaned_data.get("body_template", "")
        if template.strip():
            sample = Notification(pk=0, kind=Kind.TEST, subject='Sample "subject"', details="Line one\nline two",
                                  created_at=timezone.now())
            try:
                json.loads(render_body(template, sample))
            except Exception as exc:
                raise forms.ValidationError(f"The template does not make valid JSON for a sample event: {exc}") from exc
        return template
