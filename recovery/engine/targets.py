"""The disk a restore or clone will overwrite: the checks made before anything is written, and
the lines that show the person which disk it is.

Called by :mod:`recovery.engine.restore` and :mod:`recovery.engine.clone`: :func:`check_target`
while planning, :func:`check_still_same` again just before the first write, so a plan confirmed
for one disk is never run on another that took its path (unplugged, another one plugged in).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recovery.core.units import human_size
from recovery.devices import blockio
from recovery.devices.partitions import read_table
from recovery.engine.sources import disk_identity
from recovery.errors import RecoveryError, Refused, UsageError

if TYPE_CHECKING:
    from recovery.devices.model import Disk


@dataclass(frozen=True)
class Target:
    path: str
    size: int
    sector_size: int
    identity: dict[str, Any]
    """``model``, ``serial`` (None when unknown) and more: see ``sources.disk_identity``."""
    partitions: tuple[str, ...] = ()
    """One line per partition now on the disk (what will be overwritten)."""
    diskseq: int | None = None
    """The kernel's sequence number for the disk (new each time a disk or medium appears);
    None on kernels before 5.15."""

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
    _refuse_mounted(path)
    fd = blockio.open_read(path)
    try:
        size = blockio.device_size(fd)
        sector = blockio.logical_sector_size(fd)
    finally:
        os.close(fd)
    found = _found(path)
    return Target(
        path,
        size,
        sector,
        disk_identity(path, found),
        tuple(_partition_lines(path, found)),
        _diskseq(path),
    )


def check_still_same(planned: Target, fd: int) -> None:
    """Refuse unless the disk at ``planned.path`` (open as ``fd``) is the one the plan showed:
    same serial, model, size and sector size and, where the kernel numbers disks, not attached
    anew since. Nothing mounted on it either. Called after opening the disk for writing and
    before the first write."""
    path = planned.path
    _refuse_mounted(path)
    now = disk_identity(path)
    was = planned.identity
    differences = [
        (what, str(was.get(key) or "unknown"), str(now.get(key) or "unknown"))
        for what, key in (("serial", "serial"), ("model", "model"))
        if was.get(key) != now.get(key)
    ]
    size, sector = blockio.device_size(fd), blockio.logical_sector_size(fd)
    if size != planned.size:
        was_size, now_size = human_size(planned.size), human_size(size)
        if was_size == now_size:  # a few sectors apart
            was_size, now_size = f"{planned.size} bytes", f"{size} bytes"
        differences.append(("size", was_size, now_size))
    if sector != planned.sector_size:
        differences.append(("sector size", str(planned.sector_size), str(sector)))
    diskseq = _diskseq(path)
    if not differences and diskseq != planned.diskseq:
        differences.append(("disk sequence number", str(planned.diskseq), str(diskseq)))
    if differences:
        what, before, after = differences[0]
        raise Refused(
            f"{path} is no longer the disk the plan showed ({what} {before}, now {after}): "
            "plan again; nothing was written"
        )


def _refuse_mounted(path: str) -> None:
    mounts = blockio.mounts_on(path)
    if mounts:
        raise Refused(
            f"{path} has mounted file systems ({', '.join(mounts)}): unmount them "
            "first; nothing was written"
        )


def _diskseq(path: str) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        name = blockio.sysfs_name(path)
        return int(Path(f"/sys/class/block/{name}/diskseq").read_text())
    return None


def _found(path: str) -> Disk | None:
    """The disk as udev describes it, looked up once for the identity and the partitions (a
    walk of every block device: 5-7 ms here); None where that fails."""
    try:
        from recovery.devices.disks import find_disk

        return find_disk(path)
    except (ImportError, RecoveryError):
        return None


def _partition_lines(path: str, found: Disk | None) -> list[str]:
    if found is not None:
        return [
            f"{p.path}: {human_size(p.size)} {p.fstype or ''} {p.label or ''}".rstrip()
            for p in found.partitions
        ]
    table = read_table(path)
    if table is None:
        return []
    return [
        f"partition {e.number}: {human_size(e.size * table.sector_size)}"
        for e in table.data_entries
    ]
