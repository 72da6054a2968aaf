"""The binary tier: CLI tests that run against the package and the PyInstaller build alike.

``recovery_cmd`` is the argv prefix that runs recovery one way or the other; every test that
takes it runs twice. The ``binary`` case is skipped while dist/recovery does not exist or is
older than the package (``make binary`` builds it), so ``make test`` stays green on a machine
that never built one and does not report a stale build; CI builds it right before the tests.
Tests here get the ``binary`` marker from tests/conftest.py; those that need root and loop
devices take ``loop``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import cli_runner, loopdev


@pytest.fixture(params=cli_runner.KINDS)
def recovery_cmd(request: pytest.FixtureRequest) -> list[str]:
    """``[sys.executable, "-m", "recovery"]`` or ``["…/dist/recovery"]``."""
    kind: str = request.param
    if kind == "binary" and (reason := cli_runner.binary_skip_reason()):
        pytest.skip(reason)
    return cli_runner.command(kind)


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[Callable[[int], str]]:
    """Factory: ``loop(size)`` attaches a sparse loop disk (root only), detached after the test."""
    if os.geteuid() != 0:
        pytest.skip("needs root for loop devices (run `make test-binary`)")
    loopdev.ensure_udev()
    stack: list[object] = []

    def make(size: int) -> str:
        cm = loopdev.loop_disk(tmp_path, size, f"disk{len(stack)}.img")
        stack.append(cm)
        return cm.__enter__()

    yield make
    for cm in reversed(stack):
        cm.__exit__(None, None, None)  # type: ignore[attr-defined]
