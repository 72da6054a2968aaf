"""Plain data describing the machine's disks, as every layer above the device layer sees them.

Produced by :mod:`recovery.devices.disks` (from udev, or from sysfs and blkid when udev is not
running). Sizes and offsets are integers in bytes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

EXTENDED_MBR_TYPES = frozenset({"0x5", "0xf", "0x85"})
"""MBR partition types of extended partitions (CHS, LBA, Linux), as udev writes them."""


@dataclass(frozen=True)
class Partition:
    path: str
    number: int
    start: int
    """Offset from the start of the disk, in bytes."""
    size: int
    fstype: str | None = None
    label: str | None = None
    uuid: str | None = None
    partlabel: str | None = None
    """GPT partition name."""
    parttype: str | None = None
    """GPT type GUID (lower case) or MBR type as ``0x83``."""
    partuuid: str | None = None
    mountpoint: str | None = None
    """Where it is mounted, ``[SWAP]`` for swap in use, None when unused."""

    @property
    def extended(self) -> bool:
        """An MBR extended partition: a container for logical partitions, no file system."""
        return self.parttype in EXTENDED_MBR_TYPES

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Disk:
    path: str
    size: int
    model: str | None = None
    serial: str | None = None
    transport: str | None = None
    """usb, nvme, sata, ata, scsi, virtio, mmc, loop, ... or None when unknown."""
    removable: bool = False
    """Removable media or a hot-pluggable disk: a USB disk or stick, an SD card."""
    rotational: bool = False
    table: str | None = None
    """``gpt``, ``dos`` or None."""
    ptuuid: str | None = None
    """GPT disk GUID or MBR disk signature (``1234abcd``)."""
    logical_sector_size: int = 512
    partitions: tuple[Partition, ...] = field(default_factory=tuple)
    boot_medium: bool = False
    """The running live system was booted from this disk."""
    backing_file: str | None = None
    """For loop devices: the file behind it."""
    read_only: bool = False
    """The kernel refuses writes (write-protect switch, CD, ``ro`` loop)."""
    fstype: str | None = None
    """A file system (or ISO 9660 image) on the whole disk, without or beside a table."""
    label: str | None = None
    uuid: str | None = None
    mountpoint: str | None = None
    """Where the whole disk itself is mounted (or ``[SWAP]``), for file systems without a table."""

    @property
    def mounted(self) -> bool:
        """The disk or one of its partitions is mounted or used as swap."""
        return self.mountpoint is not None or any(p.mountpoint for p in self.partitions)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["partitions"] = [p.to_json() for p in self.partitions]
        d["mounted"] = self.mounted
        return d
