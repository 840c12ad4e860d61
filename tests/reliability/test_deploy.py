"""Production settings: `manage.py check --deploy` is clean, and every response carries the security
headers. Both run the real settings module in a subprocess with a production environment."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
HOST = "handles.example.edu"


def production_env() -> dict[str, str]:
    """What docs/operations-guide.md documents for production behind a TLS-terminating proxy."""
    db = connection.settings_dict
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "HANDLES_"))}
    env.update({
        "DJANGO_SETTINGS_MODULE": "handles_project.settings",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
        "DJANGO_ALLOWED_HOSTS": HOST,
        "DJANGO_CSRF_TRUSTED_ORIGINS": f"https://{HOST}",
        "DJANGO_BEHIND_TLS_PROXY": "1",
        "DJANGO_SECURE_SSL_REDIRECT": "1",
        "DJANGO_HSTS_SECONDS": "31536000",
        "DJANGO_HSTS_PRELOAD": "1",
        "DATABASE_URL": f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "HANDLES_PUBLIC_BASE_URL": f"https://{HOST}",
    })
    return env


def run(code_or_args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *code_or_args], cwd=ROOT, env=production_env(), capture_output=True,
                          text=True, timeout=120)


@pytest.mark.django_db
def test_check_deploy_is_clean_with_production_settings():
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


FETCH = textwrap.dedent("""
    import json, django
    django.setup()
    from django.test import Client
    client = Client(HTTP_HOST=%(host)r)
    out = {}
    for name, path, proto in [("http", "/admin/login/", "http"), ("login", "/admin/login/", "https"),
                              ("missing", "/no-such-page/", "https"), ("api", "/api/v1/handles", "https")]:
        response = client.get(path, HTTP_X_FORWARDED_PROTO=proto)
        out[name] = {"status": response.status_code, "headers": dict(response.headers),
                     "cookies": {k: dict(v.items()) | {"secure": v["secure"]} for k, v in response.cookies.items()},
                     "body": response.content.decode("utf-8", "replace")[:5000]}
    print(json.dumps(out))
""")


@pytest.mark.django_db
def test_security_headers_on_every_response():
    result = run(["-c", FETCH % {"host": HOST}])
    assert result.returncode == 0, result.stderr
    pages = json.loads(result.stdout.strip().splitlines()[-1])

    assert pages["http"]["status"] == 301  # plain http is sent to https
    assert pages["http"]["headers"]["Location"] == f"https://{HOST}/admin/login/"
    assert pages["login"]["status"] == 200
    assert pages["missing"]["status"] == 404
    for name in ("login", "missing", "api"):
        headers = pages[name]["headers"]
        assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload", name
        assert headers["X-Content-Type-Options"] == "nosniff", name
        assert headers["X-Frame-Options"] == "DENY", name
        assert headers["Referrer-Policy"] == "same-origin", name
        assert headers["Cross-Origin-Opener-Policy"] == "same-origin", name
    csrf = pages["login"]["cookies"]["csrftoken"]
    assert csrf["secure"] is True and csrf["samesite"] == "Lax"
    assert "URLconf" not in pages["missing"]["body"]  # the plain 404 page, not the debug one
