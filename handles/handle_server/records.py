"""Handle records as the server stores them: pure functions, no I/O."""

from typing import Any

from handles.handle_server.client import ADMIN_INDEX, URL_INDEX


def url_value(url: str) -> dict[str, Any]:
    return {"index": URL_INDEX, "type": "URL", "data": {"format": "string", "value": url}}


def admin_value(admin_handle: str, admin_index: int, permissions: str) -> dict[str, Any]:
    """HS_ADMIN at index 100: without one nobody could administer the handle (docs/handle-server.md §5)."""
    return {
        "index": ADMIN_INDEX,
        "type": "HS_ADMIN",
        "data": {"format": "admin", "value": {"handle": admin_handle, "index": admin_index, "permissions": permissions}},
    }


def new_record(url: str, *, admin_handle: str, admin_index: int, permissions: str) -> list[dict[str, Any]]:
    return [admin_value(admin_handle, admin_index, permissions), url_value(url)]
