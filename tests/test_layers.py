"""The core write path's layers (docs/design.md, "Where the code lives"): the outbox never imports the
services, task functions stay thin, and every task path a queued task or a schedule may hold still resolves."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import handles.tasks

HANDLES = Path(handles.tasks.__file__).resolve().parent
TESTS = Path(__file__).resolve().parent
TASK_PATH = re.compile(r"""["'](handles(?:\.\w+)*\.tasks)\.(\w+)["']""")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_the_outbox_never_imports_the_services():
    for path in sorted((HANDLES / "outbox").glob("*.py")):
        services = {name for name in imported_modules(path) if name.startswith("handles.services")}
        assert not services, f"{path.name} imports {sorted(services)}: the services call the outbox, not back"


def test_the_services_and_the_outbox_hand_work_to_the_broker_only_through_handover():
    for path in sorted([*(HANDLES / "outbox").glob("*.py"), *(HANDLES / "services").glob("*.py"),
                        HANDLES / "tasks.py", HANDLES / "dbwrites.py"]):
        if path.name != "handover.py":
            assert "django_q.tasks" not in imported_modules(path), f"{path.name} calls async_task itself"


def test_task_functions_are_a_few_lines():
    tree = ast.parse((HANDLES / "tasks.py").read_text())
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    assert {f.name for f in functions} >= {"push_request", "push_requests", "hand_over_requests",
                                           "probe_prefix_auth", "sweep_requests", "run_job_slice"}
    for function in functions:
        body = function.body[1:] if ast.get_docstring(function) else function.body
        lines = body[-1].end_lineno - body[0].lineno + 1
        assert lines <= 5, f"tasks.{function.name} is {lines} lines: move its work to the outbox or the services"


def test_every_task_path_named_in_the_code_and_migrations_resolves():
    """Queued tasks and Schedule rows (written by migrations and by the code) keep the dotted path they were
    given: each must still name a function after any move."""
    paths = set()
    for path in HANDLES.rglob("*.py"):
        paths.update(TASK_PATH.findall(path.read_text()))
    assert ("handles.tasks", "push_request") in paths and ("handles.tasks", "sweep_requests") in paths
    for module, name in sorted(paths):
        assert callable(getattr(importlib.import_module(module), name, None)), f"{module}.{name} is gone"


def test_no_test_patches_a_name_tasks_only_re_exports():
    """handles.tasks re-exports the hand-over functions, but the outbox calls them in handles.outbox.handover:
    a test that patches handles.tasks.enqueue_request would silently patch nothing the code calls."""
    re_exported = {name for name in handles.tasks.__all__
                   if getattr(handles.tasks, name).__module__ != handles.tasks.__name__}
    assert "enqueue_request" in re_exported
    patch = re.compile(r"""setattr\(\s*(?:tasks,\s*|["']handles\.tasks\.)["']?(\w+)["']""")
    offenders = [f"{path.relative_to(TESTS.parent)}: {name}" for path in sorted(TESTS.rglob("*.py"))
                 for name in patch.findall(path.read_text()) if name in re_exported]
    assert offenders == [], "patch these in handles.outbox.handover, where the outbox looks them up"
