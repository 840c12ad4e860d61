"""The desk in the admin: bulk jobs and collections, and the Handle list and request log of the core's
admin extended with the handle filter, the sync state, bulk actions and failure retries."""

from handles.desk.admin import handles, jobs, request_log  # noqa: F401  (each registers its ModelAdmins)
from handles.desk.admin.jobs import job_status, selection_note

__all__ = ["job_status", "selection_note"]
