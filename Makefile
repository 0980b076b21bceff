# Tidemark: `make run` and `make test` set up everything they need on a fresh Debian/Ubuntu machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
FLASK := $(VENV)/bin/flask
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export FLASK_APP := wsgi
# Where `make test` looks for PostgreSQL when TEST_DATABASE_URL is not set.
TEST_PG_PROBE ?= postgresql+psycopg://postgres@127.0.0.1:5432/postgres

.PHONY: help run test test-sqlite test-postgres bench soak corpus-report system-run system-test clean

help:
	@echo "make run            set up, then start the portal, a worker and (if needed) Redis on http://127.0.0.1:5000"
	@echo "make test           set up, then run every test (SQLite, and PostgreSQL when one is reachable)"
	@echo "make bench          print benchmark figures"
	@echo "make soak           the long runs (faults, load, scale, mail bombs, fuzzing): minutes, before a release"
	@echo "make corpus-report  how many public corpus expectations the email logic meets"

# --- setting up ---------------------------------------------------------------------------------
define apt_install
	if [ -n "$(1)" ]; then \
	  echo "Installing Debian packages: $(1)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(1) >/dev/null; \
	fi
endef

# Packages `make run` needs: venv support, and Redis unless REDIS_URL points at one.
system-run:
	@missing=""; \
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { echo "Tidemark needs Python 3.11 or newer as $(PYTHON)."; exit 1; }; \
	$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	[ -n "$$REDIS_URL" ] || command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	$(call apt_install,$$missing)

# `make test` also needs Redis and Dovecot (the tests start their own), chromium for the browser tests
# and iptables, with which a test cuts one PostgreSQL connection off as a dead network would.
system-test:
	@missing=""; \
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { echo "Tidemark needs Python 3.11 or newer as $(PYTHON)."; exit 1; }; \
	$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	[ -x /usr/sbin/dovecot ] || missing="$$missing dovecot-imapd dovecot-pop3d"; \
	[ -x /usr/bin/chromium ] || command -v chromium >/dev/null || missing="$$missing chromium"; \
	[ -x /usr/sbin/iptables ] || missing="$$missing iptables"; \
	$(call apt_install,$$missing)

$(VENV)/.installed-run: requirements.txt
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check -r requirements.txt
	@touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check -r requirements-dev.txt
	@touch $@ $(VENV)/.installed-run

# --- the two commands ---------------------------------------------------------------------------
run: system-run $(VENV)/.installed-run
	@mkdir -p instance
	$(FLASK) db upgrade
	$(FLASK) demo seed
	$(PY) -m workers.stack --demo

# Both databases at once: each run is one process, so two cores take the pair in the time of
# the slower one. PostgreSQL's output is kept in $(TEST_LOG_DIR) and printed when both have ended.
TEST_LOG_DIR ?= test-results
test: system-test $(VENV)/.installed-dev
	@mkdir -p $(TEST_LOG_DIR); \
	$(MAKE) --no-print-directory test-postgres > $(TEST_LOG_DIR)/postgres.log 2>&1 & pg=$$!; \
	$(MAKE) --no-print-directory test-sqlite; sqlite=$$?; \
	wait $$pg; postgres=$$?; \
	cat $(TEST_LOG_DIR)/postgres.log; \
	echo "== SQLite: $$([ $$sqlite -eq 0 ] && echo passed || echo FAILED); PostgreSQL: $$([ $$postgres -eq 0 ] && echo passed or skipped || echo FAILED) =="; \
	[ $$sqlite -eq 0 ] && [ $$postgres -eq 0 ]

test-sqlite:
	@echo "== tests on SQLite =="
	TIDEMARK_ENV=testing $(PY) -m pytest -q $(PYTEST_ARGS)

test-postgres:
	@url="$${TEST_DATABASE_URL:-}"; \
	if [ -z "$$url" ]; then \
	  if $(PY) -c "import psycopg, sys; psycopg.connect('$(TEST_PG_PROBE)'.replace('+psycopg', ''), connect_timeout=3).close()" 2>/dev/null; then \
	    url="$(TEST_PG_PROBE)"; \
	  else \
	    echo "== PostgreSQL skipped: none reachable at $(TEST_PG_PROBE) and TEST_DATABASE_URL is not set =="; exit 0; \
	  fi; \
	fi; \
	echo "== tests on PostgreSQL ($${url%%@*}@…) =="; \
	TIDEMARK_ENV=testing TEST_DATABASE_URL="$$url" $(PY) -m pytest -q $(PYTEST_ARGS)

# --- figures ------------------------------------------------------------------------------------
bench: system-test $(VENV)/.installed-dev
	$(PY) -m tests.bench.bench_parse $(BENCH_ARGS)
	$(PY) -m tests.bench.bench_ingest $(BENCH_INGEST_ARGS)
	$(PY) -m tests.bench.bench_scale $(BENCH_SCALE_ARGS)
	$(PY) -m tests.bench.bench_scale --reading-process $(BENCH_SCALE_ARGS)
	$(PY) -m tests.bench.bench_alerts $(BENCH_ALERTS_ARGS)
	$(PY) -m tests.bench.bench_outbound
	$(PY) -m tests.bench.bench_portal $(BENCH_PORTAL_ARGS)
	$(PY) -m tests.bench.bench_push $(BENCH_PUSH_ARGS)

# The long runs, by hand and before a release; each prints a table (README: "Performance and
# reliability"). PostgreSQL at SOAK_DATABASE_URL (default: the local one). Smaller runs:
# SOAK_ARGS="--messages 300 --only sigkill" (faults), SOAK_SCALE_ARGS="--tickets 200000" and the like.
soak: system-test $(VENV)/.installed-dev
	$(PY) -m tests.soak.faults $(SOAK_ARGS)
	$(PY) -m tests.soak.load $(SOAK_LOAD_ARGS)
	$(PY) -m tests.soak.scale $(SOAK_SCALE_ARGS)
	$(PY) -m tests.soak.bombs $(SOAK_BOMBS_ARGS)
	$(PY) -m tests.soak.fuzz $(SOAK_FUZZ_ARGS)

corpus-report: $(VENV)/.installed-dev
	$(PY) -m tests.corpus.report

# The README's screenshots: the browser walk through every page saves them into docs/screenshots/.
.PHONY: screenshots
screenshots: system-test $(VENV)/.installed-dev
	TIDEMARK_ENV=testing TIDEMARK_SCREENSHOTS=1 $(PY) -m pytest -q \
	  "tests/e2e/test_walk_pages.py::test_admin_walks_every_page[desktop]"

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
