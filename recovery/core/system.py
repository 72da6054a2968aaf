"""Which partitions are "the system": what an operating system needs to boot.

Used by ``backup --system``, ``clone --system`` and the TUI's System Backup preselection. Pure:
the device layer supplies what it found inside each partition (``has_windows``: a ``Windows``
folder at the root; ``has_os_release``: ``/etc/os-release``; ``has_boot_files``: a kernel or
``grub`` folder at the root of a separate /boot).
"""

from __future__ import annotations

from dataclasses import dataclass

ESP = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
BIOS_BOOT = "21686148-6449-6e6f-744e-656564454649"
MSR = "e3c9e316-0b5c-4db8-817d-f92df00215ae"
WINDOWS_RECOVERY = "de94bba4-06d1-4d40-a16a-bfd50179d6ac"
XBOOTLDR = "bc13c2ff-59e6-4262-a352-b275fd6f7172"

ALWAYS_SYSTEM_TYPES = {ESP, BIOS_BOOT, MSR, WINDOWS_RECOVERY, XBOOTLDR, "0xef", "ef", "0x27", "27"}


@dataclass(frozen=True)
class PartitionFacts:
    number: int
    parttype: str | None
    fstype: str | None
    has_windows: bool = False
    has_os_release: bool = False
    has_boot_files: bool = False
    bootable: bool = False
    """MBR active flag: BIOS boots from it (Windows' "System Reserved", a Linux /boot)."""
    encrypted: bool = False
    """An encrypted volume (BitLocker, LUKS: its file system's home says so). It cannot show
    what it holds; on a system disk it is the system (BitLocker C:, a LUKS root), so it is kept
    rather than left behind."""


def is_system(p: PartitionFacts) -> bool:
    t = (p.parttype or "").lower()
    if t in ALWAYS_SYSTEM_TYPES:
        return True
    if p.encrypted or p.bootable:
        return True
    return p.has_windows or p.has_os_release or p.has_boot_files


def system_numbers(facts: list[PartitionFacts]) -> list[int]:
    return [p.number for p in facts if is_system(p)]
