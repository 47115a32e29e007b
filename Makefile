# vireid: set-up, demo and tests. Every target builds the virtual environment first.
# `make demo` runs the main job, `make test` the test suite (what CI runs).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# How torch is pinned (README "Set-up"): `auto` asks scripts/select_constraints.py, which picks
# constraints.txt where the local torch+cpu wheel is in pip's configuration, constraints-cpu.txt
# (+ PyTorch's CPU index on Linux x86_64) on other CPU-only machines, and no pin where nvidia-smi
# lists a GPU (PyPI's CUDA build). CONSTRAINTS=<file> pins with that file; CONSTRAINTS= pins nothing.
CONSTRAINTS ?= auto
ifeq ($(CONSTRAINTS),auto)
PIP_C = $(shell $(PYTHON) scripts/select_constraints.py --explain)
else
PIP_C = $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)
endif
STAMP := $(VENV)/.installed
# pipelines keep the exit status of their first failing command (pip's, below)
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
# pip prints one "WARNING: Location '<index>/<package>/' is ignored: ..." line per package that a
# configured extra index (e.g. a partial local mirror in pip.conf) does not hold -- about 200 for this
# install, all harmless. They are dropped; every other line (real errors included) still shows, and
# the pipeline fails when pip fails.
PIP_FILTER := sed -u "/^WARNING: Location '.*' is ignored: /d"
export HF_HUB_OFFLINE := 1
export PYTHONUNBUFFERED := 1

.PHONY: setup demo test bench clean browser

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt constraints-cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip 2>&1 | $(PIP_FILTER)
	$(BIN)/python -m pip install --quiet $(PIP_C) -e '.[test,all]' 2>&1 | $(PIP_FILTER)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/vireid demo

# the web page test drives Debian's chromium (installed here when missing, if we may)
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || sh scripts/install_chromium.sh

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
