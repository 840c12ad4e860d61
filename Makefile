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

.PHONY: run test test-fast test-slow bench lint clean install

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
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
	HANDLES_DEV= $(PY) -m pytest -q -n 2 --dist loadgroup -p no:cacheprovider -m "not slow"

test-slow: $(STAMP)
	@$(PY) -m tests.services_ready
	HANDLES_DEV= $(PY) -m pytest -q -p no:cacheprovider -m slow

bench: $(STAMP)
	@$(PY) -m tests.services_ready
	$(PY) -m bench.run_all

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf var/handles.sqlite3 var/handles.sqlite3-wal var/handles.sqlite3-shm var/simulator var/static
