# Two commands for a new user: `make run` and `make test`. Everything else is for developers.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

# Embedded development defaults (never used in production, where the real values are set).
export HANDLES_DEV ?= 1
export HANDLE_SECRET_DEMO ?= demo-simulator-secret
export DJANGO_DEBUG ?= 1

.PHONY: run test test-fast test-slow test-real bench lint clean install

# The real HANDLE.NET server of the real-server tier: HANDLES_REAL_SERVER_DIST, else ../shared/real-handle-server.
HANDLES_REAL_SERVER_DIST ?= $(wildcard $(abspath ../shared/real-handle-server))

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,simulator]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	@mkdir -p var
	$(PY) manage.py migrate --noinput -v 0
	$(PY) manage.py run_stack

# The whole suite on PostgreSQL (127.0.0.1:5432, user postgres), less the long fault runs (`make test-slow`).
# `.ci/run` calls both.
test: $(STAMP)
	@$(PY) -m tests.services_ready
	HANDLES_DEV= $(PY) -m pytest -q -n 2 --dist loadgroup -p no:cacheprovider -m "not slow and not real_server"

test-slow: $(STAMP)
	@$(PY) -m tests.services_ready
	HANDLES_DEV= $(PY) -m pytest -q -p no:cacheprovider -m "slow and not real_server"

# Against a real HANDLE.NET server started once for the run in a temporary folder (docs/real-server-tier.md).
test-real: $(STAMP)
	@test -x "$(HANDLES_REAL_SERVER_DIST)/start" || { echo "make test-real: set HANDLES_REAL_SERVER_DIST to a real HANDLE.NET server folder (with start and stop), e.g. ../shared/real-handle-server"; exit 2; }
	@$(PY) -m tests.services_ready
	HANDLES_DEV= HANDLES_REAL_SERVER_DIST="$(abspath $(HANDLES_REAL_SERVER_DIST))" $(PY) -m pytest -q -p no:cacheprovider -m real_server tests/real_server

bench: $(STAMP)
	@$(PY) -m tests.services_ready
	$(PY) -m bench.run_all

# Style (ruff), the layering contracts (import-linter) and the types (mypy with django-stubs): docs/lint.md.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache --no-logo
	$(VENV)/bin/mypy

clean:
	rm -rf var/handles.sqlite3 var/handles.sqlite3-wal var/handles.sqlite3-shm var/simulator var/static
