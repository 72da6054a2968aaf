"""What a backup or clone reads: the source disk, its table, and how each partition is read.

Called by :mod:`recovery.engine.backup` and the clone engine. Turns SOURCE arguments (a whole
disk, or partitions of one disk) into :class:`SourcePlan`: one :class:`StreamPlan` per stream,
each knowing its byte range on the disk and the extents that must be kept (the used blocks
from the file system's own allocation data, every byte for what we cannot read, the header for
swap), so that a plan can be shown before anything is read in bulk.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recovery.core.cells import gaps
from recovery.core.extents import Extent, merge, total
from recovery.core.overlay import Overlay, OverlaySource
from recovery.core.table import Table
from recovery.devices import blockio
from recovery.devices.partitions import read_table
from recovery.devices.tools import Need, require
from recovery.engine.journal import replay
from recovery.errors import DamagedFileSystem, DeviceError, Refused, UsageError
from recovery.filesystems.base import (
    BlockSource,
    FileSource,
    FileSystem,
    kind_of,
    open_filesystem,
)
from recovery.filesystems.encrypted import detect_encrypted

if TYPE_CHECKING:
    from recovery.devices.model import Disk

SOURCE_NEEDS = (
    Need("sfdisk", "to read the partition table of the source"),
    Need("blkid", "to recognise the file systems of the source"),
)
"""What planning a backup or clone runs on the source (both call :func:`plan_sources`)."""

GAP_CAP = 64 << 20
GAP_KEEP = 8 << 20
SWAP_HEADER = 4096


@dataclass
class StreamPlan:
    id: str
    start: int
    size: int
    method: str
    number: int | None = None
    fstype: str | None = None
    label: str | None = None
    uuid: str | None = None
    partuuid: str | None = None
    parttype: str | None = None
    partlabel: str | None = None
    used_bytes: int = 0
    notes: list[str] = field(default_factory=list)
    gap_extents: list[tuple[int, int]] | None = None
    block_size: int | None = None
    keep_system_files: bool = False
    overlay: Overlay | None = None
    """What replaying its journal wrote (engine/journal.py): the stream is read through it."""
    mounted_rw: str | None = None
    """Where it was mounted read-write when planned (imaged anyway with ``force``)."""

    def result_notes(self) -> list[str]:
        """What a clone's result says about how this partition was read."""
        where = f"partition {self.number}" if self.number else "the disk"
        lines = []
        if self.overlay is not None:
            lines.append(f"note: {where}: its {self.fstype} journal was replayed into the copy")
        if self.mounted_rw is not None:
            lines.append(
                f"note: {where} was mounted read-write at {self.mounted_rw} while copied "
                "(--force): it may be inconsistent"
            )
        return lines

    def manifest_fields(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "start": self.start,
            "size": self.size,
            "method": self.method,
        }
        if self.number is not None:
            d["number"] = self.number
        for k in ("fstype", "label", "uuid", "partuuid", "parttype", "partlabel"):
            d[k] = getattr(self, k)
        if self.overlay is not None:
            d["journal_replayed"] = True
        if self.mounted_rw is not None:
            d["mounted_rw"] = self.mounted_rw
        return d


@dataclass
class SourcePlan:
    disk: str
    disk_size: int
    sector_size: int
    identity: dict[str, Any]
    table: Table | None
    whole_disk: bool
    streams: list[StreamPlan]

    @property
    def used_bytes(self) -> int:
        return sum(s.used_bytes for s in self.streams)


def disk_identity(disk: str, found: Disk | None = None) -> dict[str, Any]:
    """Model, serial, transport of ``disk`` (from udev when it runs; sysfs otherwise).
    ``found``: the disk as :func:`~recovery.devices.disks.find_disk` just described it."""
    ident: dict[str, Any] = {"path": disk, "model": None, "serial": None}
    try:
        from recovery.devices.disks import find_disk

        d = found or find_disk(disk)
        ident.update(model=d.model, serial=d.serial, transport=d.transport)
    except (ImportError, DeviceError):
        name = blockio.sysfs_name(disk)
        with contextlib.suppress(OSError):
            ident["model"] = Path(f"/sys/class/block/{name}/device/model").read_text().strip()
    return ident


def probe(node: str | None, fd: int, start: int, size: int) -> dict[str, str]:
    """blkid's view (TYPE, LABEL, UUID) of a partition, by node or by offset on the disk."""
    if node and blockio.is_block_device(node):
        cmd = ["blkid", "-p", "-o", "export", node]
    else:
        cmd = [
            "blkid",
            "-p",
            "-o",
            "export",
            "--offset",
            str(start),
            "--size",
            str(size),
            f"/proc/self/fd/{fd}",
        ]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, check=False, pass_fds=(fd,))
    except FileNotFoundError:
        return {}
    out = {}
    for line in r.stdout.splitlines():
        k, _, v = line.partition("=")
        out[k] = v
    return out


def open_reader(
    fd: int,
    start: int,
    size: int,
    fstype: str | None,
    keep_system_files: bool = False,
    overlay: Overlay | None = None,
) -> FileSystem | None:
    """The file system's reader, on the partition as it is or through a replayed journal."""
    source: BlockSource = FileSource(fd, start, size)
    if overlay is not None:
        source = OverlaySource(source, overlay)
    return open_filesystem(source, fstype, keep_system_files)


def resolve_sources(sources: list[str]) -> tuple[str, list[int] | None]:
    """The disk and the chosen partition numbers (None: the whole disk)."""
    if not sources:
        raise UsageError("name a disk or partitions to back up")
    disks = set()
    numbers: list[int] = []
    whole = False
    for s in sources:
        blockio.require_block_device(s)
        disk = blockio.whole_disk_of(s)
        disks.add(disk)
        if os.path.realpath(s) == os.path.realpath(disk) or blockio.sysfs_name(
            s
        ) == blockio.sysfs_name(disk):
            whole = True
        else:
            name = blockio.sysfs_name(s)
            numbers.append(int(Path(f"/sys/class/block/{name}/partition").read_text()))
    if len(disks) > 1:
        raise UsageError("the sources are on different disks: back up one disk at a time")
    if whole and numbers:
        raise UsageError("give either a whole disk or some of its partitions, not both")
    return disks.pop(), (None if whole else sorted(numbers))


def plan_sources(
    sources: list[str],
    partitions: list[int] | None = None,
    keep_system_files: bool = False,
    force: bool = False,
) -> SourcePlan:
    """``force``: image partitions mounted read-write too (refused otherwise, before anything
    is read), each with a note that its image may be inconsistent."""
    disk, numbers = resolve_sources(sources)
    if partitions is not None:
        numbers = partitions
    writable = blockio.writable_mounts(disk, numbers)
    if writable and not force:
        node, where = next(iter(writable.items()))
        raise Refused(
            f"{node} is mounted read-write at {where}: unmount it, or mount it read-only "
            f"(mount -o remount,ro {where}), and run again; --force images it anyway, but the "
            "image may then be inconsistent; nothing was read"
        )
    # Without blkid every partition would quietly be imaged every byte: refuse instead.
    require(SOURCE_NEEDS)
    fd = blockio.open_read(disk)
    try:
        disk_size = blockio.device_size(fd)
        sector_size = blockio.logical_sector_size(fd)
        table = read_table(disk)
        streams: list[StreamPlan] = []
        occupied: list[tuple[int, int]] = []
        entries = table.data_entries if table else ()
        if numbers is not None:
            known = {e.number for e in entries}
            for n in numbers:
                if n not in known:
                    raise UsageError(f"{disk} has no partition {n}")
        for e in entries:
            start, size = e.start * table.sector_size, e.size * table.sector_size  # type: ignore[union-attr]
            occupied.append((start, size))
            if numbers is not None and e.number not in numbers:
                continue
            from recovery.core.table import partition_node

            node = partition_node(disk, e.number)
            info = probe(node, fd, start, size)
            sp = StreamPlan(
                id=f"p{e.number}",
                start=start,
                size=size,
                method="raw",
                number=e.number,
                fstype=info.get("TYPE"),
                label=info.get("LABEL"),
                uuid=info.get("UUID"),
                partuuid=e.uuid,
                parttype=e.type,
                partlabel=e.name,
                keep_system_files=keep_system_files,
            )
            rw_at = writable.get(node) if node else None
            if rw_at is not None:
                sp.mounted_rw = rw_at
                sp.notes.append(
                    f"partition {e.number} is mounted read-write at {rw_at} and is imaged anyway "
                    "(--force): files being written may be inconsistent in the image"
                )
            _choose_method(sp, fd, disk)
            streams.append(sp)
        layout = StreamPlan(id="disk", start=0, size=disk_size, method="layout")
        layout.gap_extents = list(merge(gaps(disk_size, occupied, GAP_CAP, GAP_KEEP)))
        layout.used_bytes = total(layout.gap_extents)
        if table is None and numbers is None:
            # No table: the disk is one file system (or raw data); image it as a stream.
            info = probe(None, fd, 0, disk_size)
            sp = StreamPlan(
                id="p0",
                start=0,
                size=disk_size,
                method="raw",
                number=0,
                fstype=info.get("TYPE"),
                label=info.get("LABEL"),
                uuid=info.get("UUID"),
            )
            rw_at = writable.get(disk)
            if rw_at is not None:
                sp.mounted_rw = rw_at
                sp.notes.append(
                    f"{disk} is mounted read-write at {rw_at} and is imaged anyway (--force): "
                    "files being written may be inconsistent in the image"
                )
            _choose_method(sp, fd, disk)
            streams.append(sp)
            layout.gap_extents = []
            layout.used_bytes = 0
        return SourcePlan(
            disk=disk,
            disk_size=disk_size,
            sector_size=sector_size,
            identity=disk_identity(disk),
            table=table,
            whole_disk=numbers is None,
            streams=[layout, *streams],
        )
    finally:
        os.close(fd)


def layout_extents(table: Table, disk_size: int) -> list[tuple[int, int]]:
    """The byte ranges of the disk that its layout stream holds: the table, boot code and the
    gaps between partitions (large gaps only at their ends)."""
    occupied = [
        (e.start * table.sector_size, e.size * table.sector_size) for e in table.data_entries
    ]
    return [tuple(e) for e in merge(gaps(disk_size, occupied, GAP_CAP, GAP_KEEP))]  # type: ignore[misc]


def _choose_method(sp: StreamPlan, fd: int, disk: str) -> None:
    kind = kind_of(sp.fstype)
    if kind.header_only:
        sp.method = "swap-header"
        sp.used_bytes = min(SWAP_HEADER, sp.size)
        return
    if kind.encrypted:
        sp.notes.append(
            f"partition {sp.number} is encrypted ({sp.fstype}): imaged sector by sector, because "
            "which blocks are in use cannot be read without the key"
        )
    else:
        try:
            fs = open_reader(fd, sp.start, sp.size, sp.fstype, sp.keep_system_files)
        except DamagedFileSystem as e:
            sp.notes.append(
                f"partition {sp.number} is imaged every byte instead of its used blocks (a larger "
                f"image that still holds everything): {e.message}"
            )
            fs = None
        if fs is not None and fs.journal_needs_recovery:
            fs = _replayed(sp, fd, disk, fs)
        if fs is not None:
            sp.method = "used-blocks"
            sp.block_size = fs.geometry.block_size
            sp.notes.extend(fs.geometry.notes)
            sp.used_bytes = total(_clipped(fs.used_extents(), sp.size))
            return
        if sp.fstype is None:
            encrypted = detect_encrypted(FileSource(fd, sp.start, sp.size))
            if encrypted:
                sp.notes.append(f"partition {sp.number}: {encrypted}")
    sp.method = "raw"
    sp.used_bytes = sp.size


def _replayed(sp: StreamPlan, fd: int, disk: str, fs: FileSystem) -> FileSystem:
    """``fs`` read through its replayed journal when replay works (``sp.overlay`` set), else
    ``fs`` as it is (every block used), with a note either way."""
    done = replay(disk, sp.number, sp.start, sp.size, sp.fstype)
    if done.overlay is not None:
        after = open_reader(fd, sp.start, sp.size, sp.fstype, sp.keep_system_files, done.overlay)
        if after is not None and not after.journal_needs_recovery:
            sp.overlay = done.overlay
            sp.notes.append(done.note)
            return after
    sp.notes.append(done.note)
    return fs


def _clipped(extents: Iterator[Extent], size: int) -> Iterator[Extent]:
    for s, n in extents:
        if s >= size:
            return
        yield Extent(s, min(n, size - s))


def _reopened(sp: StreamPlan, fd: int) -> FileSystem:
    """The file system of a used-blocks stream, read again now (it must still be one)."""
    fs = open_reader(fd, sp.start, sp.size, sp.fstype, sp.keep_system_files, sp.overlay)
    if fs is None:
        raise DamagedFileSystem(f"partition {sp.number} changed while it was being read")
    return fs


def stream_zeroed(sp: StreamPlan, fd: int) -> list[tuple[int, int]]:
    """The used ranges of ``sp`` to image as zeros unread (FileSystem.zeroed_extents), read
    again from the file system now, as :func:`stream_extents` reads its used ranges."""
    if sp.method != "used-blocks":
        return []
    zeroed = (Extent(*r) for r in _reopened(sp, fd).zeroed_extents())
    return [(s, n) for s, n in _clipped(zeroed, sp.size)]


def stream_extents(sp: StreamPlan, fd: int) -> Iterator[tuple[int, int]]:
    """The extents of ``sp`` to keep, relative to its start (re-reads file system metadata)."""
    if sp.method == "layout":
        yield from sp.gap_extents or []
    elif sp.method == "swap-header":
        yield (0, min(SWAP_HEADER, sp.size))
    elif sp.method == "used-blocks":
        yield from _clipped(_reopened(sp, fd).used_extents(), sp.size)
    else:
        yield (0, sp.size)
