# The two commands of the README: `make run` and `make test`. Everything they need is
# installed here, from Debian packages (deps/debian-packages.txt) and a virtual environment.
SHELL := /bin/bash
PYTHON ?= /usr/bin/python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEB_PACKAGES := $(shell grep -v '^\#' deps/debian-packages.txt | tr '\n' ' ')
PYTEST_ARGS ?=

.PHONY: run test test-unit test-storage check bench bench-files bench-delta bench-increment bench-network deps venv binary test-binary iso-deps iso iso-test clean

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

# The PyInstaller build (builder/recovery.spec): dist/recovery runs the onedir bundle in
# dist/recovery.d/. pyinstaller comes from the `build` extra.
$(VENV)/.installed-build: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev,build]'
	touch $@

binary: venv $(VENV)/.installed-build
	$(BIN)/pyinstaller --noconfirm --clean --log-level WARN --distpath dist \
	  --workpath build/pyinstaller builder/recovery.spec
	ln -sfn recovery.d/recovery dist/recovery
	dist/recovery --version

# The CLI tests of tests/binary against the package and the binary.
test-binary: binary
	$(SUDO) $(BIN)/python -m pytest tests/binary $(PYTEST_ARGS)

# The live ISO (builder/build-iso.sh): Debian packages of deps/debian-packages-iso.txt, the root
# file system cached under ISO_CACHE. SQUASHFS_COMP=xz for a release (smaller, slower to boot).
ISO_DEB_PACKAGES := $(shell grep -v '^\#' deps/debian-packages-iso.txt | tr '\n' ' ')
ISO_CACHE ?= /var/cache/recovery-iso
SQUASHFS_COMP ?= zstd

iso-deps:
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(ISO_DEB_PACKAGES)"

iso: binary iso-deps
	$(SUDO) env ISO_CACHE=$(ISO_CACHE) SQUASHFS_COMP=$(SQUASHFS_COMP) builder/build-iso.sh

# Boots dist/recovery.iso under QEMU in four modes (tests/boot); they are skipped unless
# RECOVERY_BOOT_TESTS=1, which keeps them out of `make test`.
iso-test: iso
	$(SUDO) env RECOVERY_BOOT_TESTS=1 $(BIN)/python -m pytest tests/boot $(PYTEST_ARGS)

bench: venv
	$(SUDO) $(BIN)/python bench/bench.py
	$(SUDO) $(BIN)/python bench/increment.py
	$(SUDO) $(BIN)/python bench/open_read.py
	$(SUDO) $(BIN)/python bench/file_backup.py
	$(SUDO) $(BIN)/python bench/delta_restore.py
	$(SUDO) $(BIN)/python bench/network.py
	$(BIN)/python bench/summary.py

# Only the file-backup case (issue 13): ours against restic and borg on a ~1 GB tree.
bench-files: venv
	$(SUDO) $(BIN)/python bench/file_backup.py

# Only the rapid delta restore case (issue 15): delta restore time / full restore time.
bench-delta: venv
	$(SUDO) $(BIN)/python bench/delta_restore.py

# Only the increment case (issue 18): what the next image adds after ~60 MB of changes.
bench-increment: venv
	$(SUDO) $(BIN)/python bench/increment.py

# Only the network case (issue 14): local folder against SFTP, SMB and S3 on loopback.
bench-network: venv
	$(SUDO) $(BIN)/python bench/network.py

clean:
	rm -rf build dist $(VENV) .mypy_cache .ruff_cache .pytest_cache
