"""Test tiers by directory: tests/unit (no root), tests/storage (root, loop devices, udevd),
tests/binary (the PyInstaller build), tests/boot (QEMU). Markers are added from the directory so
that ``-m 'not storage'`` selects the unprivileged tier."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.parts
        for tier in ("storage", "binary", "boot"):
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))
        if "storage" in parts and os.geteuid() != 0:
            item.add_marker(pytest.mark.skip(reason="storage tests need root (run `make test`)"))
