from django.apps import AppConfig


class HandlesConfig(AppConfig):
    name = "handles"
    verbose_name = "Handles"
    default_auto_field = "django.db.models.BigAutoField"
