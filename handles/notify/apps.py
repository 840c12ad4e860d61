from django.apps import AppConfig


class NotifyConfig(AppConfig):
    name = "handles.notify"
    label = "handles_notify"
    verbose_name = "Notifications and watchdog"
    default_auto_field = "django.db.models.BigAutoField"
