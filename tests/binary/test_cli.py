"""The command line as a process, run as the package and as the PyInstaller binary.

What the binary can get wrong that the package cannot: a module PyInstaller did not see (commands
and file system readers are imported by name, Textual widgets lazily), a data file left behind,
a shared library missing. Each test here would catch one of those.
"""

from __future__ import annotations

import json
import pkgutil
from pathlib import Path

import pytest

import recovery
from tests import cli_runner, loopdev

MiB = 1024 * 1024


def test_help_lists_usage(recovery_cmd: list[str]) -> None:
    r = cli_runner.run(recovery_cmd, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: recovery")
    assert r.stderr == ""


def test_version(recovery_cmd: list[str]) -> None:
    r = cli_runner.run(recovery_cmd, "--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"recovery {recovery.__version__}"


@pytest.mark.parametrize(
    "argv",
    [["no-such-command"], ["--no-such-option"], ["disks", "--no-such-option"]],
    ids=["unknown-command", "unknown-option", "unknown-disks-option"],
)
def test_bad_input_gives_one_line_and_fails(recovery_cmd: list[str], argv: list[str]) -> None:
    r = cli_runner.run(recovery_cmd, *argv)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("recovery: ")
    assert r.stdout == ""


def test_binary_has_every_command_of_the_package() -> None:
    """cli.py imports each command by name and leaves out one it cannot import: the binary would
    silently lose a command whose module PyInstaller did not collect."""
    if reason := cli_runner.binary_skip_reason():
        pytest.skip(reason)
    package = cli_runner.run(cli_runner.command("package"), "--help")
    binary = cli_runner.run(cli_runner.command("binary"), "--help")
    assert binary.returncode == 0, binary.stderr
    assert cli_runner.subcommands(binary.stdout) == cli_runner.subcommands(package.stdout), (
        "the binary lists other commands than the package: a command module missing from the "
        "binary, or a binary older than the checkout (run `make binary`)"
    )


def test_binary_holds_every_module_of_the_package() -> None:
    """File system readers and commands are imported by name at run time; a reader missing from
    the binary would only show as "unknown file system" on a user's disk."""
    if reason := cli_runner.binary_skip_reason():
        pytest.skip(reason)
    readers = pytest.importorskip("PyInstaller.archive.readers", reason="needs `.[build]`")
    archive = readers.CArchiveReader(str(cli_runner.BINARY.resolve()))
    pyz_name = next(name for name in archive.toc if name.endswith(".pyz"))
    frozen = set(archive.open_embedded_archive(pyz_name).toc)

    package_dir = Path(recovery.__file__).parent
    source = {"recovery"} | {
        m.name for m in pkgutil.walk_packages([str(package_dir)], prefix="recovery.")
    }
    missing = sorted(source - frozen)
    assert not missing, f"modules missing from the binary (see builder/recovery.spec): {missing}"


def _package_has(command: str) -> bool:
    r = cli_runner.run(cli_runner.command("package"), "--help")
    return command in cli_runner.subcommands(r.stdout)


def test_disks_json_shows_a_gpt_loop_disk(recovery_cmd: list[str], loop) -> None:  # type: ignore[no-untyped-def]
    if not _package_has("disks"):
        pytest.skip("the package has no `disks` command yet")
    dev = loop(64 * MiB)
    parts = loopdev.partition(
        dev,
        "label: gpt\n"
        "start=2048, size=40960, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=data\n"
        "start=43008, size=20480, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n",
    )
    loopdev.mkfs(parts[0], "ext4", "-L", "binarytest")

    r = cli_runner.run(recovery_cmd, "disks", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    disks = data["disks"] if isinstance(data, dict) else data
    disk = next((d for d in disks if d["path"] == dev), None)
    assert disk is not None, f"{dev} not in {[d['path'] for d in disks]}"
    assert disk["size"] == 64 * MiB
    assert disk["table"] == "gpt"
    assert [(p["number"], p["start"], p["size"]) for p in disk["partitions"]] == [
        (1, 2048 * 512, 40960 * 512),
        (2, 43008 * 512, 20480 * 512),
    ]
    first = disk["partitions"][0]
    assert first["path"] == parts[0]
    assert first["fstype"] == "ext4"
    assert first["label"] == "binarytest"
    assert first["partlabel"] == "data"
