"""The boot sector field NTFS and FAT share that names where the partition starts.

Called by the NTFS and FAT homes after their partition moved (restore or clone onto another
layout). Both keep, at offset 0x1C of the boot sector, the partition's start in sectors
("hidden sectors"); Windows' boot code and NTFS itself read it to find the volume, so a moved
partition whose field still names the old start does not boot.
"""

from __future__ import annotations

import os
import struct

from recovery.devices import blockio

NTFS_OEM = b"NTFS    "
SECTOR_SIZES = (512, 1024, 2048, 4096)


def fix_hidden_sectors(node: str, new_start: int, ntfs: bool) -> list[str]:
    """Point the boot sector's "hidden sectors" field (offset 0x1C) at the partition's new start.

    ``ntfs``: NTFS keeps a second boot sector after the volume's last sector; it is updated too.
    Returns the result lines (see :class:`recovery.filesystems.base.Kind`).
    """
    try:
        fd = os.open(node, os.O_RDWR)
    except OSError as e:
        return [f"FAILED {node}: cannot open to update the boot sector: {e.strerror}"]
    try:
        boot = bytearray(os.pread(fd, 512, 0))
        if len(boot) < 512:
            return []
        sector = struct.unpack_from("<H", boot, 0x0B)[0]
        if sector not in SECTOR_SIZES or new_start % sector:
            return [f"{node}: boot sector not updated (unusual sector size {sector})"]
        hidden = new_start // sector
        if hidden > 0xFFFFFFFF:
            return [f"{node}: starts beyond what the boot sector can name; not updated"]
        offsets = [0]
        if ntfs and boot[3:11] == NTFS_OEM:
            total = struct.unpack_from("<Q", boot, 0x28)[0]
            size = blockio.size_of(node)
            if 0 < total * sector < size:
                offsets.append(total * sector)
        for off in offsets:
            b = bytearray(os.pread(fd, 512, off))
            if len(b) == 512 and b[3:11] == boot[3:11]:
                struct.pack_into("<I", b, 0x1C, hidden)
                blockio.pwrite_all(fd, b, off)
        os.fsync(fd)
    finally:
        os.close(fd)
    return [f"{node}: boot sector updated for the new start (sector {hidden})"]
