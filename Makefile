PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)  ## start the whole stack on the embedded defaults
	$(BIN)/safar dev

test: $(STAMP)  ## install what the tests need and run them against real services
	XDG_RUNTIME_DIR=$${XDG_RUNTIME_DIR:-/tmp} $(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check services shared tests bench
	$(BIN)/ruff format --check services shared tests bench
	$(BIN)/mypy

bench: $(STAMP)  ## every benchmark; rows for docs/benchmarks.md
	for b in orchestrator ingest memory latency broker webhook; do XDG_RUNTIME_DIR=$${XDG_RUNTIME_DIR:-/tmp} $(BIN)/python -m bench $$b || exit 1; done

clean:
	rm -rf $(VENV) .safar
