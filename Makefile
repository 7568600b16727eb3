# Two entry points: `make demo` (set up, train E2E vs local methods on the bundled CIFAR-10 sample, print the
# table, write plots) and `make test` (set up, run the default test suite). Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed first and pinned, so that pip never resolves a multi-GB CUDA build on a CPU machine.
# On a CUDA machine set TORCH_SPEC to the build you want, e.g. TORCH_SPEC="torch==2.13.0 --index-url ...".
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup demo test test-dist test-all lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/locallearn demo --out demo_out

# Lint, the default suite, then the multi-process (gloo) tests; pytest's exit 5 means "none collected".
test: setup lint
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest -m dist || [ $$? -eq 5 ]

test-dist: setup
	$(BIN)/python -m pytest -m dist || [ $$? -eq 5 ]

test-all: setup
	LOCALLEARN_DATA=$${LOCALLEARN_DATA:-../shared/data} $(BIN)/python -m pytest -m "not gpu and not bench"

lint: setup
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

clean:
	rm -rf $(VENV) demo_out runs .pytest_cache
