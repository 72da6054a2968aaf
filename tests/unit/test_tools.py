"""Availability of external programs, answered with reasons (no root, a fake PATH)."""

from __future__ import annotations

from pathlib import Path

import pytest

from recovery.devices import tools
from recovery.devices.tools import TOOLS, Need, require, unavailable
from recovery.engine.finish import finish_needs
from recovery.errors import MissingTool, Refused
from recovery.filesystems.base import kind_of, kinds


def fake_path(tmp_path: Path, *commands: str) -> str:
    """A PATH holding only ``commands``, each an executable that exits 0."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for c in commands:
        f = bin_dir / c
        f.write_text("#!/bin/sh\nexit 0\n")
        f.chmod(0o755)
    return str(bin_dir)


def test_present_programs_need_nothing(tmp_path: Path) -> None:
    path = fake_path(tmp_path, "e2fsck", "resize2fs")
    need = [Need("e2fsck", "to check ext4"), Need("resize2fs", "to grow ext4 on the target")]
    assert unavailable(need, path) == []
    require(need, path)


def test_missing_program_names_its_package_and_purpose(tmp_path: Path) -> None:
    path = fake_path(tmp_path, "e2fsck")
    need = [Need("e2fsck", "to check ext4"), Need("resize2fs", "to grow ext4 on the target")]
    assert unavailable(need, path) == [
        "resize2fs is needed to grow ext4 on the target: install e2fsprogs"
    ]
    with pytest.raises(MissingTool) as e:
        require(need, path)
    assert e.value.message.startswith("resize2fs is needed to grow ext4 on the target")
    assert "install e2fsprogs" in e.value.message
    assert "\n" not in e.value.message
    # A refusal before anything was written, with its own exit code.
    assert isinstance(e.value, Refused)
    assert e.value.exit_code == 9


def test_each_missing_program_is_named_once(tmp_path: Path) -> None:
    path = fake_path(tmp_path)
    reasons = unavailable(
        [Need("e2fsck", "to grow ext4"), Need("e2fsck", "to check ext4"), Need("sfdisk", "x")],
        path,
    )
    assert reasons == [
        "e2fsck is needed to grow ext4: install e2fsprogs",
        "sfdisk is needed x: install fdisk",
    ]


def test_a_non_executable_file_is_not_the_program(tmp_path: Path) -> None:
    path = fake_path(tmp_path)
    (Path(path) / "mkswap").write_text("not a program")
    assert unavailable([Need("mkswap", "to recreate swap")], path)


def test_every_program_the_homes_run_is_described() -> None:
    for kind in kinds():
        needs = [
            *kind.finish_needs(grows=True),
            *kind.inspect_needs(),
        ]
        for need in needs:
            assert need.command in TOOLS, (kind, need.command)


def test_restore_that_grows_ext4_needs_resize2fs(tmp_path: Path) -> None:
    needs = finish_needs([("vfat", False), ("ext4", True), ("swap", False)], writes_table=True)
    commands = {n.command for n in needs}
    assert {"sfdisk", "partx", "fsck.vfat", "e2fsck", "resize2fs", "mkswap"} <= commands
    path = fake_path(tmp_path, *(commands - {"resize2fs"}))
    with pytest.raises(MissingTool, match="resize2fs is needed to grow ext4 on the target"):
        require(needs, path)


def test_what_does_not_grow_does_not_need_the_grow_tools() -> None:
    same = {n.command for n in finish_needs([("ext4", False)], writes_table=False)}
    assert same == {"e2fsck"}
    # FAT is never grown even in a larger partition; unknown content runs nothing.
    assert {n.command for n in finish_needs([("vfat", True)], False)} == {"fsck.vfat"}
    assert finish_needs([(None, True), ("BitLocker", True)], False) == []


def test_homes_answer_what_the_engine_asked_of_fstype_strings() -> None:
    assert [k for k in ("ext2", "ext3", "ext4", "ntfs") if kind_of(k).can_grow] == [
        "ext2",
        "ext3",
        "ext4",
        "ntfs",
    ]
    assert not kind_of("vfat").can_grow and not kind_of(None).can_grow
    assert kind_of("ntfs").mount_type == "ntfs-3g"
    assert kind_of("ext4").read_only_options == "ro,noload"
    assert kind_of("ext2").read_only_options == "ro"
    assert kind_of("xfs").read_only_options == "ro,norecovery"
    assert kind_of("swap").mount_type is None and kind_of("swap").header_only
    assert kind_of("BitLocker").encrypted and kind_of("crypto_LUKS").encrypted
    assert kind_of("zfs_member").mount_type is None


def test_run_reports_a_missing_program_as_a_result(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PATH", fake_path(tmp_path))
    assert tools.run(["resize2fs", "/dev/null"]) == (127, "resize2fs is not installed")
    assert tools.output(["debugfs", "-R", "ls", "/dev/null"]) == ""


def _programs_started(source: Path) -> dict[str, str]:
    """Program names the code in ``source`` starts: argv lists whose first item is a command
    name (``["losetup", ...]``) and ``_run("losetup", ...)`` / ``shutil.which("qemu-img")``
    calls. Command name -> where (first place seen)."""
    import ast
    import re

    command = re.compile(r"^[a-z][a-z0-9.-]*$")
    found: dict[str, str] = {}
    for path in sorted(source.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            first: ast.expr | None = None
            if isinstance(node, ast.List) and len(node.elts) > 1:
                first = node.elts[0]
            elif isinstance(node, ast.Call) and node.args:
                name = getattr(node.func, "attr", getattr(node.func, "id", ""))
                if name in ("_run", "which"):
                    first = node.args[0]
            if (
                isinstance(first, ast.Constant)
                and isinstance(first.value, str)
                and command.match(first.value)
            ):
                found.setdefault(first.value, f"{path}:{node.lineno}")
    return found


def test_every_program_the_engine_starts_is_described() -> None:
    """A program run without an entry in TOOLS could not be required by a plan, and its absence
    would surface as a failure after writing began instead of a refusal naming its package.
    (The TUI's poweroff/reboot/systemctl are the machine's, not the engine's.)"""
    package = Path(__file__).resolve().parents[2] / "recovery"
    started: dict[str, str] = {}
    for part in ("engine", "devices", "filesystems", "repository", "peers", "core", "commands"):
        if (package / part).is_dir():
            started.update(_programs_started(package / part))
    assert {"qemu-img", "losetup", "mkswap", "umount", "sfdisk"} <= set(started)
    undescribed = {name: where for name, where in started.items() if name not in TOOLS}
    assert undescribed == {}


def test_export_without_qemu_img_names_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recovery.engine.progress import CancelToken, NullProgress
    from recovery.engine.vdisk import export_image

    monkeypatch.setenv("PATH", fake_path(tmp_path, "losetup"))
    with pytest.raises(MissingTool) as e:
        export_image(
            str(tmp_path / "repo"), "img", str(tmp_path / "out.qcow2"), "qcow2",
            NullProgress(), CancelToken(),
        )  # fmt: skip
    assert e.value.message == (
        "qemu-img is needed to write qcow2 files: install qemu-utils; nothing was written"
    )
    assert not (tmp_path / "out.qcow2").exists()
