"""Every write to the repair app's models: presets, imports, reconciliations, repairs, health checks.

Changes to handles and assets themselves are made by handles.services ("Import and repair (bulk)"): this
module decides what to ask of it and records what came of it. A job is created here, handed to the task
queue when its transaction commits, and reports progress through short updates that other connections
(the admin's progress bar) see at once. An import or repair that queued requests is then verifying until
every request has finished: it is settled here (jobs_settle, called by the queue through handles.jobs) as
applied/done or incomplete.

One module per kind of job (imports, repairs with reconciliations, health) and what they share (common);
this package gives their public functions under one name, handles.repair.services.
"""

from handles.exceptions import HandleServiceError
from handles.repair.services.common import (
    CHUNK,
    VERIFYING_MESSAGE,
    chunked,
    job_cancel,
    job_progress,
)
from handles.repair.services.health import (
    HEALTH_FILTERS,
    HEALTH_REPAIR_LIMIT,
    health_begin,
    health_finish,
    health_prune,
    health_record,
    health_repair,
    health_start,
)
from handles.repair.services.imports import (
    CONTINUE_PUSH_STATES,
    IMPORT_ROW_COLUMNS,
    IMPORTS,
    UNREAD_NOTE,
    import_batch_analyse,
    import_batch_apply,
    import_batch_configure,
    import_batch_continue_push,
    import_batch_create,
    import_batch_finish_push,
    import_batch_queue_push,
    import_batch_retry_failed,
    import_batch_settle,
    import_batch_start_analysis,
    import_batch_start_apply,
    import_conflict_resolve,
    import_conflict_start_read,
    import_conflicts_record_server,
    preset_save,
)
from handles.repair.services.repairs import (
    REPAIR_OPS,
    REPAIR_RUNNER,
    REPAIRS,
    jobs_settle,
    reconciliation_begin,
    reconciliation_finish,
    reconciliation_record,
    reconciliation_start,
    repair_execute,
    repair_job_retry_failed,
    repair_job_settle,
    repair_rows,
    repair_start,
)

__all__ = [
    "CHUNK",
    "VERIFYING_MESSAGE",
    "chunked",
    "job_cancel",
    "job_progress",
    "CONTINUE_PUSH_STATES",
    "IMPORT_ROW_COLUMNS",
    "IMPORTS",
    "UNREAD_NOTE",
    "import_batch_analyse",
    "import_batch_apply",
    "import_batch_configure",
    "import_batch_continue_push",
    "import_batch_create",
    "import_batch_finish_push",
    "import_batch_queue_push",
    "import_batch_retry_failed",
    "import_batch_settle",
    "import_batch_start_analysis",
    "import_batch_start_apply",
    "import_conflict_resolve",
    "import_conflict_start_read",
    "import_conflicts_record_server",
    "preset_save",
    "REPAIR_OPS",
    "REPAIR_RUNNER",
    "REPAIRS",
    "jobs_settle",
    "reconciliation_begin",
    "reconciliation_finish",
    "reconciliation_record",
    "reconciliation_start",
    "repair_execute",
    "repair_job_retry_failed",
    "repair_job_settle",
    "repair_rows",
    "repair_start",
    "HEALTH_FILTERS",
    "HEALTH_REPAIR_LIMIT",
    "health_begin",
    "health_finish",
    "health_prune",
    "health_record",
    "health_repair",
    "health_start",
    "HandleServiceError",
]
