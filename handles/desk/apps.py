from django.apps import AppConfig


class DeskConfig(AppConfig):
    name = "handles.desk"
    label = "handles_desk"
    verbose_name = "Handle desk"
    default_auto_field = "django.db.models.BigAutoField"
