"""Every page a user can reach by GET answers without a 5xx, as a superuser, as staff and as a collection
manager, and the API's GET endpoints with a token: on PostgreSQL here, and on SQLite (as `make run` uses
it) in a process of its own. The pages are found from the URLconf and the admin registry (tests/crawl.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import crawl
from tests.conftest import SIM_SECRET

ROOT = Path(__file__).resolve().parent.parent
ENOUGH = 500  # pages fetched: the crawl found the admin's, the desk's, the public and the API's pages

SCRIPT = r'''
import json, os
from pathlib import Path
import django
django.setup()
from django.core.management import call_command
from django.db import connection
from django.test.utils import setup_test_environment
setup_test_environment()  # the test client's view of the rendered context (the admin's filter choices)
call_command("migrate", verbosity=0)
from tests import crawl
seeded, users = crawl.seed(server_url=os.environ["SIM_URL"], certificate_path=Path(os.environ["SIM_CERT"]))
failures, fetched = crawl.crawl(seeded, users)
print("RESULT " + json.dumps({"vendor": connection.vendor, "failures": failures, "fetched": fetched}))
'''


# transaction: the seed runs the queue's tasks once each step commits. Outside a transaction the API's
# lookups read on their own connection, the "lookups" alias (handles.api.queries), which a test must allow.
@pytest.mark.django_db(transaction=True, databases=["default", "lookups"])
def test_every_page_answers_on_postgresql(handle_server, monkeypatch):
    monkeypatch.setenv("HANDLE_SECRET_DEMO", SIM_SECRET)
    seeded, users = crawl.seed(server_url=handle_server.base_url, certificate_path=handle_server.cert_path)
    failures, fetched = crawl.crawl(seeded, users)
    assert failures == [], "\n".join(failures)
    assert fetched > ENOUGH


def test_every_page_answers_on_sqlite(handle_server, tmp_path):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "HANDLES_DEV": "",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'handles.sqlite3'}", "HANDLES_Q_SYNC": "1",
           "HANDLE_SECRET_DEMO": SIM_SECRET, "SIM_URL": handle_server.base_url,
           "SIM_CERT": str(handle_server.cert_path)}
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    result_line = next((line for line in done.stdout.splitlines() if line.startswith("RESULT ")), None)
    assert done.returncode == 0 and result_line, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(result_line.removeprefix("RESULT "))
    assert result["vendor"] == "sqlite"
    assert result["failures"] == [], "\n".join(result["failures"])
    assert result["fetched"] > ENOUGH


def test_a_new_parameterised_url_without_an_entry_is_reported():
    route = crawl.Route("/browse/<slug:shelf>/", "desk:shelf", ("shelf",), None)
    urls, problem = crawl.urls_of(route, seeded=None)
    assert urls == [] and "add an entry to PARAMS" in problem
