"""The core's admin: prefixes and assets, handles (the handle page and its one-handle actions) and the
request log. It imports nothing of the desk or the repair app: they extend it (handles.desk.admin
re-registers the Handle and request log admins with the list filters, bulk jobs and failure retries;
the repair app adds the resolution checks to the handle page through register_handle_page_section)."""

from handles.admin import handle, prefixes, request_log  # noqa: F401  (each registers its ModelAdmins)
from handles.admin.handle import HandleAdmin, register_handle_page_section
from handles.admin.request_log import HandleRequestAdmin

__all__ = ["HandleAdmin", "HandleRequestAdmin", "register_handle_page_section"]
