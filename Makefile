# carebridge: developer and CI entry points.  Start with `make run` or `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HTMX_VERSION := 2.0.11
HTMX := gateway/console/static/vendor/htmx.min.js
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?=
DATABASE_URL := $(or $(CAREBRIDGE_DATABASE_URL),sqlite:///var/carebridge.db)
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Some hosts (this project's CI image among them) export PYTHONDONTWRITEBYTECODE=1.  With it no
# process keeps the bytecode it compiles: every pytest worker, every `carebridge` subprocess and
# every CLI call compiled FastAPI, pydantic, SQLAlchemy and carebridge from source again, which
# doubled the start of every process and half the suite's time (docs/benchmarks.md).  The
# __pycache__ directories it writes are ignored by git.  (The Docker image compiles at install.)
unexport PYTHONDONTWRITEBYTECODE

.PHONY: help venv postgres-binaries chromium run lint test clean

help:
	@echo "make run                start carebridge (HTTP :8080, MLLP :2575) on $(DATABASE_URL)"
	@echo "make test               lint (mypy beside pytest), and the whole test suite (SQLite and a throwaway PostgreSQL)"
	@echo "make lint               import-linter (layers, public APIs), ruff check, ruff format --check, mypy (packages and tests)"
	@echo "make venv               create .venv and install carebridge[test] (editable)"
	@echo "make postgres-binaries  install PostgreSQL server binaries with apt-get if missing"
	@echo "make clean              remove .venv, caches and build files (keeps var/)"

venv: $(STAMP) $(HTMX)

# Re-installs whenever pyproject.toml changes.  The installer is uv (from the same registry, through
# pip and pip's configuration): it fetches and unpacks in parallel, 7 s against pip's 34 s for this
# tree on a cold cache (docs/benchmarks.md).  uv does not read pip's configuration, so pip's
# find-links and certificate bundle are passed on; should uv fail for any reason (another index
# configured for pip only, a proxy), pip installs as before.  Neither byte-compiles: Python compiles
# the modules the code imports, once, on first import.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@if $(BIN)/python -m pip install -q --no-compile uv && \
	  env $${PIP_CERT:+SSL_CERT_FILE=$$PIP_CERT} $(BIN)/uv pip install --python $(BIN)/python \
	    --no-progress $${PIP_FIND_LINKS:+--find-links $$PIP_FIND_LINKS} -e '.[test]'; then :; else \
	  echo "uv could not install: installing with pip"; \
	  $(BIN)/python -m pip install --no-compile -e '.[test]'; fi
	touch $@

# The console's one script, htmx (0BSD licence, kept beside it), from the npm registry at setup
# time and served by carebridge itself: hospital networks are often offline at run time.  Without
# npm the console still works (every page is a plain form); only partial updates are lost.
$(HTMX):
	@mkdir -p $(@D)
	@if command -v npm >/dev/null 2>&1; then \
	  tmp=$$(mktemp -d); (cd $$tmp && npm pack --silent htmx.org@$(HTMX_VERSION) >/dev/null && \
	    tar -xzf htmx.org-$(HTMX_VERSION).tgz package/dist/htmx.min.js package/LICENSE); \
	  cp $$tmp/package/LICENSE $(@D)/htmx.LICENSE; mv $$tmp/package/dist/htmx.min.js $@; rm -rf $$tmp; \
	else echo "npm not found: the console runs without htmx (plain forms)"; fi

# Debian's chromium for the console's browser tests (Playwright drives it by executable_path;
# no browser is ever downloaded).
chromium:
	@if command -v chromium >/dev/null 2>&1; then echo "chromium: $$(command -v chromium)"; else \
	  echo "chromium not found: installing the Debian 'chromium' package"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; \
	fi

# Re-take the console screenshots that docs/console.md shows (the browser tests write them).
.PHONY: console-screenshots
console-screenshots: venv chromium
	CONSOLE_DOCS_SCREENSHOTS=1 $(BIN)/pytest -n 0 -q tests/console -k browser

# Same search order as tests/support/postgres.py: PATH, then /usr/lib/postgresql/*/bin.
postgres-binaries:
	@if { command -v initdb && command -v pg_ctl; } >/dev/null 2>&1; then \
	  echo "PostgreSQL binaries: $$(command -v pg_ctl)"; \
	elif ls /usr/lib/postgresql/*/bin/initdb /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then \
	  echo "PostgreSQL binaries: $$(ls -d /usr/lib/postgresql/*/bin | tail -n 1)"; \
	else \
	  echo "PostgreSQL binaries not found: installing the Debian 'postgresql' package"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql; \
	fi

# make run and make demo are development mode whatever the shell exports (docs/security.md).
run demo: export CAREBRIDGE_ENV := development

# A local trial: any HL7 sender is accepted (CAREBRIDGE_MLLP_OPEN=false make run to check senders).
run: venv
	mkdir -p var
	CAREBRIDGE_MLLP_OPEN=$${CAREBRIDGE_MLLP_OPEN:-true} exec $(BIN)/carebridge serve --database-url '$(DATABASE_URL)'

lint: venv lint-fast
	$(BIN)/mypy

.PHONY: lint-fast
lint-fast: venv
	$(BIN)/lint-imports --no-cache
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# A lint error fails `make test`.  The fast linters run first and stop before any test runs.  The
# tests marked `latency` (a bound on ACK or probe latency under load the test makes itself) run
# first and alone, so that mypy or the other worker cannot decide their result; exit code 5 (none
# selected, e.g. with PYTEST_ARGS naming other tests) is fine.  Then mypy (half a minute of CPU on
# a cold cache) runs beside the parallel suite, whose workers leave a core idle while they wait on
# servers and sockets, and `make test` fails afterwards if mypy found anything.
# PYTEST_WORKERS=0 runs in one process.
MYPY_LOG := $(VENV)/mypy.log
# The files that hold `latency` tests: the first phase collects only these (collecting the whole
# suite to select two tests took ten seconds), and is skipped when PYTEST_ARGS is an argument file
# (@ids.txt) that names none of them.  Found by grep, so a new latency test is never left out of
# both phases.
LATENCY_FILES = $(shell grep -rl --include='test_*.py' 'mark.latency' tests)
test: venv lint-fast postgres-binaries chromium
	@latency_rc=0; run_latency=1; \
	case "$(PYTEST_ARGS)" in @*) grep -q -F $(foreach f,$(LATENCY_FILES),-e $(f)) $(patsubst @%,%,$(PYTEST_ARGS)) || run_latency=0;; esac; \
	if [ $$run_latency -eq 1 ]; then $(BIN)/pytest -n 0 -m latency $(or $(PYTEST_ARGS),$(LATENCY_FILES)) || latency_rc=$$?; fi; \
	if [ $$latency_rc -eq 5 ]; then latency_rc=0; fi; \
	$(BIN)/mypy > $(MYPY_LOG) 2>&1 & mypy_pid=$$!; \
	pytest_rc=0; $(BIN)/pytest -n $(PYTEST_WORKERS) -m "not latency" --durations=10 $(PYTEST_ARGS) || pytest_rc=$$?; \
	mypy_rc=0; wait $$mypy_pid || mypy_rc=$$?; \
	echo "--- mypy (ran beside pytest) ---"; cat $(MYPY_LOG); \
	if [ $$mypy_rc -ne 0 ]; then echo "make test: mypy failed (exit $$mypy_rc)"; exit $$mypy_rc; fi; \
	if [ $$latency_rc -ne 0 ]; then echo "make test: latency tests failed (exit $$latency_rc)"; exit $$latency_rc; fi; \
	exit $$pytest_rc

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis .import_linter_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# The docker-compose topology without Docker: a persistent PostgreSQL 15 cluster in var/pg on
# 127.0.0.1:$(UP_LOCAL_PG_PORT) plus `carebridge serve` against it; Ctrl-C stops both.
UP_LOCAL_PG_PORT ?= 55432
.PHONY: up-local
up-local: venv postgres-binaries
	mkdir -p var
	exec $(BIN)/python deploy/up_local.py --pg-port $(UP_LOCAL_PG_PORT)

# One HIS day on loopback (issue #7): carebridge on a temporary SQLite database, a tiny CRM
# webhook receiver, HL7 samples with their ACKs, a FHIR read and `carebridge audit verify`.
.PHONY: demo
demo: venv
	CAREBRIDGE_MLLP_OPEN=true $(BIN)/python -m demo.his_day
