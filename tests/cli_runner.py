"""The recovery command line as a process, the way a person or a script runs it.

Two ways to run it: ``package`` (``python -m recovery`` from this checkout) and ``binary`` (the
PyInstaller build at dist/recovery, made by ``make binary``). tests/binary/conftest.py turns these
into the ``recovery_cmd`` fixture, so every CLI test written there runs against both, and a module
the binary lacks (a hidden import PyInstaller could not see) fails a test instead of a user.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BINARY = REPO / "dist" / "recovery"
KINDS = ("package", "binary")

# Under emulation or on a busy 2-core machine the binary's first start (page cache cold) takes
# seconds; a command that hangs should still fail the test rather than the whole run.
DEFAULT_TIMEOUT = 120.0


def binary_present() -> bool:
    return BINARY.exists() and os.access(BINARY, os.X_OK)


def binary_stale() -> Path | None:
    """The newest file of the package changed after dist/recovery was built, or None.

    A stale binary is skipped rather than failed: on a shared working tree it says nothing about
    the code as it is now. CI builds the binary right before the tests, so it is never stale
    there.
    """
    built_at = BINARY.resolve().stat().st_mtime
    package = REPO / "recovery"
    newer = [
        p
        for p in package.rglob("*")
        if p.suffix in (".py", ".tcss") and p.stat().st_mtime > built_at
    ]
    return max(newer, key=lambda p: p.stat().st_mtime) if newer else None


def binary_skip_reason() -> str | None:
    """Why the binary tier cannot run now (absent or stale), or None when it can."""
    if not binary_present():
        return f"{BINARY} not built (run `make binary`)"
    stale = binary_stale()
    if stale is not None:
        return f"{BINARY} is older than {stale.relative_to(REPO)} (run `make binary`)"
    return None


def command(kind: str) -> list[str]:
    """The argv prefix that runs recovery as ``kind`` (``package`` or ``binary``)."""
    if kind == "package":
        return [sys.executable, "-m", "recovery"]
    if kind == "binary":
        return [str(BINARY)]
    raise ValueError(f"unknown way to run recovery: {kind!r} (one of {KINDS})")


def run(
    cmd: list[str],
    *args: str,
    input: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd + args`` with no terminal (stdin closed unless ``input``), capture both streams.

    Never raises for a non-zero exit: tests assert on ``returncode``, ``stdout`` and ``stderr``.
    """
    full_env = dict(os.environ)
    # A narrow, fixed width so help and tables wrap the same on every machine.
    full_env.update({"COLUMNS": "100", "LC_ALL": "C.UTF-8", "PYTHONUNBUFFERED": "1"})
    full_env.pop("TERM", None)
    if env:
        full_env.update(env)
    return subprocess.run(
        [*cmd, *args],
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=full_env,
    )


def subcommands(help_text: str) -> set[str]:
    """The subcommand names that ``recovery --help`` lists under its ``COMMAND`` heading."""
    names: set[str] = set()
    in_commands = False
    for line in help_text.splitlines():
        if line.strip() == "COMMAND":
            in_commands = True
        elif in_commands and line.startswith("    ") and line.strip():
            names.add(line.split()[0])
        elif in_commands and names:
            break
    return names
