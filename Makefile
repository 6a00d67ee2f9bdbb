# Every setup step lives here: a fresh machine needs only Python 3.11 and pip.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
# An editable install leaves our modules without bytecode, and where PYTHONDONTWRITEBYTECODE
# is set (as on these machines, and in many container images) Python never writes it: every
# `ds` start compiled ~70 modules again (~0.1 s). pip compiles a regular install; this does
# the same for the editable one (stale files are recompiled; Python checks each source).
COMPILE = $(BIN)/python -m compileall -q src

.PHONY: demo test lint typecheck pytest venv dev examples podman chromium slurm reliability bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

venv: $(BIN)/python

# The quickstart: install the package with the example's extra, run the example locally.
demo: venv
	$(BIN)/pip install --quiet -e '.[quickstart]'
	$(COMPILE)
	$(BIN)/ds run examples/quickstart

dev: venv
	$(BIN)/pip install --quiet -e '.[dev]'
	$(COMPILE)

lint: dev
	$(BIN)/ruff check src tests examples bench docker
	$(BIN)/ruff format --check src tests examples bench docker

typecheck: dev
	$(BIN)/mypy

pytest: dev
	$(BIN)/python -m pytest -q

# Every tool the examples run: CellProfiler (its own venv, linked into .venv/bin), ImageJ
# (Debian packages), the OME-Zarr converter (an extra of ours).
examples: dev
	$(BIN)/pip install --quiet -e '.[dev,omezarr]'
	scripts/install-cellprofiler.sh $(PYTHON) $(BIN)
	scripts/install-imagej.sh

# The container engine of the worker-image test (tests/test_container_ecs.py): podman, runc
# and debootstrap from apt; podman runs with scripts/containers.conf (CONTAINERS_CONF).
podman:
	scripts/install-podman.sh

# Debian's chromium for the headless-browser test of the HTML report
# (tests/test_report_browser.py).
chromium:
	scripts/install-chromium.sh

# Slurm and munge for tests/test_slurm.py (the tests start a one-node cluster and stop it by
# PID; `scripts/slurm-local.sh start|stop` runs one by hand).
slurm:
	scripts/slurm-local.sh install

# Every test: lint, types, the whole suite (with the example tools, podman, chromium and Slurm);
# the slowest tests are listed at the end, to see one that got slower.
test: examples podman chromium slurm
	$(BIN)/ruff check src tests examples bench docker
	$(BIN)/ruff format --check src tests examples bench docker
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -rs --durations=30

# The reliability suite, writing the tracked RELIABILITY.md (`make test` writes its figures to
# build/RELIABILITY.md only).
reliability: examples
	DS_RELIABILITY_REPORT=RELIABILITY.md $(BIN)/python -m pytest -q -rs tests/test_reliability_*.py

# Side-by-side benchmarks (not pass/fail): writes BENCHMARKS.md.
bench: examples
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .venv-cellprofiler .pytest_cache .mypy_cache .ruff_cache
