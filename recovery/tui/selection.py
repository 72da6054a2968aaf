"""Which disk is the system disk, and which of its partitions a System Backup selects.

Called by the TUI's disk and partition pickers to preselect; the person can change the choice.
Decided from partition types and file system types only (sources are not mounted to look inside),
so the rule is a guess the picker shows, never a silent decision. Pure functions over
:class:`recovery.devices.model.Disk`.

The system partitions (as in issue 4, "system clone"): EFI system partition, BIOS boot
partition, Microsoft reserved partition, the Windows partition and its recovery partition,
Linux root and a separate ``/boot``. Data partitions, swap and Linux ``/home`` stay behind.
Without looking inside, "the Windows partition" is the first NTFS basic-data partition and
"Linux root" the first Linux file system partition that is not labelled as data or home.
"""

from __future__ import annotations

from dataclasses import dataclass

from recovery.devices.model import Disk, Partition

ESP = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
BIOS_BOOT = "21686148-6449-6e6f-744e-656564454649"
MSR = "e3c9e316-0b5c-4db8-817d-f92df00215ae"
BASIC_DATA = "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7"
WINDOWS_RECOVERY = "de94bba4-06d1-4d40-a16a-bfd50179d6ac"
LINUX_DATA = "0fc63daf-8483-4772-8e79-3d69d8477de4"
LINUX_ROOT_X86_64 = "4f68bce3-e8cd-4dd1-96e7-fbcaf984b709"
LINUX_ROOT_X86 = "44479540-f297-41b2-9af7-d131d5f0458a"
LINUX_ROOT_ARM64 = "b921b045-1df0-41c3-af44-4c6f280d3fae"
LINUX_XBOOTLDR = "bc13c2ff-59e6-4262-a352-b275fd6f7172"
LINUX_HOME = "933ac7e1-2eb4-4f13-b844-0e14e2aef915"
LINUX_SWAP = "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f"

LINUX_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs"})
DATA_LABELS = frozenset({"home", "data", "storage", "backup", "backups", "media"})


@dataclass(frozen=True)
class PartitionRole:
    """What a partition is for, as shown next to it in the partition picker."""

    name: str
    """``EFI system``, ``BIOS boot``, ``Microsoft reserved``, ``Windows``, ``Windows recovery``,
    ``Windows boot`` (MBR "System Reserved"), ``Linux root``, ``Linux /boot``, ``swap`` or
    ``data``."""
    system: bool


def _ptype(p: Partition) -> str:
    """The GPT type GUID in lower case, or the MBR type as ``0x7`` (no leading zeros)."""
    t = (p.parttype or "").strip().lower()
    if t.startswith("0x"):
        try:
            return f"0x{int(t, 16):x}"
        except ValueError:
            return t
    return t


def _label(p: Partition) -> str:
    return (p.label or p.partlabel or "").strip().lower()


def partition_roles(disk: Disk) -> dict[int, PartitionRole]:
    """The role of every partition of ``disk``, keyed by partition number."""
    roles: dict[int, PartitionRole] = {}
    windows_seen = False
    linux_root_seen = False
    for p in sorted(disk.partitions, key=lambda q: q.start):
        t, fs, label = _ptype(p), (p.fstype or "").lower(), _label(p)
        if t in (ESP, "0xef"):
            role = PartitionRole("EFI system", True)
        elif t in (BIOS_BOOT,):
            role = PartitionRole("BIOS boot", True)
        elif t == MSR:
            role = PartitionRole("Microsoft reserved", True)
        elif t in (WINDOWS_RECOVERY, "0x27") or (t == BASIC_DATA and label == "recovery"):
            role = PartitionRole("Windows recovery", True)
        elif t in (BASIC_DATA, "0x7") and fs == "ntfs" and label == "system reserved":
            role = PartitionRole("Windows boot", True)
        elif t in (BASIC_DATA, "0x7") and fs == "ntfs":
            role = PartitionRole("data", False) if windows_seen else PartitionRole("Windows", True)
            windows_seen = True
        elif fs == "swap" or t in (LINUX_SWAP, "0x82"):
            role = PartitionRole("swap", False)
        elif t == LINUX_XBOOTLDR or (fs in LINUX_FILESYSTEMS and label == "boot"):
            role = PartitionRole("Linux /boot", True)
        elif t in (LINUX_ROOT_X86_64, LINUX_ROOT_X86, LINUX_ROOT_ARM64) or (
            t in (LINUX_DATA, "0x83")
            and fs in LINUX_FILESYSTEMS
            and not linux_root_seen
            and label not in DATA_LABELS
        ):
            role = PartitionRole("Linux root", True)
            linux_root_seen = True
        else:
            role = PartitionRole("data", False)
        roles[p.number] = role
    return roles


def system_partitions(disk: Disk) -> list[Partition]:
    """The partitions of ``disk`` a System Backup preselects, in disk order."""
    roles = partition_roles(disk)
    return [p for p in sorted(disk.partitions, key=lambda q: q.start) if roles[p.number].system]


def _is_os(role: PartitionRole) -> bool:
    return role.name in ("Windows", "Linux root")


def system_disk(disks: list[Disk]) -> Disk | None:
    """The disk that most likely holds the installed operating system, or None.

    Only disks with an operating system partition (Windows or Linux root) qualify; the live
    system's boot medium never does. Internal disks win over USB and removable ones, then
    disks with an EFI system partition, then the lower device name (the first disk).
    """
    candidates = []
    for disk in disks:
        if disk.boot_medium:
            continue
        roles = partition_roles(disk).values()
        if not any(_is_os(r) for r in roles):
            continue
        external = disk.removable or disk.transport == "usb"
        has_esp = any(r.name == "EFI system" for r in roles)
        candidates.append(((external, not has_esp, disk.path), disk))
    if not candidates:
        return None
    return min(candidates, key=lambda c: c[0])[1]
