"""Issue 15, "Done when": a bootable Linux disk restored, and cloned, onto a smaller disk boots.

The disk is tests/boot/bootable_disk.py's (EFI + ext4 root made from the live ISO's Debian,
``spread``: filler files over the whole root, every other one deleted, so the shrink must move
blocks from beyond the new end). It is backed up, restored onto a loop disk smaller than it but
larger than its data, and cloned onto another; each result boots under QEMU (UEFI, TCG) to
``login:``, and the booted system is the one that was imaged. GRUB finds the root by its file
system UUID, so a shrink that lost an identifier would not boot.

Skipped unless RECOVERY_BOOT_TESTS=1 (tests/boot/conftest.py) and until bootable_disk.py is
there; needs the ISO the fixture builds the disk from (``RECOVERY_ISO`` or dist/recovery.iso).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import loopdev
from tests.storage.disks import run_recovery

bootable = pytest.importorskip("tests.boot.bootable_disk")

MiB = 1 << 20
SOURCE_SIZE = 1536 * MiB


def boots_as_the_source(dev: str, workdir: Path, marker: str) -> float:
    with bootable.boot(Path(dev), workdir, snapshot=True) as booted:
        bootable.login(booted.machine)
        _, out = booted.machine.serial.run("cat /etc/bootable-disk")
        assert out.strip() == marker, out
        _, out = booted.machine.serial.run("findmnt -no SOURCE,FSTYPE /")
        assert "ext4" in out, out
        return float(booted.login_s)


def test_restore_and_clone_onto_a_smaller_disk_boot(tmp_path: Path) -> None:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.fail("qemu-system-x86_64 not found: run `make iso-deps`")
    disk = bootable.bootable_disk(spread=True, size=SOURCE_SIZE)
    image = tmp_path / "source.img"
    subprocess.run(["cp", "--sparse=always", str(disk.path), str(image)], check=True)
    # Smaller than the source, larger than what the ESP and the root hold.
    target = (disk.root.start + disk.used_bytes * 5 // 4 + 96 * MiB) // MiB * MiB
    assert target < SOURCE_SIZE, (target, disk.used_bytes)
    src = loopdev.attach(image)
    devices = [src]
    try:
        loopdev.sync_partitions(src)  # this kernel has no partition parsers: BLKPG
        loopdev.settle(src)
        repo = tmp_path / "repo"
        run_recovery("backup", src, "--to", str(repo), "--name", "bootable")
        with open(tmp_path / "restored.img", "wb") as f:
            f.truncate(target)
        restored = loopdev.attach(tmp_path / "restored.img")
        devices.append(restored)
        r = run_recovery("restore", f"{repo}::bootable", restored, "--yes")
        out = r.stdout + r.stderr
        assert re.search(r"partition 2 \(ext4\).*shrunk from", out), out
        assert "FAILED" not in out, out
        seconds = boots_as_the_source(restored, tmp_path / "vm1", disk.marker)
        print(f"restored onto {target} bytes: login after {seconds} s")
        # What the restore made is checked: give its disk space back before the clone makes
        # as much again (CI's disk also holds the rest of the suite's files).
        loopdev.detach(devices.pop())
        (tmp_path / "restored.img").unlink()
        shutil.rmtree(repo)

        with open(tmp_path / "cloned.img", "wb") as f:
            f.truncate(target)
        cloned = loopdev.attach(tmp_path / "cloned.img")
        devices.append(cloned)
        r = run_recovery("clone", src, cloned, "--yes")
        out = r.stdout + r.stderr
        assert re.search(r"partition 2 \(ext4\).*shrunk from", out), out
        assert "FAILED" not in out, out
        seconds = boots_as_the_source(cloned, tmp_path / "vm2", disk.marker)
        print(f"cloned onto {target} bytes: login after {seconds} s")
    finally:
        for dev in reversed(devices):
            loopdev.detach(dev)
