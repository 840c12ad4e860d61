"""A real django-q2 worker cluster (`manage.py qcluster`) as a subprocess, on the test database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


class WorkerProcess:
    def __init__(self, *, workers: int = 2, extra_env: dict[str, str] | None = None, log_path: Path | None = None):
        self.workers = workers
        self.extra_env = extra_env or {}
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        db = connection.settings_dict
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "handles_project.settings",
            "HANDLES_DEV": "1",
            # django-q2 signs queued tasks with the secret key: the worker must share the test process's.
            "DJANGO_SECRET_KEY": settings.SECRET_KEY,
            "DATABASE_URL": f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
            "HANDLES_Q_WORKERS": str(self.workers),
            "HANDLES_SERVER_TIMEOUT": "2",
            "HANDLES_BACKOFF_BASE_SECONDS": "0.5",
            "HANDLES_BACKOFF_MAX_SECONDS": "2",
            "HANDLES_LEASE_SECONDS": "15",
            "LOG_LEVEL": "WARNING",
        }
        env.update(self.extra_env)
        return env

    def start(self) -> WorkerProcess:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=self.env(),
                                        stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=3)  # django-q2 may linger over its broker; tests need no grace
            except subprocess.TimeoutExpired:
                self.kill()

    def pause(self) -> None:
        """SIGSTOP the whole cluster: nothing it does changes while a test looks (kill or resume it after)."""
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        """kill -9 the whole cluster (sentinel, workers, monitor): a crash, not a shutdown."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_for(predicate, *, timeout: float = 30.0, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
