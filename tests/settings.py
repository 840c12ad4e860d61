"""Test settings: the real settings, pointed at PostgreSQL (the suite runs on real parts)."""

import os

os.environ.setdefault("HANDLES_DEV", "1")
os.environ.setdefault("DJANGO_SECRET_KEY", "test-secret-key-not-for-production")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/handles")

from handles_project.settings import *  # noqa: E402,F403
from handles_project.settings import DATABASES, INSTALLED_APPS, Q_CLUSTER  # noqa: E402

# Several suites may share this machine's PostgreSQL: HANDLES_TEST_DB names the test database.
DATABASES["default"]["TEST"] = {"NAME": os.environ.get("HANDLES_TEST_DB", "test_handles")}
# `make test` runs with HANDLES_DEV off, and the simulator's management commands are under test.
if "handles.simulator" not in INSTALLED_APPS:
    INSTALLED_APPS = [*INSTALLED_APPS, "handles.simulator"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
HANDLES_BACKOFF_BASE_SECONDS = 0.0
HANDLES_SERVER_TIMEOUT = 3.0
HANDLES_DRAIN_SECONDS = 0.0  # an inline task pushes exactly the request it was handed; drain tests set it
# The watchdog never asks the real global proxy from a test: tests/notify stands one in on loopback.
HANDLES_GLOBAL_PROXY_URL = "http://127.0.0.1:9"
HANDLES_WATCHDOG_TIMEOUT = 3.0

# Tasks run inline when enqueued, so a test drives the whole flow with django_capture_on_commit_callbacks.
# Tests of real worker processes start `manage.py qcluster` with their own environment.
Q_CLUSTER = {**Q_CLUSTER, "sync": os.environ.get("HANDLES_Q_SYNC", "1") == "1"}
