from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "handles.api"
    label = "handles_api"
    verbose_name = "API"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from handles.api import token_cache
        from handles.models import Prefix

        # A prefix saved or deleted in this process: forget the remembered default at once (other
        # processes within HANDLES_API_TOKEN_CACHE_SECONDS, as for tokens).
        post_save.connect(token_cache.prefix_changed, sender=Prefix, dispatch_uid="api-default-prefix")
        post_delete.connect(token_cache.prefix_changed, sender=Prefix, dispatch_uid="api-default-prefix-del")
