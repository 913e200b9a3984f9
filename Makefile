# Two commands for a new machine: `make demo` (install + run the demo end to end) and `make test`.
VENV ?= .venv
PYTHON ?= python3
# A CPU or CUDA build of torch, whichever pip's index serves for this platform; override for another.
TORCH ?= torch==2.13.0
CORES ?= 2

BIN := $(VENV)/bin

.PHONY: install demo test test-slurm lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)" -e ".[test]"
	touch $@

demo: install
	$(BIN)/snakemake --cores $(CORES)

test: install
	$(BIN)/python -m pytest

test-slurm: install
	$(BIN)/python -m pip install --quiet "snakemake-executor-plugin-slurm>=2.8,<3"
	$(BIN)/python -m pytest -m slurm

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check .
	$(BIN)/snakemake --lint

clean:
	rm -rf results logs .snakemake
