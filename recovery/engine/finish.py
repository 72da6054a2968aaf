"""What follows writing partitions, for restore and clone alike: recreate swap, grow the main
file system into its larger partition (never an NTFS that holds a hibernated Windows), point
moved NTFS and FAT boot sectors at their new start, check every file system, and report each
in one line.

Lines that start with ``FAILED`` are failures; the callers turn them into a non-zero result.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass

from recovery.core.table import partition_node
from recovery.devices import blockio
from recovery.devices.partitions import refresh_udev
from recovery.engine.progress import Progress
from recovery.errors import DeviceError


@dataclass(frozen=True)
class Written:
    """One partition that was written and now needs finishing."""

    number: int
    """0 for a disk without a partition table (the file system is on the whole disk)."""
    fstype: str | None
    method: str
    grows: bool
    uuid: str | None = None
    label: str | None = None
    old_start: int = 0
    """Byte offset of the partition on the source disk."""
    new_start: int = 0
    """Byte offset on the target disk."""


def wait_node(node: str) -> None:
    for _ in range(100):
        if blockio.is_block_device(node):
            return
        time.sleep(0.05)
    raise DeviceError(
        f"{node} did not appear after writing the table: the kernel did not take "
        "the new partitions; reconnect the disk and check it with 'recovery disks'"
    )


def _tool(cmd: list[str], input: str | None = None) -> tuple[int, str]:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, check=False, input=input)
    except FileNotFoundError:
        return 127, f"{cmd[0]} is not installed"
    return r.returncode, (r.stdout + r.stderr).strip()


def _line(node: str, what: str, code: int, out: str) -> str:
    if code == 0:
        return f"{node}: {what}"
    last = out.splitlines()[-1] if out else f"exit code {code}"
    return f"FAILED {node}: {what.split()[0]}: {last}"


def finish(disk: str, written: list[Written], progress: Progress) -> list[str]:
    checks: list[str] = []
    for w in written:
        node = disk if w.number == 0 else partition_node(disk, w.number)
        wait_node(node)
        if w.old_start != w.new_start and w.fstype in ("ntfs", "vfat"):
            checks.extend(fix_hidden_sectors(node, w.fstype, w.new_start))
        if w.method == "swap-header":
            args = ["mkswap", "-f"]
            if w.uuid:
                args += ["-U", w.uuid]
            if w.label:
                args += ["-L", w.label]
            code, out = _tool([*args, node])
            checks.append(_line(node, "swap recreated", code, out))
        elif w.fstype in ("ext2", "ext3", "ext4"):
            if w.grows:
                progress.step(f"growing {w.fstype} on {node}", 0)
                _tool(["e2fsck", "-f", "-p", node])
                code, out = _tool(["resize2fs", node])
                if code != 0:
                    checks.append(_line(node, "resize2fs", code, out))
            progress.step(f"checking {w.fstype} on {node}", 0)
            code, out = _tool(["e2fsck", "-f", "-n", node])
            checks.append(_line(node, "e2fsck clean", code, out))
        elif w.fstype == "vfat":
            code, out = _tool(["fsck.vfat", "-n", node])
            checks.append(_line(node, "fsck.vfat clean", code, out))
        elif w.fstype == "ntfs":
            if w.grows:
                checks.extend(grow_ntfs(node, progress))
            code, out = _tool(["ntfsfix", "--no-action", node])
            checks.append(_line(node, "ntfsfix clean", code, out))
        else:
            checks.append(f"{node}: {w.fstype or 'unknown content'} written, no check available")
    refresh_udev(disk)
    return checks


# ntfs-3g.probe's exit status for a volume that holds a hibernated Windows session.
_PROBE_HIBERNATED = 14


def grow_ntfs(node: str, progress: Progress) -> list[str]:
    """Grow the NTFS on ``node`` to its partition, unless Windows is hibernated on it.

    A hibernated Windows (or one shut down with Fast Startup) keeps the volume's metadata in
    its saved session; resized underneath it, the volume is damaged when Windows resumes. So
    such a volume keeps its size, and the line says how to extend it safely. ntfs-3g.probe
    --readwrite answers the question the way ntfs-3g itself does (hiberfil.sys's signature);
    it does not write to a hibernated volume.
    """
    code, out = _tool(["ntfs-3g.probe", "--readwrite", node])
    if code == _PROBE_HIBERNATED:
        lines = [
            f"{node}: ntfs not grown, because Windows on it is hibernated or was shut down with "
            "Fast Startup, and resizing it now would damage it when Windows resumes; start "
            "Windows, shut it down fully, then extend the volume in Disk Management"
        ]
        return lines + _boot_copy_at_partition_end(node)
    progress.step(f"growing ntfs on {node}", 0)
    code, out = _tool(["ntfsresize", "--force", "--no-progress-bar", node], input="y\n")
    if code != 0:
        return [_line(node, "ntfsresize", code, out)]
    # ntfsresize marks the volume for a check (chkdsk) at Windows' next start, on purpose.
    return [f"{node}: ntfs grown to fill its partition; Windows checks it once at its next start"]


def _boot_copy_at_partition_end(node: str) -> list[str]:
    """Copy the NTFS boot sector into the last sector of a partition larger than its volume.

    NTFS keeps its backup boot sector right after the volume; ntfs-3g's tools (ntfsfix) look
    for it in the partition's last sector. That sector lies outside the volume, so a copy there
    changes nothing NTFS uses, and the volume checks clean until Windows extends it.
    """
    import os
    import struct

    try:
        fd = os.open(node, os.O_RDWR)
    except OSError as e:
        return [f"FAILED {node}: cannot open to copy the boot sector: {e.strerror}"]
    try:
        boot = os.pread(fd, 512, 0)
        if len(boot) < 512 or boot[3:11] != b"NTFS    ":
            return []
        sector = struct.unpack_from("<H", boot, 0x0B)[0]
        total = struct.unpack_from("<Q", boot, 0x28)[0]
        size = blockio.size_of(node)
        if sector not in (512, 1024, 2048, 4096) or (total + 2) * sector > size:
            return []
        full = os.pread(fd, sector, 0)
        blockio.pwrite_all(fd, full, size // sector * sector - sector)
        os.fsync(fd)
    except OSError as e:
        return [f"FAILED {node}: cannot copy the boot sector to the partition's end: {e.strerror}"]
    finally:
        os.close(fd)
    return []


def fix_hidden_sectors(node: str, fstype: str, new_start: int) -> list[str]:
    """Point the boot sector's "hidden sectors" field (offset 0x1C) at the partition's new start.

    Windows' boot code and NTFS itself read it to find the volume; a moved NTFS or FAT partition
    whose field still names the old start does not boot. NTFS keeps a second boot sector after
    the volume's last sector; it is updated too.
    """
    import os
    import struct

    try:
        fd = os.open(node, os.O_RDWR)
    except OSError as e:
        return [f"FAILED {node}: cannot open to update the boot sector: {e.strerror}"]
    try:
        boot = bytearray(os.pread(fd, 512, 0))
        if len(boot) < 512:
            return []
        sector = struct.unpack_from("<H", boot, 0x0B)[0]
        if sector not in (512, 1024, 2048, 4096) or new_start % sector:
            return [f"{node}: boot sector not updated (unusual sector size {sector})"]
        hidden = new_start // sector
        if hidden > 0xFFFFFFFF:
            return [f"{node}: starts beyond what the boot sector can name; not updated"]
        offsets = [0]
        if fstype == "ntfs" and boot[3:11] == b"NTFS    ":
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
