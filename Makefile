# fseg: `make demo` segments a slide with the embedded defaults; `make test` runs every check.
# Every install step lives here, so a clean clone on a fresh machine needs nothing else.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SLIDE ?=
DEMO_OUT ?= demo-out
PYTEST_ARGS ?=

.PHONY: install demo test lint check-proto proto system-deps bench clean

install: $(STAMP)

# torch and torchvision are installed first and explicitly: a machine may carry
# a CPU-only torch wheel in pip's find-links that the registry's torchvision
# cannot import (its compiled ops need the matching torch), and timm needs
# torchvision. The registry's standard builds run on the CPU when no GPU exists.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch>=2.14" "torchvision>=0.29"
	$(BIN)/pip install --quiet -e ".[server,dev,imagenet]"
	touch $(STAMP)

demo: install
	$(BIN)/python tools/demo.py --out $(DEMO_OUT) $(if $(SLIDE),--slide "$(SLIDE)")

test: install system-deps check-proto lint
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

check-proto: install
	$(BIN)/python proto/generate.py --check

proto: install
	$(BIN)/python proto/generate.py

# The QuPath conformance checks need a JVM, Groovy and JTS (the geometry
# library QuPath is built on). Installed with apt-get only when missing.
system-deps:
	@tools/system-deps.sh

bench: install
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .ruff_cache
