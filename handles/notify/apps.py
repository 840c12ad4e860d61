from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.core import checks


class NotifyConfig(AppConfig):
    name = "handles.notify"
    label = "handles_notify"
    verbose_name = "Notifications and watchdog"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        checks.register(check_watchdog_settings)


def check_watchdog_settings(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """A misspelt check name in HANDLES_WATCHDOG_CHECKS would silently switch that check off."""
    from django.conf import settings

    from handles.notify.watchdog import CHECKS

    unknown = sorted(set(settings.HANDLES_WATCHDOG_CHECKS) - set(CHECKS))
    if unknown:
        return [checks.Error(f"HANDLES_WATCHDOG_CHECKS names unknown checks: {', '.join(unknown)}.",
                             hint=f"Choose from {', '.join(CHECKS)}.", id="handles_notify.E001")]
    return []
