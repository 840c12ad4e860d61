"""Production never imports the Handle server simulator (docs/simulator.md): it is a development and test
tool, and its dependency `cryptography` is only in the optional extra `simulator`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.simulator_process import PROJECT_ROOT

# Imports every module of the production code under production settings (HANDLES_DEV off) in a fresh
# interpreter, then reports what got loaded.
PROBE = r"""
import importlib, json, pathlib, sys
import django
django.setup()
from django.conf import settings
imported = []
# From the files, not pkgutil.walk_packages, which would import handles.simulator to look inside it.
for top in ("handles", "handles_project"):
    for path in sorted(pathlib.Path(top).rglob("*.py")):
        name = ".".join(path.with_suffix("").parts).removesuffix(".__init__")
        if name == "handles.simulator" or name.startswith("handles.simulator."):
            continue
        importlib.import_module(name)
        imported.append(name)
importlib.import_module("handles_project.urls").urlpatterns  # every view the URLconf reaches
for extra in sys.argv[1:]:
    importlib.import_module(extra)
print(json.dumps({"imported": imported, "apps": list(settings.INSTALLED_APPS),
                  "loaded": sorted(name for name in sys.modules
                                   if name.split(".")[0] == "cryptography" or name.startswith("handles.simulator"))}))
"""


def _probe(*extra_modules: str, dev: str = "") -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HANDLES_", "DJANGO_"))}
    env.update(DJANGO_SETTINGS_MODULE="handles_project.settings", DJANGO_SECRET_KEY="probe-only", HANDLES_DEV=dev)
    result = subprocess.run([sys.executable, "-c", PROBE, *extra_modules], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_no_production_module_imports_the_simulator_or_cryptography():
    report = _probe()
    assert "handles.simulator" not in report["apps"]
    assert {"handles.services", "handles.api.views", "handles.management.commands.run_stack",
            "handles.handle_server.client", "handles_project.wsgi"} <= set(report["imported"])
    assert report["loaded"] == []


def test_the_probe_sees_the_simulator_when_it_is_imported():
    """The check above would fail if production imported the simulator: here one module of it is."""
    report = _probe("handles.simulator.cli")
    assert "handles.simulator.cli" in report["loaded"] and "cryptography" in report["loaded"]


def test_the_simulator_app_is_installed_in_development_only():
    assert "handles.simulator" in _probe(dev="1")["apps"]
    assert "handles.simulator" not in _probe(dev="0")["apps"]
