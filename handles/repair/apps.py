from django.apps import AppConfig


class RepairConfig(AppConfig):
    name = "handles.repair"
    label = "handles_repair"
    verbose_name = "Import, reconciliation and health"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from handles import jobs
        from handles.repair import health, reconcile, services

        # Imports and repairs end applied/done only once the server confirmed their requests.
        jobs.register_settler(services.jobs_settle)
        for runner in (reconcile.IMPORT_RUNNER, reconcile.RUNNER, services.REPAIR_RUNNER, health.RUNNER):
            jobs.register_runner(runner)
