"""A restored LVM system activates in the live system (issue 16, "Done when").

On the host (no device-mapper here): a RHEL-style disk (tests/storage/lvm_disk.py: EFI, /boot,
an LVM PV with root on xfs, home on ext4 in two segments, swap) is backed up and restored onto a
larger disk, which grows the PV and the root volume without activating anything. Then the live
ISO boots with that disk attached (one boot, BIOS CD), and inside it, whose kernel has
device-mapper: the volume group activates, root has grown, `xfs_repair -n` and `e2fsck -fn` of
the volumes are clean, root's files are there, `recovery disks --json` sees the volumes active,
and the group deactivates again.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import loopdev
from tests.boot.conftest import ARTIFACTS, BOOT_TIMEOUT
from tests.boot.qemu import MODES, Disk, Machine
from tests.cli_runner import command
from tests.storage.lvm_disk import make_rhel_disk

MiB = 1 << 20


def recovery(*args: str) -> str:
    r = subprocess.run([*command("package"), *args], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout + r.stderr


@pytest.fixture(scope="module")
def restored_lvm_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A disk image file holding the RHEL-style disk restored onto 1.2 GiB (grown)."""
    if shutil.which("pvcreate") is None:
        pytest.skip("needs lvm2 on the host")
    loopdev.ensure_udev()
    work = tmp_path_factory.mktemp("lvm")
    attached: list[str] = []

    def loop(size: int) -> str:
        image = work / f"disk{len(attached)}.img"
        with open(image, "wb") as f:
            f.truncate(size)
        attached.append(loopdev.attach(image))
        return attached[-1]

    try:
        src = make_rhel_disk(loop, work)
        recovery("backup", src.disk, "--to", str(work / "repo"), "--name", "rhel")
        target = loop(1200 * MiB)
        out = recovery("restore", f"{work / 'repo'}::rhel", target, "--yes")
        assert "logical volume rhel/root extended" in out, out
    finally:
        for dev in reversed(attached):
            loopdev.detach(dev)
    yield work / "disk1.img"


def test_restored_volume_group_activates_in_the_live_system(
    iso: Path, restored_lvm_disk: Path, tmp_path: Path, timings: dict[str, dict[str, float]]
) -> None:
    mode = next(m for m in MODES if m.name == "bios-cd")
    vm = Machine(mode=mode, iso=iso, workdir=tmp_path, disks=[Disk(restored_lvm_disk, "reclvm")])
    vm.start()
    try:
        serial = vm.serial
        assert serial is not None
        serial.wait_for_shell(BOOT_TIMEOUT)
        timings.setdefault("lvm-bios-cd", {})["serial_shell_s"] = round(vm.elapsed(), 1)
        rc, out = serial.run("lvs --noheadings 2>&1; ls /dev/mapper")
        assert "rhel-root" not in out, "the live system activated a volume group by itself"
        rc, out = serial.run("vgchange -ay rhel 2>&1", timeout=300)
        assert rc == 0 and "3 logical volume(s)" in out, out
        rc, out = serial.run("lvs --noheadings --units b -o lv_name,lv_size rhel")
        sizes = {n: int(s.rstrip("B")) for n, s in (line.split() for line in out.splitlines())}
        assert sizes["root"] > 320 * MiB + 350 * MiB and sizes["home"] == 120 * MiB, out
        rc, out = serial.run("xfs_repair -n /dev/rhel/root 2>&1", timeout=600)
        assert rc == 0, out
        rc, out = serial.run("e2fsck -fn /dev/rhel/home 2>&1", timeout=600)
        assert rc == 0, out
        rc, out = serial.run(
            "mkdir -p /mnt/r && mount -o ro /dev/rhel/root /mnt/r && cat /mnt/r/etc/os-release "
            "&& df -B1 --output=size /mnt/r | tail -1; umount /mnt/r"
        )
        assert rc == 0 and 'NAME="Test Linux"' in out, out
        assert int(out.split()[-1]) > 600 * MiB, out  # xfs spans the grown volume
        rc, out = serial.run("recovery disks --json")
        assert rc == 0, out
        disks = json.loads(out[out.index("{") :])["disks"]
        pv = next(
            p
            for d in disks
            for p in d["partitions"]
            if p.get("volume_group", {}).get("name") == "rhel"
        )
        assert all(v["active"] for v in pv["volume_group"]["volumes"]), pv
        rc, out = serial.run("vgchange -an rhel 2>&1", timeout=300)
        assert rc == 0, out
        assert vm.power_off() == 0
    finally:
        vm.kill()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for name in ("serial.log", "qemu.log"):
            if (tmp_path / name).exists():
                shutil.copyfile(tmp_path / name, ARTIFACTS / f"lvm-{name}")
