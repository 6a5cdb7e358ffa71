# Two commands set everything up: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.irn-installed
CONFIG ?= config/config.yaml
CORES ?= 2

.PHONY: install test test-fast demo clean-demo benchmark

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,slurm]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	PATH="$(BIN):$$PATH" $(BIN)/python -m pytest

test-fast: $(STAMP)
	PATH="$(BIN):$$PATH" $(BIN)/python -m pytest -m "not slow"

demo: $(STAMP)
	PATH="$(BIN):$$PATH" $(BIN)/snakemake --snakefile workflow/Snakefile \
		--configfile $(CONFIG) --workflow-profile config/profiles/local --cores $(CORES)
	@cat results/demo/evaluation/summary.md
	@echo "report: $(CURDIR)/results/demo/report/index.html  (open it, or: .venv/bin/irn report --open)"

benchmark: $(STAMP)
	PATH="$(BIN):$$PATH" $(BIN)/python benchmarks/relations.py
