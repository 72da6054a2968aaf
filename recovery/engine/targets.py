"""The disk a restore or clone will overwrite: the checks made before anything is written, and
the lines that show the person which disk it is.

Called by :mod:`recovery.engine.restore` and :mod:`recovery.engine.clone` while planning.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from recovery.core.units import human_size
from recovery.devices import blockio
from recovery.devices.partitions import read_table
from recovery.errors import RecoveryError, Refused, UsageError


@dataclass(frozen=True)
class Target:
    path: str
    size: int
    sector_size: int
    identity: dict[str, Any]
    partitions: list[str] = field(default_factory=list)
    """One line per partition now on the disk (what will be overwritten)."""

    def describe(self) -> list[str]:
        t = self.identity
        lines = [
            f"onto {self.path}: {t.get('model') or 'unknown model'}, serial "
            f"{t.get('serial') or 'unknown'}, {human_size(self.size)}"
        ]
        if self.partitions:
            lines.append("  now on it (will be overwritten):")
            lines.extend(f"    {p}" for p in self.partitions)
        else:
            lines.append("  now on it: no partitions")
        return lines


def check_target(path: str) -> Target:
    """Refuse what must never be overwritten (a partition, a disk with anything mounted);
    otherwise describe the disk."""
    blockio.require_block_device(path)
    disk = blockio.whole_disk_of(path)
    if os.path.realpath(disk) != os.path.realpath(path):
        raise UsageError(f"{path} is a partition: give the whole disk, such as {disk}")
    mounts = blockio.mounts_on(path)
    if mounts:
        raise Refused(
            f"{path} has mounted file systems ({', '.join(mounts)}): unmount them "
            "first; nothing was written"
        )
    fd = blockio.open_read(path)
    try:
        size = blockio.device_size(fd)
        sector = blockio.logical_sector_size(fd)
    finally:
        os.close(fd)
    from recovery.engine.sources import disk_identity

    return Target(path, size, sector, disk_identity(path), _partition_lines(path))


def _partition_lines(path: str) -> list[str]:
    try:
        from recovery.devices.disks import find_disk

        d = find_disk(path)
        return [
            f"{p.path}: {human_size(p.size)} {p.fstype or ''} {p.label or ''}".rstrip()
            for p in d.partitions
        ]
    except (ImportError, RecoveryError):
        table = read_table(path)
        if table is None:
            return []
        return [
            f"partition {e.number}: {human_size(e.size * table.sector_size)}"
            for e in table.data_entries
        ]
