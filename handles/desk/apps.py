from django.apps import AppConfig


class DeskConfig(AppConfig):
    name = "handles.desk"
    label = "handles_desk"
    verbose_name = "Handle desk"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from handles import jobs
        from handles.desk import services

        # A bulk job ends done only once the server confirmed the requests it queued.
        jobs.register_settler(services.bulk_jobs_settle)
        jobs.register_runner(services.BULK_RUNNER)
