# Entry points for developers and CI.  `make test` is what .ci/run runs.
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install lint test demo screenshot fuzz clean wheel-list

## install: Debian packages (Prosody, ...) and the .venv with the project
install:
	bash scripts/install.sh

## lint: ruff (lint and format check) and mypy --strict on the packages
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## test: lint, then the whole test suite (starts throwaway Prosody servers)
test: install lint
	$(BIN)/pytest

## demo: run the local end-to-end demo; pass options with ARGS="..."
demo: install
	$(BIN)/python -m harness.demo $(ARGS)

## screenshot: regenerate docs/page.png from the page's browser test (headless Chromium)
screenshot: install
	$(BIN)/python scripts/screenshot.py docs/page.png

## fuzz: coverage-guided fuzzing of the datagram decoder (atheris); SECONDS=300 by default
SECONDS ?= 300
fuzz: install
	$(BIN)/pip install --quiet atheris
	mkdir -p .fuzz-work
	cd .fuzz-work && ../$(BIN)/python ../tests/fuzz/fuzz_datagram.py . ../tests/fuzz/corpus \
		../tests/fuzz/found -max_total_time=$(SECONDS) -rss_limit_mb=2048
	@echo "new inputs are in .fuzz-work; a crash-* file there is a finding: copy it to tests/fuzz/crashes/"

## clean: remove the virtualenv, caches and build leftovers
clean:
	rm -rf $(VENV) build demo-run .pytest_cache .mypy_cache .ruff_cache *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

## wheel-list: build the wheel and list what it installs (only the product, no harness)
wheel-list: install
	rm -rf build/wheel && $(BIN)/pip wheel --no-deps -q -w build/wheel .
	$(BIN)/python -m zipfile -l build/wheel/xmlrc-*.whl
