# Thin wrappers: they install what is missing, then call pytest / the restorekit CLI.
#
# The virtualenv is built from a Python that the `postgres` OS user can execute too (Debian's
# /usr/bin/python3.11): PostgreSQL runs restorekit's archive_command and restore_command as that
# user, so an interpreter under /root (pyenv) would not do.

SHELL := /bin/bash
PYTHON ?= $(shell test -x /usr/bin/python3.11 && echo /usr/bin/python3.11 || command -v python3.11)
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# Test files run side by side (pytest-xdist), a file's tests together. Four workers on two
# cores: a worker waiting on a server, a restore or a retry leaves the CPU to the others
# (7 min 3 s with three, 6 min 39 s with four on 2026-12-07, docs/reliability.md). xdist's own
# order (files with more tests first) beat handing the heavy files out first: that runs the
# reliability files side by side and slows each (6 min 51 s against 6 min 9 s, clean clones).
PYTEST_WORKERS ?= 4
SCALE ?= 1
# reladiff (the diff benchmark's baseline) lives in a venv of its own: its pins are not ours.
RELADIFF_VENV ?= .bench-reladiff
PLOT_VENV ?= .bench-plot
REPEAT ?= 3

.PHONY: help system-deps venv lint test test-fast test-reversed demo bench clean

help:
	@echo "make demo   - the embedded default end to end (production cluster, backup, accident, PITR)"
	@echo "make lint   - ruff and mypy (strict: restorekit, flows, tasks), as CI runs them first"
	@echo "make test   - install what is missing, then run the whole test suite"
	@echo "make test-fast - unit tests and the integration tests that need no Prefect server"
	@echo "make test-reversed - the whole suite with each file's tests in reverse order"
	@echo "make bench  - every benchmark at SCALE=$(SCALE) and 4x; one table of ratios, JSON, PNG"

system-deps:
	@bash scripts/install-system-deps.sh

# editable_mode=compat: the .pth file is the checkout's path, not setuptools' import hook, which
# cost every Python start 8 ms (19.5 -> 11.5 ms for `python -c pass`): PostgreSQL starts one
# per archived WAL segment, ~1,300 in a run of the tests.
$(BIN)/.installed: pyproject.toml requirements.lock
	@test -n "$(PYTHON)" || { echo "Python 3.11 not found: apt-get install python3.11 python3.11-venv"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv
	$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -r requirements.lock \
		-e . --config-settings editable_mode=compat
	touch $@

# Bytecode for our own packages too: with PYTHONDONTWRITEBYTECODE set (as on these machines)
# every process (archive_command per WAL segment, the app, each CLI run, Prefect's server)
# would otherwise compile its imports from source again; `import prefect` took 2.8 s, 1.3 s
# with bytecode. uv's --compile-bytecode covers the installed packages.
venv: system-deps $(BIN)/.installed
	@$(BIN)/python -m compileall -q -j 0 restorekit flows tasks deployments > /dev/null

# The two checks pyproject.toml configures ([tool.ruff], [tool.mypy]); CI runs this before the
# tests. ruff and mypy come with requirements.lock (the `lint` extra). system-deps first: on a
# new machine the virtualenv must be built from Debian's Python 3.11, as for the tests.
lint: system-deps $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy

test: venv
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The quick loop while editing: tests/unit and tests/integration without what takes minutes:
# tests marked slow (the demo, find-point, retention) or pgbackrest, and the two integration
# files that start Prefect servers and drive whole runs through the CLI (test_cli.py,
# test_webhook_prefect.py). Local clusters, the repository (local and moto's S3), WAL archiving,
# recovery, diff, snapshot and the apps are covered. `make test` runs everything.
FAST_TESTS := tests/unit tests/integration -m "not slow and not pgbackrest" \
	--ignore=tests/integration/test_cli.py --ignore=tests/integration/test_webhook_prefect.py

test-fast: venv
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile $(FAST_TESTS) $(PYTEST_ARGS)

# Each file's tests in reverse order (tests/_reverse.py): a test that depends on what an
# earlier one left behind fails here. Not part of CI's run; run it after changing fixtures.
test-reversed: venv
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile -p _reverse $(PYTEST_ARGS)

demo: venv
	$(BIN)/restorekit demo --state-dir .restorekit-demo

$(RELADIFF_VENV)/bin/reladiff:
	$(PYTHON) -m venv $(RELADIFF_VENV)
	$(RELADIFF_VENV)/bin/python -m pip install -q --disable-pip-version-check reladiff psycopg2-binary

# matplotlib (the chart of bench/run_all.py) lives in a venv of its own too: the tests never need it.
$(PLOT_VENV)/bin/.matplotlib:
	$(PYTHON) -m venv $(PLOT_VENV)
	$(PLOT_VENV)/bin/python -m pip install -q --disable-pip-version-check matplotlib
	touch $@

# Every benchmark at SCALE and 4 x SCALE, one table of ratios (also written into docs/benchmarks.md),
# JSON and a PNG chart under bench/results/.
bench: venv $(RELADIFF_VENV)/bin/reladiff $(PLOT_VENV)/bin/.matplotlib
	$(BIN)/python bench/run_all.py --scale $(SCALE) --repeat $(REPEAT) \
		--reladiff $(RELADIFF_VENV)/bin/reladiff --plot-python $(PLOT_VENV)/bin/python

clean:
	rm -rf $(VENV) $(RELADIFF_VENV) $(PLOT_VENV) .restorekit-demo
