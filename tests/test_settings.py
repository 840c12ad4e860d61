"""The settings module read from the environment, in a subprocess (settings are read once per process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def settings_value(name: str, **environment: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "HANDLES_", "DATABASE_URL"))}
    env.update({"DJANGO_SETTINGS_MODULE": "handles_project.settings", "HANDLES_DEV": "1", **environment})
    code = f"from django.conf import settings; print(settings.{name})"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60, check=True)
    return result.stdout.strip()


@pytest.mark.parametrize(("environment", "expected"), [
    ({}, "http://127.0.0.1:8000"),
    ({"HANDLES_PORT": "8310"}, "http://127.0.0.1:8310"),
    ({"HANDLES_HOST": "0.0.0.0", "HANDLES_PORT": "8310"}, "http://127.0.0.1:8310"),
    ({"HANDLES_HOST": "desk.local", "HANDLES_PORT": "9000"}, "http://desk.local:9000"),
    ({"HANDLES_PORT": "8310", "HANDLES_PUBLIC_BASE_URL": "https://handles.example.edu/"}, "https://handles.example.edu"),
])
def test_public_base_url_follows_the_port_make_run_serves_on(environment, expected):
    """Tombstoned handles are pushed pointing at HANDLES_PUBLIC_BASE_URL: with `HANDLES_PORT=8310 make run`
    they must point at port 8310, where the app listens, unless a public address is set."""
    assert settings_value("HANDLES_PUBLIC_BASE_URL", **environment) == expected


@pytest.mark.parametrize(("environment", "expected"), [
    ({}, 10.0),
    ({"HANDLES_TASK_TIMEOUT": "10"}, 2.5),
    ({"HANDLES_TASK_TIMEOUT": "10", "HANDLES_SERVER_TIMEOUT": "1"}, 1.0),
])
def test_a_slowest_push_fits_in_one_task_by_default(environment, expected):
    """A push is up to 3 calls of HANDLES_SERVER_TIMEOUT each, and a queue task pushes only while one more fits
    before HANDLES_TASK_TIMEOUT. With the task timeout 10 s and the server timeout left at 10 s nothing fitted:
    each task pushed its own request and gave every other back, and a 5,000-line push import from `make run`
    stalled at 2,128 of 5,000. Left unset, the server timeout follows the task timeout down."""
    server_timeout = float(settings_value("HANDLES_SERVER_TIMEOUT", **environment))
    assert server_timeout == expected
    task_timeout = float(environment.get("HANDLES_TASK_TIMEOUT", "120"))
    assert 3 * server_timeout < task_timeout
