"""The engine is importable without the UI, and never imports textual."""

from __future__ import annotations

import subprocess
import sys


def test_engine_does_not_import_textual() -> None:
    code = (
        "import sys, pkgutil, importlib, recovery\n"
        "for pkg in ('core', 'devices', 'filesystems', 'repository', 'engine'):\n"
        "    m = importlib.import_module('recovery.' + pkg)\n"
        "    for info in pkgutil.walk_packages(m.__path__, m.__name__ + '.'):\n"
        "        importlib.import_module(info.name)\n"
        "ui = ('textual', 'recovery.tui')\n"
        "bad = [n for n in sys.modules if n in ui or n.startswith(('textual.', 'recovery.tui.'))]\n"
        "print(bad)\n"
        "raise SystemExit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_cli_help_without_arguments_or_tui() -> None:
    r = subprocess.run([sys.executable, "-m", "recovery", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    assert "COMMAND" in r.stdout


def test_unknown_option_is_one_line_and_exit_2() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "recovery", "--frobnicate"], capture_output=True, text=True
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_only_the_repository_touches_a_locations_files() -> None:
    """The storage seam (docs/FORMAT.md, "Storage operations the format relies on"): outside
    ``recovery/repository`` nothing names a location's files or reaches for its backend."""
    import re
    from pathlib import Path

    package = Path(__file__).resolve().parents[2] / "recovery"
    pattern = re.compile(r"\.backend\.\w+\(|chunk_name|manifest_name|\"(chunks|images|tmp)/")
    offenders = [
        f"{path.relative_to(package.parent)}:{number}: {line.strip()}"
        for path in package.rglob("*.py")
        if "repository" not in path.relative_to(package).parts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not offenders, "\n".join(offenders)
