"""Plain data describing the machine's disks, as every layer above the device layer sees them.

Produced by :mod:`recovery.devices.disks` (from udev, or from sysfs and blkid when udev is not
running). Sizes and offsets are integers in bytes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


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

    @property
    def mounted(self) -> bool:
        return any(p.mountpoint for p in self.partitions)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["partitions"] = [p.to_json() for p in self.partitions]
        d["mounted"] = self.mounted
        return d
