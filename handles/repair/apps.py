from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.apps import AppConfig

if TYPE_CHECKING:
    from handles.models import Handle


def _checks_section(handle: Handle) -> dict[str, Any]:
    """A handle's page shows its resolution checks (the core's admin asks, it does not import us)."""
    from handles.repair.selectors import check_history

    return {"checks": check_history(handle)}


class RepairConfig(AppConfig):
    name = "handles.repair"
    label = "handles_repair"
    verbose_name = "Import, reconciliation and health"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from handles import jobs
        from handles.admin import register_handle_page_section
        from handles.repair import health, reconcile, services

        # Imports and repairs end applied/done only once the server confirmed their requests.
        jobs.register_settler(services.jobs_settle)
        for runner in (reconcile.IMPORT_RUNNER, reconcile.RUNNER, services.REPAIR_RUNNER, health.RUNNER):
            jobs.register_runner(runner)
        register_handle_page_section(_checks_section)
