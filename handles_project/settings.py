"""One settings module, driven by environment variables (django-environ).

Nothing secret has a default outside development: `make run` sets HANDLES_DEV=1, which supplies a
throw-away SECRET_KEY, DEBUG and the embedded SQLite/ORM-broker defaults. Production sets the real values.
"""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("HANDLES_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()
DEV = env.bool("HANDLES_DEV", default=False)

SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="dev-only-insecure-key" if DEV else environ.Env.NOTSET)
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"] if DEV else [])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_q",
    "handles",
    "handles.repair",
    "handles.api",
    "handles.desk",
    "handles.notify",
]
# The Handle server simulator's commands (handle_simulator, handle_simulator_fault) in development only:
# production installs neither the app nor its `simulator` extra (docs/simulator.md).
if DEV:
    INSTALLED_APPS.append("handles.simulator")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "handles_project.urls"
WSGI_APPLICATION = "handles_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Embedded default: an SQLite file under var/. DATABASE_URL switches to PostgreSQL.
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'handles.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL + a busy timeout let the web app, the worker and the sweep share one SQLite file.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
    }
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("DJANGO_STATIC_ROOT", default=str(VAR_DIR / "static")))

LOGIN_URL = "admin:login"

# --- Security (production defaults; `manage.py check --deploy` is clean with them) -----------------
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=False)
SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=not DEV)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env.int("DJANGO_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", default=True)
# Preloading commits the whole registrable domain to HTTPS in browsers: the site owner opts in.
SECURE_HSTS_PRELOAD = env.bool("DJANGO_HSTS_PRELOAD", default=False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if env.bool("DJANGO_BEHIND_TLS_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Task queue (django-q2) ----------------------------------------------------------------------
# Our request log owns retries (next_attempt_at + the sweep), so the broker never re-presents a failed
# task (ack_failures, max_attempts=1) and `retry` exceeds `timeout` as django-q2 requires.
REDIS_URL = env.str("HANDLES_REDIS_URL", default="")
# One django-q2 task may run this long (seconds) before the cluster kills it. It bounds a slice of a job,
# not a job: long jobs run in slices of HANDLES_JOB_SLICE_SECONDS, each a new task (handles.jobs).
HANDLES_TASK_TIMEOUT = env.int("HANDLES_TASK_TIMEOUT", default=120)
# A slice stops taking new work after this long, well inside the task timeout (its last unit may overrun).
HANDLES_JOB_SLICE_SECONDS = env.float("HANDLES_JOB_SLICE_SECONDS", default=HANDLES_TASK_TIMEOUT / 4)
# A job whose slices are killed this many times in a row (dead workers, a slice outrunning the timeout) fails.
HANDLES_JOB_MAX_ATTEMPTS = env.int("HANDLES_JOB_MAX_ATTEMPTS", default=5)
Q_CLUSTER = {
    "name": env.str("HANDLES_Q_NAME", default="handles"),
    "workers": env.int("HANDLES_Q_WORKERS", default=2),
    "timeout": HANDLES_TASK_TIMEOUT,
    # django-q2 hands a task out again if not acknowledged after `retry` seconds: it must exceed the timeout.
    "retry": HANDLES_TASK_TIMEOUT + max(30, HANDLES_TASK_TIMEOUT // 2),
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    # Successful task results are not kept: the request log is the record. Pruning a kept history
    # (save_limit > 0) makes the monitor read that many rows FOR UPDATE per task, capping throughput.
    "save_limit": -1,
    "label": "Background tasks",
    "poll": 0.2,
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# --- Handles -------------------------------------------------------------------------------------
# Public base URL of this app: tombstone pages and the local resolver are built from it. By default it
# follows `make run`'s address (HANDLES_HOST/HANDLES_PORT), so tombstones pushed in development point at
# the port the app really listens on; a wildcard bind address is not a place to send people.
_RUN_HOST = env.str("HANDLES_HOST", default="127.0.0.1")
_RUN_HOST = "127.0.0.1" if _RUN_HOST in ("", "0.0.0.0", "::", "[::]") else _RUN_HOST
HANDLES_PUBLIC_BASE_URL = env.str(
    "HANDLES_PUBLIC_BASE_URL", default=f"http://{_RUN_HOST}:{env.int('HANDLES_PORT', default=8000)}").rstrip("/")
# Global resolver used to show resolvable handle URLs (ArchivesSpace file_uri, IIIF manifests).
HANDLES_RESOLVER_BASE_URL = env.str("HANDLES_RESOLVER_BASE_URL", default="https://hdl.handle.net").rstrip("/")
# Every call to a Handle server has this timeout (seconds): connect and read. A push (up to 3 calls) must fit
# in one task with room to spare, else each queue task pushes one request and gives the rest back to the
# minute sweep: by default at most a quarter of the task timeout.
HANDLES_SERVER_TIMEOUT = env.float("HANDLES_SERVER_TIMEOUT", default=min(10.0, HANDLES_TASK_TIMEOUT / 4))
# Retry policy for transient server errors: attempts before `error`, and the exponential backoff.
HANDLES_MAX_ATTEMPTS = env.int("HANDLES_MAX_ATTEMPTS", default=10)
HANDLES_BACKOFF_BASE_SECONDS = env.float("HANDLES_BACKOFF_BASE_SECONDS", default=10.0)
HANDLES_BACKOFF_MAX_SECONDS = env.float("HANDLES_BACKOFF_MAX_SECONDS", default=1800.0)
# While a server refuses our credentials (401/402) the prefix's queue waits; a probe checks them again after
# BASE seconds, doubling up to MAX (docs/handle-server.md, "Authentication failures").
HANDLES_AUTH_PROBE_BASE_SECONDS = env.float("HANDLES_AUTH_PROBE_BASE_SECONDS", default=5.0)
HANDLES_AUTH_PROBE_MAX_SECONDS = env.float("HANDLES_AUTH_PROBE_MAX_SECONDS", default=300.0)
# A request left `running` longer than this is taken back by the sweep (crashed worker).
HANDLES_LEASE_SECONDS = env.float("HANDLES_LEASE_SECONDS", default=max(60.0, 6 * HANDLES_SERVER_TIMEOUT))
# A queued request whose task seems lost (broker restarted, Redis flushed) is handed over again after this.
HANDLES_REENQUEUE_AFTER_SECONDS = env.float("HANDLES_REENQUEUE_AFTER_SECONDS", default=600.0)
# After its own request, a queue task keeps pushing other due requests for up to this long (well under
# Q_CLUSTER's timeout), claimed and recorded HANDLES_DRAIN_BATCH at a time: one transaction per batch
# instead of per request. 0 pushes only the task's own request.
HANDLES_DRAIN_SECONDS = env.float("HANDLES_DRAIN_SECONDS", default=min(20.0, HANDLES_TASK_TIMEOUT / 4))
HANDLES_DRAIN_BATCH = env.int("HANDLES_DRAIN_BATCH", default=50)
# Longest suffix we accept (bytes of UTF-8); the native protocol refuses handles over 2048 bytes.
HANDLES_MAX_SUFFIX_BYTES = env.int("HANDLES_MAX_SUFFIX_BYTES", default=255)
HANDLES_MAX_URL_LENGTH = env.int("HANDLES_MAX_URL_LENGTH", default=2000)

# --- Import, reconciliation and resolution health (handles.repair) --------------------------------
# Largest import file accepted (bytes) and most rows; a CSV field longer than the cell limit is refused.
HANDLES_IMPORT_MAX_BYTES = env.int("HANDLES_IMPORT_MAX_BYTES", default=200 * 1024 * 1024)
HANDLES_IMPORT_MAX_ROWS = env.int("HANDLES_IMPORT_MAX_ROWS", default=2_000_000)
HANDLES_IMPORT_MAX_CELL = env.int("HANDLES_IMPORT_MAX_CELL", default=10_000)
# Reconciliation: listing page size, and parallel reads of handle records (the client keeps 4 connections).
HANDLES_RECONCILE_PAGE_SIZE = env.int("HANDLES_RECONCILE_PAGE_SIZE", default=1000)
HANDLES_RECONCILE_WORKERS = env.int("HANDLES_RECONCILE_WORKERS", default=4)
# A repair queues this many rows' requests per transaction (each with its rows marked and the job's counts).
HANDLES_REPAIR_CHUNK = env.int("HANDLES_REPAIR_CHUNK", default=2000)
# Resolution health: following target pages over HTTP(S).
HANDLES_HEALTH_TIMEOUT = env.float("HANDLES_HEALTH_TIMEOUT", default=10.0)
HANDLES_HEALTH_TIMEOUT_RETRIES = env.int("HANDLES_HEALTH_TIMEOUT_RETRIES", default=2)
HANDLES_HEALTH_MAX_REDIRECTS = env.int("HANDLES_HEALTH_MAX_REDIRECTS", default=10)
HANDLES_HEALTH_HOST_INTERVAL = env.float("HANDLES_HEALTH_HOST_INTERVAL", default=1.0)
HANDLES_HEALTH_WORKERS = env.int("HANDLES_HEALTH_WORKERS", default=8)
# The scheduled health check keeps the per-handle results of this many latest runs (older runs keep their
# counts, for the trend).
HANDLES_HEALTH_KEEP_RUNS = env.int("HANDLES_HEALTH_KEEP_RUNS", default=12)
HANDLES_HEALTH_ALLOW_PRIVATE = env.bool("HANDLES_HEALTH_ALLOW_PRIVATE", default=False)
HANDLES_HEALTH_PROXY_BASE = env.str("HANDLES_HEALTH_PROXY_BASE", default="https://hdl.handle.net").rstrip("/")
HANDLES_HEALTH_USER_AGENT = env.str("HANDLES_HEALTH_USER_AGENT",
                                    default="handles-health-check/1.0 (+resolution check of persistent identifiers)")

# --- JSON API (handles.api, /api/v1/) --------------------------------------------------------------
# Throttling: per token (or staff user), and per client IP for calls without valid credentials.
HANDLES_API_RATE = env.str("HANDLES_API_RATE", default="1200/minute")
HANDLES_API_ANON_RATE = env.str("HANDLES_API_ANON_RATE", default="60/minute")
# Behind a reverse proxy, the META key that carries the client's address (e.g. HTTP_X_REAL_IP).
HANDLES_API_CLIENT_IP_HEADER = env.str("HANDLES_API_CLIENT_IP_HEADER", default="")
HANDLES_API_MAX_BODY_BYTES = env.int("HANDLES_API_MAX_BODY_BYTES", default=64 * 1024)
# Each process remembers a verified token this long: a revoked token stops working within it (0: never remember).
HANDLES_API_TOKEN_CACHE_SECONDS = env.float("HANDLES_API_TOKEN_CACHE_SECONDS", default=10.0)
# ArchivesSpace lookups use prepared statements; 0 behind PgBouncer < 1.21 in transaction pooling mode.
HANDLES_API_PREPARED_LOOKUPS = env.bool("HANDLES_API_PREPARED_LOOKUPS", default=True)
if DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":  # PostgreSQL
    # The lookups' own connection to the same database (handles.api.queries, docs/performance.md): psycopg binds
    # their values server-side and prepares each statement at its first run on a connection, so PostgreSQL
    # plans it once per connection, not per request. Only the lookups use it; the rest of the app keeps
    # Django's client-side binding. A lookup reconnects once by itself after a lost connection, so this
    # alias needs no per-request health check. Tests share the default test database (MIRROR).
    DATABASES["lookups"] = {
        **DATABASES["default"],
        "OPTIONS": {**DATABASES["default"].get("OPTIONS", {}), "server_side_binding": True,
                    "prepare_threshold": 0 if HANDLES_API_PREPARED_LOOKUPS else None},
        "CONN_HEALTH_CHECKS": False,
        "TEST": {"MIRROR": "default"},
    }
# The throttle counters live in this cache: per process by default; redis://127.0.0.1:6379/1 shares them.
CACHES = {"default": env.cache_url("HANDLES_CACHE_URL", default="locmemcache://")}

# --- The handle desk (handles.desk: admin lists, bulk jobs, browsing, exports) -----------------------
# An action over more handles than this runs as a background job with a progress bar, not in the request.
HANDLES_DESK_INLINE_LIMIT = env.int("HANDLES_DESK_INLINE_LIMIT", default=200)
# Lists count at most this many matches ("more than 1000") instead of counting a million rows per page.
HANDLES_DESK_COUNT_LIMIT = env.int("HANDLES_DESK_COUNT_LIMIT", default=1000)
# A bulk job works in chunks of this many handles, and hands over to a fresh task after this many seconds.
HANDLES_DESK_JOB_CHUNK = env.int("HANDLES_DESK_JOB_CHUNK", default=100)
HANDLES_DESK_JOB_SLICE_SECONDS = env.float("HANDLES_DESK_JOB_SLICE_SECONDS", default=min(30.0, HANDLES_JOB_SLICE_SECONDS))
# CSV exports read this many rows per query (keyset pagination on the primary key).
HANDLES_DESK_EXPORT_CHUNK = env.int("HANDLES_DESK_EXPORT_CHUNK", default=2000)

# --- Notifications and the prefix watchdog (handles.notify) ------------------------------------------
# Mail goes through Django's mail settings, from one URL: smtp://user:password@host:587 (smtp+tls:// for
# STARTTLS, smtp+ssl:// for TLS from the start). Development prints mail to the console instead.
_email = env.email_url("HANDLES_EMAIL_URL", default="consolemail://" if DEV else "smtp://localhost:25")
EMAIL_BACKEND = _email["EMAIL_BACKEND"]
EMAIL_HOST = _email.get("EMAIL_HOST") or "localhost"
EMAIL_PORT = _email.get("EMAIL_PORT") or 25
EMAIL_HOST_USER = _email.get("EMAIL_HOST_USER") or ""
EMAIL_HOST_PASSWORD = _email.get("EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = bool(_email.get("EMAIL_USE_TLS"))
EMAIL_USE_SSL = bool(_email.get("EMAIL_USE_SSL"))
DEFAULT_FROM_EMAIL = env.str("HANDLES_EMAIL_FROM", default="handles@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
EMAIL_TIMEOUT = env.float("HANDLES_EMAIL_TIMEOUT", default=10.0)
HANDLES_NOTIFY_SUBJECT_PREFIX = env.str("HANDLES_NOTIFY_SUBJECT_PREFIX", default="[handles] ")
# Request errors are collected: at most one digest per prefix per this many seconds.
HANDLES_NOTIFY_DIGEST_SECONDS = env.int("HANDLES_NOTIFY_DIGEST_SECONDS", default=600)
# A delivery that fails is tried again after base * 2^(n-1) seconds (capped), this many times in all.
HANDLES_NOTIFY_MAX_ATTEMPTS = env.int("HANDLES_NOTIFY_MAX_ATTEMPTS", default=8)
HANDLES_NOTIFY_BACKOFF_BASE_SECONDS = env.float("HANDLES_NOTIFY_BACKOFF_BASE_SECONDS", default=60.0)
HANDLES_NOTIFY_BACKOFF_MAX_SECONDS = env.float("HANDLES_NOTIFY_BACKOFF_MAX_SECONDS", default=3600.0)
HANDLES_NOTIFY_WEBHOOK_TIMEOUT = env.float("HANDLES_NOTIFY_WEBHOOK_TIMEOUT", default=10.0)
# An event emitted with a dedupe key is dropped if the same key was recorded within this window.
HANDLES_NOTIFY_DEDUPE_SECONDS = env.int("HANDLES_NOTIFY_DEDUPE_SECONDS", default=3600)
# A health check notifies when its share of correct handles fell by more than this (0.02 = 2 points).
HANDLES_NOTIFY_HEALTH_DROP = env.float("HANDLES_NOTIFY_HEALTH_DROP", default=0.02)
# The global proxy the watchdog asks where each prefix is registered (`/api/handles/0.NA/<prefix>`) and
# through which it resolves a sample of handles.
HANDLES_GLOBAL_PROXY_URL = env.str("HANDLES_GLOBAL_PROXY_URL", default="https://hdl.handle.net").rstrip("/")
HANDLES_WATCHDOG_TIMEOUT = env.float("HANDLES_WATCHDOG_TIMEOUT", default=10.0)
HANDLES_WATCHDOG_SAMPLE = env.int("HANDLES_WATCHDOG_SAMPLE", default=3)
HANDLES_WATCHDOG_CHECKS = env.list("HANDLES_WATCHDOG_CHECKS", default=[
    "server", "credentials", "homed", "registry", "global_resolution", "local"])
HANDLES_WATCHDOG_KEEP_DAYS = env.int("HANDLES_WATCHDOG_KEEP_DAYS", default=90)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
