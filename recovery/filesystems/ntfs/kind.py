"""NTFS for the rest of the engine: grow, check, fix a moved boot sector, mount, look inside.

Called through the registry of :mod:`recovery.filesystems.base` (:func:`kind_of`) by the engine's
finishing step, system-partition detection and the location picker. Uses ntfs-3g's programs:
``ntfsresize`` to grow, ``ntfs-3g.probe`` to ask whether Windows is hibernated on the volume,
``ntfsfix --no-action`` to check, ``ntfsls`` to list the root, and ``ntfs-3g`` (FUSE) to mount.
"""

from __future__ import annotations

import os
import re
import struct

from recovery.core.units import human_size
from recovery.devices import blockio, tools
from recovery.devices.tools import Need
from recovery.errors import RecoveryError, Refused
from recovery.filesystems.base import FileSource, Kind, Step, register_kind, result_line
from recovery.filesystems.bootsector import NTFS_OEM, SECTOR_SIZES, fix_hidden_sectors
from recovery.filesystems.ntfs.layout import parse_boot_sector
from recovery.filesystems.ntfs.volume import Volume
from recovery.filesystems.ntfs.windows import find_system_files, hibernation_note

# ntfs-3g.probe's exit status for a volume that holds a hibernated Windows session.
PROBE_HIBERNATED = 14


class NtfsKind(Kind):
    mount_type = "ntfs-3g"

    @property
    def can_grow(self) -> bool:
        return True

    def grow_needs(self) -> list[Need]:
        why = "to grow NTFS on the target"
        return [Need("ntfs-3g.probe", why), Need("ntfsresize", why)]

    def grow(self, node: str, step: Step) -> list[str]:
        """Grow the NTFS on ``node`` to its partition, unless Windows is hibernated on it.

        A hibernated Windows (or one shut down with Fast Startup) keeps the volume's metadata in
        its saved session; resized underneath it, the volume is damaged when Windows resumes. So
        such a volume keeps its size, and the line says how to extend it safely.
        ntfs-3g.probe --readwrite answers the question the way ntfs-3g itself does (hiberfil.sys's
        signature); it does not write to a hibernated volume.
        """
        code, out = tools.run(["ntfs-3g.probe", "--readwrite", node])
        if code == PROBE_HIBERNATED:
            lines = [
                f"{node}: ntfs not grown, because Windows on it is hibernated or was shut down "
                "with Fast Startup, and resizing it now would damage it when Windows resumes; "
                "start Windows, shut it down fully, then extend the volume in Disk Management"
            ]
            return lines + _boot_copy_at_partition_end(node)
        step(f"growing ntfs on {node}")
        code, out = tools.run(["ntfsresize", "--force", "--no-progress-bar", node], input="y\n")
        if code != 0:
            return [result_line(node, "ntfsresize", code, out)]
        # ntfsresize marks the volume for a check (chkdsk) at Windows' next start, on purpose.
        return [
            f"{node}: ntfs grown to fill its partition; Windows checks it once at its next start"
        ]

    @property
    def can_shrink(self) -> bool:
        return True

    def shrink_needs(self) -> list[Need]:
        return [Need("ntfsresize", "to shrink NTFS onto a smaller target")]

    def minimum_size(self, path: str) -> int:
        """ntfsresize's figure; a hibernated Windows is refused here, before anything is written
        (ntfsresize itself refuses it only when it is about to write)."""
        if _hibernated(path):
            raise Refused(
                "Windows on this NTFS volume is hibernated or was shut down with Fast Startup, "
                "and shrinking it would damage it when Windows resumes; start Windows, shut it "
                "down fully and image it again, or choose a disk large enough for it as it is"
            )
        # --info only reads; --force lets it answer for a volume marked for a check.
        code, out = tools.run(
            ["ntfsresize", "--info", "--force", "--no-progress-bar", path], timeout=600
        )
        found = re.search(r"You might resize at (\d+) bytes", out)
        if found is not None:
            return int(found.group(1))
        last = out.splitlines()[-1] if out else f"exit code {code}"
        raise Refused(f"ntfsresize cannot tell how small NTFS can get: {last}")

    def shrink(self, path: str, new_size: int, step: Step) -> list[str]:
        step(f"shrinking ntfs to {human_size(new_size)}")
        code, out = tools.run(
            ["ntfsresize", "--force", "--no-progress-bar", "--size", str(new_size), path],
            input="y\n",
            timeout=None,
        )
        return [result_line(path, f"ntfs shrunk to {human_size(new_size)}", code, out)]

    def check_needs(self) -> list[Need]:
        return [Need("ntfsfix", "to check NTFS on the target")]

    def check(self, node: str, step: Step) -> list[str]:
        code, out = tools.run(["ntfsfix", "--no-action", node])
        return [result_line(node, "ntfsfix clean", code, out)]

    def after_move(self, node: str, new_start: int) -> list[str]:
        return fix_hidden_sectors(node, new_start, ntfs=True)

    def inspect_needs(self) -> list[Need]:
        return [Need("ntfsls", "to look inside NTFS for an operating system")]

    def root_names(self, node: str) -> set[str]:
        return set(tools.output(["ntfsls", "-f", node]).split())


def _hibernated(path: str) -> bool:
    """Whether hiberfil.sys on the NTFS at ``path`` holds a session (our reader, read-only: the
    same signature check the backup warns with)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        source = FileSource(fd, 0, os.lseek(fd, 0, os.SEEK_END))
        try:
            head = source.pread(0, 512)
            volume = Volume(source, parse_boot_sector(head, source.size))
            volume.open_mft()
            files = find_system_files(volume)
        except (RecoveryError, OSError):
            return False  # ntfsresize judges a volume our reader cannot read
        return any(f.name == "hiberfil.sys" and hibernation_note(f.header) for f in files)
    finally:
        os.close(fd)


def _boot_copy_at_partition_end(node: str) -> list[str]:
    """Copy the NTFS boot sector into the last sector of a partition larger than its volume.

    NTFS keeps its backup boot sector right after the volume; ntfs-3g's tools (ntfsfix) look
    for it in the partition's last sector. That sector lies outside the volume, so a copy there
    changes nothing NTFS uses, and the volume checks clean until Windows extends it.
    """
    try:
        fd = os.open(node, os.O_RDWR)
    except OSError as e:
        return [f"FAILED {node}: cannot open to copy the boot sector: {e.strerror}"]
    try:
        boot = os.pread(fd, 512, 0)
        if len(boot) < 512 or boot[3:11] != NTFS_OEM:
            return []
        sector = struct.unpack_from("<H", boot, 0x0B)[0]
        total = struct.unpack_from("<Q", boot, 0x28)[0]
        size = blockio.size_of(node)
        if sector not in SECTOR_SIZES or (total + 2) * sector > size:
            return []
        full = os.pread(fd, sector, 0)
        blockio.pwrite_all(fd, full, size // sector * sector - sector)
        os.fsync(fd)
    except OSError as e:
        return [f"FAILED {node}: cannot copy the boot sector to the partition's end: {e.strerror}"]
    finally:
        os.close(fd)
    return []


register_kind(NtfsKind("ntfs"))
