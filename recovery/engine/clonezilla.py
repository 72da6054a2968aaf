"""Clonezilla images as a restore source: list, verify, restore (docs/CLONEZILLA.md).

Called by the CLI when ``REPO::IMAGE`` names a Clonezilla image folder. It follows the shape
of our own restore: ``plan_restore`` reads only (the folder's description, every partclone
header, the target's safety rules, the layout on the target through core.table.plan_layout);
``run_restore`` writes the table, the boot code (and, for MBR disks, the data Clonezilla saved
between the MBR and the first partition), then streams each partition's used blocks, each run
written only after the partclone checksum covering it was checked, and ends like our restore
(engine.finish: swap recreated with its UUID and label, the main file system grown, every file
system checked).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from recovery.core.table import Layout, plan_layout
from recovery.core.units import human_size
from recovery.devices import blockio
from recovery.devices.partitions import refresh_udev, tell_kernel, write_table
from recovery.engine.delta import EXT_FSTYPES, hold_superblock
from recovery.engine.finish import Written, finish
from recovery.engine.plans import ImageInfo, PartitionSummary, RestoreResult, VerifyResult
from recovery.engine.progress import CancelToken, Progress
from recovery.engine.targets import Target, check_target
from recovery.errors import ImageNotFound, PeerImageError, Refused
from recovery.filesystems.ext4 import SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE
from recovery.peers import partclone
from recovery.peers.clonezilla import (
    ClonezillaImage,
    PartitionImage,
    SwapInfo,
    image_folders,
    open_image,
)
from recovery.peers.streams import ImageStream

MAX_HIDDEN = 1 << 30
"""Largest hidden-data-after-MBR file: Clonezilla skips saving a gap of
``hidden_data_after_mbr_limit`` (drbl-ocs.conf: 1024 MB) or more."""
FSTYPES = {"fat12": "vfat", "fat16": "vfat", "fat32": "vfat", "fat": "vfat", "ntfs3": "ntfs"}


def our_fstype(name: str) -> str:
    """Clonezilla's file system name (from the image file name) as blkid would say it."""
    return FSTYPES.get(name.lower(), name.lower())


def find_image(location: str, name: str) -> ClonezillaImage:
    folder = Path(location) / name
    if "/" in name or not folder.is_dir():
        raise ImageNotFound(f"no image '{name}' in {location}")
    image = open_image(folder)
    if image.lvm:
        raise PeerImageError(
            f"{folder} is a Clonezilla image of LVM volumes (lvm_vg_dev.list), which recovery "
            "does not restore yet; restore it with Clonezilla"
        )
    return image


# -- listing ---------------------------------------------------------------------------------


def list_images(location: str) -> list[ImageInfo]:
    """The Clonezilla images in ``location`` as :class:`ImageInfo` (status ``clonezilla``);
    a folder that cannot be read is listed with status ``damaged: ...``."""
    out = []
    for folder in image_folders(Path(location)):
        try:
            image = open_image(folder)
        except PeerImageError as e:
            out.append(
                ImageInfo(folder.name, "", "", None, None, 0, None, (), 0, 0, f"damaged: {e}")
            )
            continue
        out.append(image_info(image))
    return out


def image_info(image: ClonezillaImage) -> ImageInfo:
    table = image.table
    ss = table.sector_size if table else 512
    entries = {e.number: e for e in table.entries} if table else {}
    parts = []
    for p in image.partitions:
        e = entries.get(p.number)
        parts.append(
            PartitionSummary(
                number=p.number,
                start=e.start * ss if e else 0,
                size=e.size * ss if e else 0,
                fstype=our_fstype(p.fstype),
                label=None,
                stored=p.stored_size,
            )
        )
    for s in image.swaps:
        e = entries.get(s.number)
        parts.append(
            PartitionSummary(
                s.number, e.start * ss if e else 0, e.size * ss if e else 0, "swap", s.label, 0
            )
        )
    parts.sort(key=lambda p: p.number)
    data = 0
    for p in image.partitions:
        data += _data_bytes(p)
    status = "clonezilla" + (" (LVM, not restorable here)" if image.lvm else "")
    return ImageInfo(
        name=image.name,
        created=image.created,
        source_path=f"/dev/{image.disk}",
        source_model=None,
        source_serial=None,
        source_size=image.disk_size,
        table=table.label if table else None,
        partitions=tuple(parts),
        data_size=data,
        stored_size=image.stored_size,
        status=status,
    )


def _data_bytes(part: PartitionImage) -> int:
    """Used bytes a partclone image holds, from its header (0 when unreadable or dd)."""
    if part.kind != "partclone":
        return 0
    try:
        with ImageStream(part.files) as stream:
            return partclone.read_header(stream).used_bytes
    except PeerImageError:
        return 0


# -- reading a partition image -----------------------------------------------------------------


def partition_runs(
    part: PartitionImage, verify: bool = True
) -> tuple[int, int, Iterator[tuple[int, bytes]], ImageStream]:
    """(bytes of the partition image, bytes of data, the runs, the open stream).

    The caller closes the stream.
    """
    stream = ImageStream(part.files)
    try:
        head = stream.read_some(len(partclone.MAGIC))
        if part.kind == "partclone" and head != partclone.MAGIC:
            raise PeerImageError(f"{part.files[0]}: not a partclone image (no partclone magic)")
        if head == partclone.MAGIC and part.kind == "partclone":
            stream.close()
            stream = ImageStream(part.files)
            reader = partclone.PartcloneReader(stream, verify=verify)
            h = reader.header
            return h.device_size, h.used_bytes, reader.runs(), stream

        def raw(first: bytes) -> Iterator[tuple[int, bytes]]:
            pos = 0
            data = first
            while data:
                yield pos, data
                pos += len(data)
                data = stream.read_some(partclone.RUN_LIMIT)

        return 0, 0, raw(head), stream
    except BaseException:
        stream.close()
        raise


# -- verify ----------------------------------------------------------------------------------


def verify_image(location: str, name: str, progress: Progress, cancel: CancelToken) -> VerifyResult:
    """Read every partition image through, checking every partclone checksum."""
    image = find_image(location, name)
    problems: list[str] = []
    checked = 0
    for p in image.partitions:
        cancel.check()
        try:
            _size, used, runs, stream = partition_runs(p)
            with stream:
                progress.step(f"checking partition {p.number} ({p.fstype})", used)
                for _off, data in runs:
                    checked += len(data)
                    progress.advance(len(data))
                    cancel.check()
        except PeerImageError as e:
            problems.append(f"partition {p.number}: {e.message}")
    return VerifyResult(name, not problems, checked, tuple(problems))


# -- restore ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerWrite:
    number: int
    fstype: str | None
    source_start: int
    target_start: int
    target_size: int
    source_size: int
    image: PartitionImage | None
    swap: SwapInfo | None
    data_bytes: int
    """Used bytes the image holds (from the partclone header), for progress."""

    @property
    def grows(self) -> bool:
        return self.target_size > self.source_size


@dataclass
class ClonezillaRestorePlan:
    location: str
    image: ClonezillaImage
    target_info: Target
    layout: Layout
    writes: list[PeerWrite]
    notes: list[str] = field(default_factory=list)

    @property
    def target(self) -> str:
        return self.target_info.path

    @property
    def total_bytes(self) -> int:
        return sum(w.data_bytes for w in self.writes)

    def describe(self) -> list[str]:
        assert self.image.table is not None
        lines = [
            f"Restore Clonezilla image '{self.image.name}' from {self.location}",
            *self.target_info.describe(),
            f"  write a new {self.image.table.label} partition table"
            + (" (identical layout)" if self.layout.same_geometry else ""),
        ]
        for w in self.writes:
            if w.swap is not None:
                what = f"  partition {w.number} (swap): recreated with its UUID and label"
            else:
                what = (
                    f"  partition {w.number} ({w.fstype or 'unknown'}): "
                    f"{human_size(w.data_bytes)} of data at byte {w.target_start}, "
                    f"size {human_size(w.target_size)}"
                )
            if w.grows and w.swap is None:
                what += f" (grown from {human_size(w.source_size)})"
            lines.append(what)
        lines.extend(f"  note: {n}" for n in self.notes)
        return lines


def plan_restore(location: str, name: str, target: str) -> ClonezillaRestorePlan:
    image = find_image(location, name)
    table = image.table
    if table is None:
        raise PeerImageError(
            f"Clonezilla image {name} holds no partition table; nothing to restore"
        )
    tgt = check_target(target)
    if blockio.holds_path(target, location):
        raise Refused(
            f"the Clonezilla image {location}/{name} is on {target}: restoring there would "
            "destroy it; choose another disk; nothing was written"
        )
    if table.sector_size != tgt.sector_size:
        raise Refused(
            f"the image was taken from a disk with {table.sector_size}-byte sectors and "
            f"{target} has {tgt.sector_size}-byte sectors: restore to a disk with the same "
            "sector size"
        )
    fstypes: dict[int, str | None] = {p.number: our_fstype(p.fstype) for p in image.partitions}
    fstypes.update({s.number: "swap" for s in image.swaps})
    source_size = image.disk_size or tgt.size
    layout = plan_layout(table, source_size, tgt.size, fstypes)
    by_number = {p.number: p for p in image.partitions}
    swaps = {s.number: s for s in image.swaps}
    writes = []
    for m in layout.moves:
        part = by_number.get(m.number)
        swap = swaps.get(m.number)
        data = 0
        if part is not None:
            size, data, _runs, stream = partition_runs(part)
            stream.close()
            if size > m.new_size:
                raise PeerImageError(
                    f"Clonezilla image {name}: partition {m.number} holds {size} bytes but its "
                    f"table entry has room for {m.new_size}: the image is damaged; nothing was "
                    "written"
                )
        elif swap is None:
            continue
        writes.append(
            PeerWrite(
                m.number,
                (None if part.kind == "dd" else our_fstype(part.fstype)) if part else "swap",
                m.old_start,
                m.new_start,
                m.new_size,
                m.old_size,
                part,
                swap if part is None else None,
                data,
            )
        )
    notes = []
    if image.hidden_after_mbr is not None and table.label != "dos":
        notes.append("the data saved after the MBR is not written on a GPT disk (it holds the GPT)")
    return ClonezillaRestorePlan(location, image, tgt, layout, writes, notes)


def run_restore(
    plan: ClonezillaRestorePlan, progress: Progress, cancel: CancelToken
) -> RestoreResult:
    started = time.monotonic()
    written = 0
    cancel.check()
    fd = blockio.open_exclusive_write(plan.target)
    try:
        with blockio.disk_lock(fd):
            written += _write_boot_area(fd, plan, progress)
            for w in plan.writes:
                if w.image is None:
                    continue
                cancel.check()
                written += _write_partition(fd, w, w.image, progress, cancel)
            blockio.flush(fd, plan.target)
            tell_kernel(plan.target)
    except PeerImageError as e:
        raise PeerImageError(
            f"{e.message}; the restore stopped before writing damaged data, and {plan.target} "
            "is incomplete: restore another image of this disk"
        ) from e
    finally:
        os.close(fd)
    refresh_udev(plan.target)
    done = [
        Written(
            number=w.number,
            fstype=w.fstype,
            method="swap-header" if w.swap is not None else "used-blocks",
            grows=w.grows,
            uuid=w.swap.uuid if w.swap else None,
            label=w.swap.label if w.swap else None,
            old_start=w.source_start,
            new_start=w.target_start,
        )
        for w in plan.writes
    ]
    checks = finish(plan.target, done, progress)
    ok = all(not c.startswith("FAILED") for c in checks)
    return RestoreResult(
        plan.image.name, plan.target, written, time.monotonic() - started, tuple(checks), ok
    )


def _read_small(path: Path, limit: int) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise PeerImageError(f"cannot read {path}: {e.strerror}") from e
    if len(data) > limit:
        raise PeerImageError(f"{path} is larger than it can be ({limit} bytes at most)")
    return data


def _write_boot_area(fd: int, plan: ClonezillaRestorePlan, progress: Progress) -> int:
    image = plan.image
    table = plan.layout.table
    ss = table.sector_size
    progress.step("writing the partition table and boot area", 0)
    first = min((m.new_start for m in plan.layout.moves), default=0)
    n = 0
    mbr = _read_small(image.mbr, ss) if image.mbr else b""
    if image.hidden_after_mbr is not None and table.label == "dos" and first > ss:
        n += _write_hidden(fd, image.hidden_after_mbr, ss, first)
    write_table(fd, plan.target, table)
    if len(mbr) >= 440:
        # sfdisk writes the table but not the boot code before it (MBR bytes 0-439).
        blockio.pwrite_all(fd, mbr[:440], 0)
        n += 440
    return n


def _write_hidden(fd: int, path: Path, start: int, end: int) -> int:
    """The saved sectors after the MBR, at ``start``, cut at ``end`` (the first partition)."""
    written = 0
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size > MAX_HIDDEN:
                raise PeerImageError(f"{path} is larger than Clonezilla saves ({MAX_HIDDEN} bytes)")
            while start + written < end:
                piece = f.read(min(4 << 20, end - start - written))
                if not piece:
                    break
                blockio.pwrite_all(fd, piece, start + written)
                written += len(piece)
    except OSError as e:
        raise PeerImageError(f"cannot read {path}: {e.strerror}") from e
    return written


def _write_partition(
    fd: int, w: PeerWrite, part: PartitionImage, progress: Progress, cancel: CancelToken
) -> int:
    progress.step(f"restoring partition {w.number} ({w.fstype or 'unknown'})", w.data_bytes)
    written = 0
    # An ext partition's primary superblock is overwritten first and written last, as our own
    # restores do (engine/delta.py, hold_superblock): cut short, it is no file system.
    held: bytearray | None = None
    if w.fstype in EXT_FSTYPES:
        hold_superblock(fd, w.target_start)
        held = bytearray()
    _size, _used, runs, stream = partition_runs(part)
    with stream:
        for off, data in runs:
            if off + len(data) > w.target_size:
                raise PeerImageError(
                    f"{part.files[0]}: data at byte {off} lies beyond its partition"
                )
            if held is not None and off < _SB_END and off + len(data) > _SB_START:
                data = _keep_superblock(held, off, data)
            try:
                blockio.pwrite_all(fd, data, w.target_start + off)
            except OSError as e:
                raise blockio.write_failed(fd, w.target_start + off, e) from e
            written += len(data)
            progress.advance(len(data))
            cancel.check()
    if held:
        blockio.flush(fd, "the target")
        blockio.pwrite_all(fd, held, w.target_start + _SB_START)
    return written


_SB_START, _SB_END = SUPERBLOCK_OFFSET, SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE


def _keep_superblock(held: bytearray, off: int, data: bytes) -> bytes:
    """``data`` (at partition byte ``off``) with the superblock's bytes zeroed; those bytes go
    into ``held``, which the caller writes once everything else is written."""
    lo, hi = max(off, _SB_START), min(off + len(data), _SB_END)
    if len(held) < _SB_END - _SB_START:
        held.extend(bytes(_SB_END - _SB_START - len(held)))
    held[lo - _SB_START : hi - _SB_START] = data[lo - off : hi - off]
    out = bytearray(data)
    out[lo - off : hi - off] = bytes(hi - lo)
    return bytes(out)
