"""Disks from recorded udev property sets, without udev or root.

The fixtures in ``fixtures/udev`` are ``udevadm info --query=property --export`` output, one
block per device (the disk first, then its partitions), with the sysfs attributes the conversion
reads beside them in ``NAME.sysattrs.json``. The loop-device sets were recorded on this project's
machines; the SATA, NVMe, USB stick and SD card sets are written after what udev 252 (Debian 12)
gives for such devices.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from recovery.commands.disks import render
from recovery.devices import udev
from recovery.devices.disks import MountTable, mount_table
from recovery.devices.model import Disk

FIXTURES = Path(__file__).parent / "fixtures" / "udev"
MiB = 1024 * 1024


def load(name: str) -> tuple[list[dict[str, str]], dict[str, dict[str, str]]]:
    blocks = (FIXTURES / f"{name}.txt").read_text().strip().split("\n\n")
    props = [udev.parse_properties(b) for b in blocks]
    sysattrs = json.loads((FIXTURES / f"{name}.sysattrs.json").read_text())
    return props, sysattrs


def disk(name: str, mounts: MountTable | None = None) -> Disk:
    props, sysattrs = load(name)
    mounts = mounts or MountTable()
    assert udev.skip_reason(props[0], sysattrs[udev.sysname_of(props[0])]) is None
    return udev.disk_from_properties(
        props[0], props[1:], sysattrs, mounts.mountpoints, mounts.live_medium
    )


def test_sata_disk() -> None:
    d = disk("sata")
    assert d.path == "/dev/sda"
    assert d.size == 976773168 * 512
    assert d.model == "Samsung SSD 860 EVO 500GB"
    assert d.serial == "S4XBNF0M812345X"
    assert d.transport == "sata"
    assert (d.removable, d.rotational, d.read_only) == (False, False, False)
    assert d.table == "gpt"
    assert d.ptuuid == "9b3e4c6a-2f1d-4e8b-a7c5-31d0f2e6b8a4"
    assert [p.number for p in d.partitions] == [1, 2, 3, 4]
    esp, msr, windows, recovery = d.partitions
    assert (esp.path, esp.start, esp.size) == ("/dev/sda1", 1 * MiB, 100 * MiB)
    assert esp.fstype == "vfat" and esp.uuid == "A4B2-19C3" and esp.label is None
    assert esp.partlabel == "EFI system partition"
    assert esp.parttype == "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
    assert esp.partuuid == "4e7a1c2b-8d3f-4a6e-9b0c-5d2e7f1a3c8b"
    assert msr.fstype is None and msr.partlabel == "Microsoft reserved partition"
    assert windows.fstype == "ntfs" and windows.label == "Windows"
    assert windows.start == 239616 * 512 and windows.size == 975476736 * 512
    assert recovery.parttype == "de94bba4-06d1-4d40-a16a-bfd50179d6ac"
    assert not d.mounted and not d.boot_medium


def test_nvme_disk_with_mounts_and_swap() -> None:
    mounts = MountTable(mountpoints={"259:1": "/boot/efi", "259:2": "/", "259:3": "[SWAP]"})
    d = disk("nvme", mounts)
    assert d.path == "/dev/nvme0n1"
    assert d.transport == "nvme"
    assert d.model == "Samsung SSD 970 EVO Plus 1TB"
    assert d.serial == "S4EWNX0R123456K"
    assert d.size == 1953525168 * 512
    assert [(p.path, p.fstype, p.mountpoint) for p in d.partitions] == [
        ("/dev/nvme0n1p1", "vfat", "/boot/efi"),
        ("/dev/nvme0n1p2", "ext4", "/"),
        ("/dev/nvme0n1p3", "swap", "[SWAP]"),
    ]
    assert d.mounted
    assert d.mountpoint is None


def test_usb_stick() -> None:
    d = disk("usb-stick")
    assert d.transport == "usb"
    assert d.model == "SanDisk Ultra"
    assert d.serial == "4C530001230101117463"
    assert d.removable
    assert d.table == "dos" and d.ptuuid == "4e1a7b2c"
    (p,) = d.partitions
    assert p.label == "MY STICK"  # from ID_FS_LABEL_ENC; ID_FS_LABEL has "MY_STICK"
    assert (p.parttype, p.partuuid, p.partlabel) == ("0xc", "4e1a7b2c-01", None)
    assert p.start == 1 * MiB and p.size == 60061696 * 512


def test_sd_card() -> None:
    d = disk("sd-card")
    assert d.path == "/dev/mmcblk0"
    assert d.transport == "mmc"
    assert d.model == "SC32G"
    assert d.serial == "0x8a3b2c1d"
    assert d.removable  # sysfs says 0 for SD cards; an SD card is removable all the same
    assert [(p.number, p.fstype, p.label) for p in d.partitions] == [
        (1, "vfat", "bootfs"),
        (2, "ext4", "rootfs"),
    ]


def test_loop_disk_gpt() -> None:
    d = disk("loop-gpt")
    assert d.transport == "loop"
    assert d.backing_file == "/tmp/dd/t.img"
    assert d.model is None and d.serial is None and not d.removable
    assert d.size == 300 * MiB
    assert [(p.fstype, p.label) for p in d.partitions] == [
        ("vfat", "ESP"),
        ("ext4", "root"),
        ("swap", "sw"),
        ("ntfs", "win"),
    ]
    assert [p.start for p in d.partitions] == [1 * MiB, 65 * MiB, 129 * MiB, 161 * MiB]


def test_extended_partition_has_the_table_size_not_the_kernel_stub() -> None:
    d = disk("loop-mbr")
    by_number = {p.number: p for p in d.partitions}
    assert sorted(by_number) == [1, 2, 3, 5]
    ext = by_number[2]
    assert ext.extended and ext.fstype is None
    assert ext.start == 104448 * 512
    assert ext.size == 100 * MiB  # sysfs says 2 sectors: the kernel's stub for the EBR
    logical = by_number[5]
    assert not logical.extended
    assert (logical.start, logical.size, logical.fstype) == (106496 * 512, 40 * MiB, "ext4")
    assert ext.start < logical.start < ext.start + ext.size


def test_sysfs_wins_over_a_stale_udev_database() -> None:
    props, sysattrs = load("loop-gpt")
    sysattrs["loop0p1"] = {"partition": "1", "start": "4096", "size": "8192"}
    d = udev.disk_from_properties(props[0], props[1:], sysattrs)
    assert (d.partitions[0].start, d.partitions[0].size) == (4096 * 512, 8192 * 512)


def test_without_sysfs_attributes_udev_table_entries_are_used() -> None:
    props, _ = load("sata")
    d = udev.disk_from_properties(props[0], props[1:], {})
    assert [p.start for p in d.partitions] == [
        2048 * 512,
        206848 * 512,
        239616 * 512,
        975716352 * 512,
    ]
    assert d.size == 0  # unknown without sysfs, never guessed


def test_boot_medium_from_a_partition_or_the_whole_disk() -> None:
    stick = disk(
        "usb-stick",
        MountTable(mountpoints={"8:17": "/run/live/medium"}, live_medium=frozenset({"8:17"})),
    )
    assert stick.boot_medium and stick.mounted
    props, sysattrs = load("usb-stick")
    whole = udev.disk_from_properties(props[0], [], sysattrs, {}, {"8:16"})
    assert whole.boot_medium
    assert not disk("sata", MountTable(live_medium=frozenset({"8:17"}))).boot_medium


def test_unbacked_loop_and_other_non_disks_are_skipped() -> None:
    props, sysattrs = load("loop-unbacked")
    assert "no file attached" in (udev.skip_reason(props[0], sysattrs["loop7"]) or "")
    base = {"DEVTYPE": "disk", "MAJOR": "1", "MINOR": "0"}
    sized = {"size": "2048"}
    cases = {
        "zram0": "zram",
        "ram0": "RAM disk",
        "mmcblk0boot0": "eMMC",
        "dm-0": "device-mapper",
        "md127": "RAID",
    }
    for name, words in cases.items():
        reason = udev.skip_reason({**base, "DEVNAME": f"/dev/{name}"}, sized)
        assert reason is not None and words in reason, name
    empty_drive = {**base, "DEVNAME": "/dev/sr0", "ID_CDROM": "1"}
    assert "no medium" in (udev.skip_reason(empty_drive, {"size": "0"}) or "")
    assert udev.skip_reason({**empty_drive}, {"size": "1400000"}) is None
    part_props, part_attrs = load("sata")
    assert "partition" in (udev.skip_reason(part_props[1], part_attrs["sda1"]) or "")


def test_transports() -> None:
    def tran(**props: str) -> str | None:
        return udev.transport_of({"DEVTYPE": "disk", **props})

    assert (
        tran(DEVNAME="/dev/vda", DEVPATH="/devices/pci0000:00/0000:00:02.0/virtio1/block/vda")
        == "virtio"
    )
    # QEMU's IDE disk: ata_id answers, but not SATA.
    assert (
        tran(
            DEVNAME="/dev/sda",
            DEVPATH="/devices/pci0000:00/0000:00:01.1/ata1/host0/target0:0:0/0:0:0:0/block/sda",
            ID_ATA="1",
            ID_BUS="ata",
        )
        == "ata"
    )
    # A SATA disk in a USB enclosure: ata_id may answer through the bridge; USB is what counts.
    assert (
        tran(
            DEVNAME="/dev/sdc",
            DEVPATH="/devices/pci0000:00/0000:00:14.0/usb2/2-2/2-2:1.0/host7/target7:0:0/7:0:0:0/block/sdc",
            ID_BUS="ata",
            ID_ATA="1",
            ID_ATA_SATA="1",
        )
        == "usb"
    )
    # Without udev (sysfs only) a libata disk is reported as SATA, as lsblk does.
    assert (
        tran(
            DEVNAME="/dev/sda",
            DEVPATH="/devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda",
        )
        == "sata"
    )
    assert (
        tran(
            DEVNAME="/dev/sdd",
            DEVPATH="/devices/pci0000:00/0000:00:10.0/host2/target2:0:0/2:0:0:0/block/sdd",
            ID_BUS="scsi",
        )
        == "scsi"
    )


def test_sysfs_only_disk_gets_model_and_serial_from_sysfs() -> None:
    """What the sysfs+blkid path feeds the conversion: kernel properties and sysfs only."""
    props = {
        "DEVNAME": "/dev/sda",
        "DEVTYPE": "disk",
        "MAJOR": "8",
        "MINOR": "0",
        "DEVPATH": "/devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda",
    }
    _, sysattrs = load("sata")
    d = udev.disk_from_properties(props, [], sysattrs)
    assert d.model == "Samsung SSD 860"  # the kernel keeps 16 characters of the ATA model
    assert d.serial == "S4XBNF0M812345X"
    assert d.transport == "sata"


def test_decode_udev_string() -> None:
    assert udev.decode_udev_string(r"my\x20root\x20é\x24x") == "my root é$x"
    assert udev.decode_udev_string(r"caf\xc3\xa9") == "café"
    assert udev.decode_udev_string(r"back\x5cslash") == "back\\slash"


def test_parse_properties_quoted_and_bare() -> None:
    text = "A='x y'\nB=plain\nC=''\nnot a property\n"
    assert udev.parse_properties(text) == {"A": "x y", "B": "plain", "C": ""}


MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 8:2 / / rw,relatime - ext4 /dev/sda2 rw
30 27 8:1 / /boot/efi rw,relatime - vfat /dev/sda1 rw
31 27 8:1 / /mnt/bind\\040copy rw,relatime - vfat /dev/sda1 rw
40 27 0:45 /@home /home rw,relatime shared:5 - btrfs /dev/nvme0n1p2 rw
41 27 8:17 / /run/live/medium ro,noatime - iso9660 /dev/sdb1 ro
42 27 8:33 / /media/my\\040disk rw - ext4 /dev/sdc1 rw
"""
SWAPS = """\
Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority
/dev/sda3                               partition\t8388604\t\t0\t\t-2
/swapfile                               file\t\t1048572\t\t0\t\t-3
"""


def test_mount_table() -> None:
    devices = {"/dev/sda3": os.makedev(8, 3), "/dev/nvme0n1p2": os.makedev(259, 2)}

    def fake_stat(path: str) -> os.stat_result:
        if path not in devices:
            raise FileNotFoundError(path)
        return _FakeStat(devices[path])  # type: ignore[return-value]

    table = mount_table(MOUNTINFO, SWAPS, stat_fn=fake_stat)
    assert table.mountpoints == {
        "8:2": "/",
        "8:1": "/boot/efi",  # the first mount of it, not the bind mount after
        "259:2": "/home",  # btrfs reports an anonymous device; found through its source
        "8:17": "/run/live/medium",
        "8:33": "/media/my disk",
        "8:3": "[SWAP]",
    }
    assert table.live_medium == frozenset({"8:17"})


class _FakeStat:
    """Stands in for os.stat_result: a block device with a device number."""

    def __init__(self, rdev: int) -> None:
        self.st_mode = stat.S_IFBLK | 0o660
        self.st_rdev = rdev


def test_human_table() -> None:
    mounts = MountTable(mountpoints={"259:2": "/", "259:3": "[SWAP]"})
    stick = disk("usb-stick", MountTable(live_medium=frozenset({"8:17"})))
    out = render([disk("nvme", mounts), stick, disk("loop-mbr")])
    lines = out.splitlines()
    assert lines[0].split() == ["DEVICE", "SIZE", "MODEL", "TRAN", "TABLE", "FLAGS"]
    nvme_line = next(line for line in lines if line.startswith("/dev/nvme0n1 "))
    assert "931.5 GiB" in nvme_line and "Samsung SSD 970 EVO Plus 1TB" in nvme_line
    assert "mounted" in nvme_line and "gpt" in nvme_line
    stick_line = next(line for line in lines if line.startswith("/dev/sdb "))
    assert "boot medium" in stick_line and "removable" in stick_line
    root = next(line for line in lines if "/dev/nvme0n1p2" in line)
    assert root.startswith("  ") and "ext4" in root and root.rstrip().endswith("/")
    assert "extended" in next(line for line in lines if "/dev/loop1p2" in line)
    assert "file /tmp/dd/m.img" in out


def test_only_the_udev_module_imports_pyudev() -> None:
    """pyudev stays behind recovery/devices/udev.py; everything else sees plain dataclasses."""
    package = Path(__file__).resolve().parents[2] / "recovery"
    importers = sorted(
        str(path.relative_to(package.parent))
        for path in package.rglob("*.py")
        if any(
            line.strip().startswith(("import pyudev", "from pyudev"))
            for line in path.read_text().splitlines()
        )
    )
    assert importers == ["recovery/devices/udev.py"]


def test_live_system_squashfs_loop_is_skipped() -> None:
    props = {"DEVTYPE": "disk", "DEVNAME": "/dev/loop0", "MAJOR": "7", "MINOR": "0"}
    live = {"size": "300000", "loop/backing_file": "/run/live/medium/live/filesystem.squashfs"}
    assert "live system" in (udev.skip_reason(props, live) or "")
    other = {"size": "300000", "loop/backing_file": "/srv/images/disk.img"}
    assert udev.skip_reason(props, other) is None
