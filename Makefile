# Chorus: `make run` starts everything on the embedded default; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEPS := pyproject.toml constraints.txt

.PHONY: run test lint bench

$(VENV)/.run-deps: $(DEPS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e .
	touch $@

$(VENV)/.test-deps: $(VENV)/.run-deps
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $@

run: $(VENV)/.run-deps
	$(PY) manage.py migrate --noinput
	$(PY) manage.py chorus_setup
	$(PY) manage.py chorus_demo
	$(PY) manage.py chorus_run

# Tests keep their own data dir so they never touch a running `make run`.
test: export CHORUS_DATA_DIR ?= $(CURDIR)/.data/test
test: $(VENV)/.test-deps lint
	$(PY) manage.py makemigrations --check --dry-run
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: $(VENV)/.test-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(VENV)/.test-deps
	$(PY) -m benchmarks run $(BENCH_ARGS)
