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
]

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
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if env.bool("DJANGO_BEHIND_TLS_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Task queue (django-q2) ----------------------------------------------------------------------
# Our request log owns retries (next_attempt_at + the sweep), so the broker never re-presents a failed
# task (ack_failures, max_attempts=1) and `retry` exceeds `timeout` as django-q2 requires.
REDIS_URL = env.str("HANDLES_REDIS_URL", default="")
Q_CLUSTER = {
    "name": env.str("HANDLES_Q_NAME", default="handles"),
    "workers": env.int("HANDLES_Q_WORKERS", default=2),
    "timeout": 120,
    "retry": 180,
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    "save_limit": 1000,
    "label": "Background tasks",
    "poll": 0.2,
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# --- Handles -------------------------------------------------------------------------------------
# Public base URL of this app: tombstone pages and the local resolver are built from it.
HANDLES_PUBLIC_BASE_URL = env.str("HANDLES_PUBLIC_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")
# Global resolver used to show resolvable handle URLs (ArchivesSpace file_uri, IIIF manifests).
HANDLES_RESOLVER_BASE_URL = env.str("HANDLES_RESOLVER_BASE_URL", default="https://hdl.handle.net").rstrip("/")
# Every call to a Handle server has this timeout (seconds): connect and read.
HANDLES_SERVER_TIMEOUT = env.float("HANDLES_SERVER_TIMEOUT", default=10.0)
# Retry policy for transient server errors: attempts before `error`, and the exponential backoff.
HANDLES_MAX_ATTEMPTS = env.int("HANDLES_MAX_ATTEMPTS", default=10)
HANDLES_BACKOFF_BASE_SECONDS = env.float("HANDLES_BACKOFF_BASE_SECONDS", default=10.0)
HANDLES_BACKOFF_MAX_SECONDS = env.float("HANDLES_BACKOFF_MAX_SECONDS", default=1800.0)
# A request left `running` longer than this is taken back by the sweep (crashed worker).
HANDLES_LEASE_SECONDS = env.float("HANDLES_LEASE_SECONDS", default=max(60.0, 6 * HANDLES_SERVER_TIMEOUT))
# A queued request whose task seems lost (broker restarted, Redis flushed) is handed over again after this.
HANDLES_REENQUEUE_AFTER_SECONDS = env.float("HANDLES_REENQUEUE_AFTER_SECONDS", default=600.0)
# Longest suffix we accept (bytes of UTF-8); the native protocol refuses handles over 2048 bytes.
HANDLES_MAX_SUFFIX_BYTES = env.int("HANDLES_MAX_SUFFIX_BYTES", default=255)
HANDLES_MAX_URL_LENGTH = env.int("HANDLES_MAX_URL_LENGTH", default=2000)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
