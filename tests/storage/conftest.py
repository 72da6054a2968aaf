from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import loopdev


@pytest.fixture(scope="session", autouse=True)
def udev() -> None:
    if os.geteuid() == 0:
        loopdev.ensure_udev()


@pytest.fixture
def loop(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Factory: ``loop(size)`` attaches a new sparse loop disk, detached after the test."""
    stack: list = []

    def make(size: int, name: str | None = None) -> str:
        cm = loopdev.loop_disk(tmp_path, size, name or f"disk{len(stack)}.img")
        stack.append(cm)
        return cm.__enter__()

    yield make
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


@pytest.fixture
def repo_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "repo"
