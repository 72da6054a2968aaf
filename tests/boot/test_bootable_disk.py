"""A backup of a bootable Linux disk boots without being restored (issue 12: ``open``, then QEMU
on DIR/disk.img with -snapshot) and after export to qcow2 (issue 17).

The disk is tests/boot/bootable_disk.py's (the live ISO's own Debian on a GPT disk: FAT32 EFI
partition with GRUB, ext4 root). It is attached read-only on a loop device and backed up with the
CLI into a folder location once per module; each test boots one view of the image under QEMU
(UEFI, TCG) until the serial line shows ``bootdisk login:``, logs in and checks that the system
that came up is that disk's. Timings go to build/boot-test/timings.json under "bootable-disk".
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import loopdev
from tests.boot.bootable_disk import BootableDisk, Booted, boot, bootable_disk, login
from tests.boot.conftest import ARTIFACTS, _write_timings
from tests.storage.disks import run_recovery
from tests.storage.open_disk import left_behind

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (loop devices, FUSE)")

IMAGE = "bootdisk"


@pytest.fixture(scope="module")
def disk(iso: Path, timings: dict[str, dict[str, float]]) -> BootableDisk:
    started = time.monotonic()
    d = bootable_disk(iso)
    timings.setdefault("bootable-disk", {})["disk_ready_s"] = round(time.monotonic() - started, 1)
    return d


@pytest.fixture(scope="module")
def repo(
    disk: BootableDisk,
    tmp_path_factory: pytest.TempPathFactory,
    timings: dict[str, dict[str, float]],
) -> Iterator[Path]:
    """The disk backed up (from a read-only loop device) into a folder location."""
    loopdev.ensure_udev()
    location = tmp_path_factory.mktemp("bootable-disk") / "repo"
    dev = loopdev.attach(disk.path, readonly=True)
    try:
        loopdev.sync_partitions(dev)
        assert len(loopdev.partition_paths(dev)) == 2
        started = time.monotonic()
        run_recovery("backup", dev, "--to", str(location), "--name", IMAGE, "--yes", timeout=900)
        timings["bootable-disk"]["backup_s"] = round(time.monotonic() - started, 1)
    finally:
        loopdev.detach(dev)
    yield location


def _check_booted(booted: Booted, disk: BootableDisk, name: str) -> None:
    """Logged in, the system is the disk's: its marker, its root on the virtio disk's p2."""
    machine = booted.machine
    assert machine.serial is not None
    login(machine)
    status, out = machine.serial.run("cat /etc/bootable-disk; findmnt -n -o SOURCE,FSTYPE /")
    assert status == 0, out
    assert out.split("\n")[:2] == [disk.marker, "/dev/vda2 ext4"], out
    status, out = machine.serial.run("systemd-analyze time | head -1; systemd-analyze blame | head")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"bootable-disk-{name}-analyze.txt").write_text(out)


def _keep_logs(workdir: Path, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for log in ("serial.log", "qemu.log"):
        if (workdir / log).exists():
            shutil.copyfile(workdir / log, ARTIFACTS / f"bootable-disk-{name}-{log}")


def test_opened_image_boots_with_snapshot(
    disk: BootableDisk,
    repo: Path,
    tmp_path: Path,
    timings: dict[str, dict[str, float]],
) -> None:
    """``recovery open`` + ``qemu-system-x86_64 -snapshot`` on DIR/disk.img: the backup boots
    to a login prompt without a restore, and ``close`` leaves nothing behind."""
    view = tmp_path / "view"
    view.mkdir()
    opened = json.loads(run_recovery("open", f"{repo}::{IMAGE}", str(view), "--json").stdout)
    pid = opened["pid"]
    figures = timings["bootable-disk"]
    try:
        assert os.path.getsize(view / "disk.img") == disk.size
        workdir = tmp_path / "vm-open"
        try:
            with boot(view / "disk.img", workdir, snapshot=True) as booted:
                figures["open_login_s"] = booted.login_s
                _check_booted(booted, disk, "open")
        finally:
            _keep_logs(workdir, "open")
            _write_timings(timings)
    finally:
        run_recovery("close", str(view))
    assert left_behind(view, pid) == []


def test_exported_qcow2_boots(
    disk: BootableDisk,
    repo: Path,
    tmp_path: Path,
    timings: dict[str, dict[str, float]],
) -> None:
    """``recovery export --format qcow2``: the file is a qcow2 of the disk's size, smaller than
    the disk, and boots (written to, as a hypervisor would) to a login prompt."""
    out = tmp_path / "bootdisk.qcow2"
    figures = timings["bootable-disk"]
    started = time.monotonic()
    run_recovery("export", f"{repo}::{IMAGE}", str(out), "--format", "qcow2", timeout=900)
    figures["export_qcow2_s"] = round(time.monotonic() - started, 1)
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(out)], capture_output=True, check=True
        ).stdout
    )
    assert (info["format"], info["virtual-size"]) == ("qcow2", disk.size)
    assert out.stat().st_blocks * 512 < disk.size
    workdir = tmp_path / "vm-export"
    try:
        with boot(out, workdir, format="qcow2", snapshot=False) as booted:
            figures["export_login_s"] = booted.login_s
            _check_booted(booted, disk, "export")
    finally:
        _keep_logs(workdir, "export")
        _write_timings(timings)
