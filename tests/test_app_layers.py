"""The apps depend one way: the core (handles: models, services, its admin) is below the desk and the
repair app, which build on it. The core imports neither, not even inside a function; they extend its
admin instead (the desk re-registers the Handle and request log admins, the repair app adds a section
to the handle page)."""

from __future__ import annotations

import ast
from pathlib import Path

from django.contrib import admin

from handles.admin import HandleAdmin, HandleRequestAdmin
from handles.models import Handle, HandleRequest

CORE = Path(__file__).resolve().parent.parent / "handles"
ABOVE_THE_CORE = ("handles.desk", "handles.repair")


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def test_the_core_imports_neither_the_desk_nor_the_repair_app():
    core_files = [*CORE.glob("*.py"), *CORE.glob("admin/*.py"), *CORE.glob("templatetags/*.py"),
                  *CORE.glob("management/commands/*.py")]
    assert len(core_files) > 20 and CORE / "admin" / "handle.py" in core_files
    offending = {str(path.relative_to(CORE)): name for path in core_files for name in _imports(path)
                 if name.startswith(ABOVE_THE_CORE)}
    assert offending == {}


def test_the_desk_extends_the_cores_admin_in_its_place():
    handle_admin, request_admin = admin.site._registry[Handle], admin.site._registry[HandleRequest]
    assert isinstance(handle_admin, HandleAdmin) and type(handle_admin) is not HandleAdmin
    assert isinstance(request_admin, HandleRequestAdmin) and type(request_admin) is not HandleRequestAdmin
    assert "health" in handle_admin.list_display and "retry_selected" in request_admin.actions
