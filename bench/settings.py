"""Settings for bench/api_lookup.py only: the real settings, the benchmark's own database, and
bench/urls.py, which mounts a bare JSON view beside the project's URLs (nowhere else)."""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-not-secret")
os.environ.setdefault("DATABASE_URL",
                      f"postgres://postgres@127.0.0.1:5432/{os.environ.get('HANDLES_BENCH_DB', 'handles_bench')}")

from handles_project.settings import *  # noqa: E402,F403
from handles_project.settings import LOGGING  # noqa: E402

ROOT_URLCONF = "bench.urls"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
# Measure the lookup with the limiter counting, but never refusing.
HANDLES_API_RATE = "1000000000/minute"
LOGGING = {**LOGGING, "root": {"handlers": ["console"], "level": "WARNING"}}
