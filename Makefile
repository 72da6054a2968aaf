# The two commands of the README: `make run` and `make test`. Everything they need is
# installed here, from Debian packages (deps/debian-packages.txt) and a virtual environment.
SHELL := /bin/bash
PYTHON ?= /usr/bin/python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEB_PACKAGES := $(shell grep -v '^\#' deps/debian-packages.txt | tr '\n' ' ')
PYTEST_ARGS ?=

.PHONY: run test test-unit test-storage check bench deps venv binary test-binary iso iso-test clean

run: venv
	@$(SUDO) $(BIN)/recovery

# Installs the Debian packages only when one is missing, so a second `make` is quick.
deps:
	@missing=$$(dpkg-query -W -f='$${Package} $${Status}\n' $(DEB_PACKAGES) 2>/dev/null \
	  | awk '$$NF!="installed"{print $$1}'; \
	  for p in $(DEB_PACKAGES); do dpkg-query -W $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages: $$(echo $$missing | tr '\n' ' ')"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: deps $(VENV)/.installed

$(VENV)/.installed: pyproject.toml deps/debian-packages.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# Unit tests run as any user; storage tests need root and udevd (tests/storage/conftest.py
# starts udevd when it is not running). The binary tier runs when dist/recovery exists.
test: venv
	$(SUDO) $(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: venv
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

test-storage: venv
	$(SUDO) $(BIN)/python -m pytest tests/storage $(PYTEST_ARGS)

check: venv
	$(BIN)/ruff check recovery tests builder
	$(BIN)/ruff format --check recovery tests builder
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: venv
	$(SUDO) $(BIN)/python bench/bench.py

clean:
	rm -rf build dist $(VENV) .mypy_cache .ruff_cache .pytest_cache
