from django.apps import AppConfig


class RepairConfig(AppConfig):
    name = "handles.repair"
    label = "handles_repair"
    verbose_name = "Import, reconciliation and health"
    default_auto_field = "django.db.models.BigAutoField"
