"""Clone: a disk, or only its system partitions, straight onto another disk.

Called through :mod:`recovery.engine.api`. Planned like a restore (same safety rules, same
layout rule: the main partition grows into a larger target, partitions after it move to the
end), but the data comes from the source disk: the used blocks that the file system readers
report, copied cell by cell in worker threads so reads and writes overlap. Each cell is read
back from the target right after it is written (O_DIRECT, so from the device) and compared
with what was read, so a bad cable or a failing target disk is caught before the person reboots
into it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace

from recovery.core.cells import Cell, cells
from recovery.core.layout import fits_unchanged
from recovery.core.table import Table, partition_node, plan_layout
from recovery.core.units import human_size
from recovery.devices import blockio
from recovery.devices.partitions import tell_kernel, write_table
from recovery.devices.tools import require
from recovery.engine.bootentry import add_entry, plan_offer
from recovery.engine.delta import EXT_FSTYPES, Delta, hold_superblock, measure_clone, same_table
from recovery.engine.finish import Written, finish, finish_needs
from recovery.engine.plans import ClonePlan, CloneResult, CloneStream, Question
from recovery.engine.progress import CancelToken, Progress
from recovery.engine.reading import SourceReader, describe_unreadable
from recovery.engine.shrink import plan_shrink, shrink_partition
from recovery.engine.sources import plan_sources, stream_extents, stream_zeroed
from recovery.engine.targets import check_still_same, check_target
from recovery.engine.workers import COPY_WORKERS, in_order
from recovery.errors import DeviceError, IntegrityError, Refused, UsageError
from recovery.filesystems.base import growable_numbers, kind_of

CELL_SIZE = 4 << 20  # large sequential reads and writes


def _new_ids(table: Table) -> Table:
    if table.label == "gpt":
        entries = tuple(replace(e, uuid=str(uuid.uuid4()).upper()) for e in table.entries)
        return replace(table, id=str(uuid.uuid4()).upper(), entries=entries)
    return replace(table, id=f"0x{int.from_bytes(os.urandom(4), 'little') or 1:08x}")


def plan_clone(
    source: str,
    target: str,
    system: bool = False,
    new_ids: bool = False,
    full: bool = False,
    force: bool = False,
    boot_entry: bool = True,
) -> ClonePlan:
    """``full``: copy every used cell even onto an earlier clone (engine/delta.py); ``force``:
    copy partitions mounted read-write too (the copy may be inconsistent); ``boot_entry``: offer
    a UEFI boot entry when one is missing (engine/bootentry.py)."""
    blockio.require_block_device(source)
    blockio.require_block_device(target)
    src_disk = blockio.whole_disk_of(source)
    if os.path.realpath(src_disk) != os.path.realpath(source):
        raise UsageError(f"{source} is a partition: clone copies whole disks; give {src_disk}")
    if blockio.sysfs_name(source) == blockio.sysfs_name(target):
        raise Refused(f"{source} and {target} are the same disk: choose another target")
    tgt = check_target(target)
    target_size, sector = tgt.size, tgt.sector_size
    src_name = blockio.sysfs_name(source)
    for holder in blockio.disks_holding_path(target):
        if blockio.sysfs_name(holder) == src_name:
            raise Refused(f"{target} lives on {source}: choose a target on another disk")

    partitions = None
    if system:
        from recovery.engine.system import system_partitions

        partitions = system_partitions([source])
    src = plan_sources([source], partitions, force=force)

    notes = [n for sp in src.streams for n in sp.notes]
    by_number = {sp.number: sp for sp in src.streams if sp.number is not None}
    layout = None
    copies: list[CloneStream] = []
    if src.table is None:
        (sp,) = by_number.values()
        if target_size < sp.size:
            raise Refused(
                f"{target} is too small: {human_size(target_size)}, the source needs "
                f"{human_size(sp.size)}"
            )
        copies.append(CloneStream(sp, 0, 0, sp.size))
    else:
        if src.table.sector_size != sector:
            raise Refused(
                f"{source} has {src.table.sector_size}-byte sectors and {target} has {sector}: "
                "clone onto a disk with the same sector size"
            )
        table = src.table
        if system:
            keep = set(by_number)
            kept = tuple(
                e
                for e in table.entries
                if e.number in keep
                or (e.extended and any(e.start <= table.entry(n).start < e.end for n in keep))
            )
            table = replace(table, entries=kept)
            dropped = sorted({e.number for e in src.table.data_entries} - keep)
            if dropped:
                notes.append(
                    "left behind (not system partitions): partition " + ", ".join(map(str, dropped))
                )
        fstypes = {n: sp.fstype for n, sp in by_number.items()}
        growable = growable_numbers(fstypes)
        if fits_unchanged(table, target_size):
            layout = plan_layout(table, src.disk_size, target_size, growable, fill=system)
        else:
            layout = plan_shrink(table, tgt, fstypes, _minimum_on(source, fstypes))
        if new_ids:
            layout = replace(layout, table=_new_ids(layout.table), same_geometry=False)
        for m in layout.moves:
            found = by_number.get(m.number)
            if found is not None:
                copies.append(CloneStream(found, m.number, m.new_start, m.new_size))
    require(finish_needs(((c.stream.fstype, c.grows) for c in copies), layout is not None))
    plan = ClonePlan(
        source=src,
        target_info=tgt,
        layout=layout,
        copies=tuple(copies),
        system=system,
        new_ids=new_ids,
        notes=tuple(notes),
    )
    if not full and layout is not None and same_table(target, layout.table):
        plan = replace(plan, delta=_measure(plan))
    offer, note = plan_offer(layout.table if layout is not None else None, boot_entry)
    if offer is not None or note is not None:
        plan = replace(plan, boot_entry=offer, notes=plan.notes + ((note,) if note else ()))
    return plan


def _measure(plan: ClonePlan) -> Delta:
    """What the target, an earlier clone of this source, already holds (engine/delta.py)."""
    fd = blockio.open_read(plan.source.disk)
    readers: list[SourceReader] = []
    try:
        placed = []
        for c in plan.copies:
            if c.grows or c.shrinks:
                continue  # resized again after the copy: copied whole
            sp = c.stream
            reader = SourceReader(
                fd,
                plan.source.disk,
                sp.start,
                CELL_SIZE,
                overlay=sp.overlay,
                zeroed=stream_zeroed(sp, fd),
            )
            readers.append(reader)
            todo = cells(stream_extents(sp, fd), CELL_SIZE, sp.size)
            placed.append((sp.id, sp.size, c.target_start, reader.read_cell, todo))
        return measure_clone(plan.target, CELL_SIZE, placed)
    finally:
        for reader in readers:
            reader.close()
        os.close(fd)


def run_clone(
    plan: ClonePlan, progress: Progress, cancel: CancelToken, ask: Question | None = None
) -> CloneResult:
    """``ask`` is asked whether to go on when the source has many unreadable areas (None: go
    on without asking)."""
    started = time.monotonic()
    copied = 0
    notes = [line for sp in plan.source.streams for line in sp.result_notes()]
    src_fd = blockio.open_read(plan.source.disk)
    try:
        dst_fd = blockio.open_exclusive_write(plan.target)
        try:
            with blockio.disk_lock(dst_fd):
                check_still_same(plan.target_info, dst_fd)
                if plan.layout is not None:
                    _write_layout(src_fd, dst_fd, plan)
                writer = blockio.DirectWriter(plan.target, dst_fd)
                try:
                    for c in plan.copies:
                        cancel.check()
                        copied += _copy_stream(
                            src_fd,
                            writer,
                            plan.target,
                            c,
                            progress,
                            cancel,
                            plan.source.disk,
                            ask,
                            notes,
                            plan.delta,
                        )
                finally:
                    writer.close()
                for c in plan.copies:
                    if c.shrinks:  # its front is copied; the rest is read from the source
                        shrink_partition(
                            dst_fd, plan.target, c.number, c.stream.fstype, c.target_start,
                            c.target_size, c.stream.size, _source_reader(src_fd, c), progress,
                        )  # fmt: skip
                blockio.flush(dst_fd, plan.target)
                if plan.layout is not None:
                    tell_kernel(plan.target)
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)
    written = [
        Written(
            c.number,
            c.stream.fstype,
            c.stream.method,
            c.grows,
            c.stream.uuid,
            c.stream.label,
            old_start=c.stream.start,
            new_start=c.target_start,
            unchanged=plan.delta is not None and plan.delta.untouched(c.stream.id),
        )
        for c in plan.copies
    ]
    checks = finish(plan.target, written, progress)
    ok = all(not c.startswith("FAILED") for c in checks)
    if plan.boot_entry is not None:
        checks.append(add_entry(plan.target, plan.boot_entry))
    return CloneResult(
        plan.source.disk,
        plan.target,
        copied,
        time.monotonic() - started,
        tuple(notes + checks),
        ok,
        plan.delta.matching_bytes if plan.delta is not None else 0,
    )


def _minimum_on(source: str, fstypes: dict[int, str | None]) -> Callable[[int], int]:
    """How small partition N's file system can get, asked of its tool on the source."""

    def minimum(number: int) -> int:
        return kind_of(fstypes.get(number)).minimum_size(partition_node(source, number))

    return minimum


def _source_reader(src_fd: int, c: CloneStream) -> Callable[[int, int], bytes]:
    overlay = c.stream.overlay  # a replayed journal's pages (engine/journal.py)

    def read(offset: int, length: int) -> bytes:
        data = os.pread(src_fd, length, c.stream.start + offset)
        if overlay is None:
            return data
        buf = bytearray(data)
        overlay.patch(buf, offset)
        return bytes(buf)

    return read


def _front_cells(todo: Iterable[Cell], limit: int) -> Iterator[Cell]:
    for cell in todo:
        start = cell.number * CELL_SIZE
        if start >= limit:
            return
        if start + cell.size <= limit:
            yield cell
            continue
        size = limit - start
        pieces = tuple((o, min(n, size - o)) for o, n in cell.pieces if o < size)
        yield cell._replace(size=size, pieces=pieces)


def _write_layout(src_fd: int, dst_fd: int, plan: ClonePlan) -> None:
    assert plan.layout is not None
    layout_stream = next(sp for sp in plan.source.streams if sp.id == "disk")
    if plan.layout.same_geometry and not plan.system:
        for start, length in layout_stream.gap_extents or []:
            _copy_range(src_fd, dst_fd, start, start, length)
        return
    first = min((m.old_start for m in plan.layout.moves), default=0)
    _copy_range(src_fd, dst_fd, 0, 0, first)
    write_table(dst_fd, plan.target, plan.layout.table)
    boot = os.pread(src_fd, 440, 0)
    blockio.pwrite_all(dst_fd, boot, 0)


def _copy_range(src_fd: int, dst_fd: int, src: int, dst: int, length: int) -> None:
    done = 0
    while done < length:
        n = min(8 << 20, length - done)
        data = os.pread(src_fd, n, src + done)
        if not data:
            raise DeviceError(f"the source ended early at byte {src + done}")
        blockio.pwrite_all(dst_fd, data, dst + done)
        done += len(data)


def _copy_stream(
    src_fd: int,
    writer: blockio.DirectWriter,
    target: str,
    c: CloneStream,
    progress: Progress,
    cancel: CancelToken,
    disk: str,
    ask: Question | None,
    notes: list[str],
    delta: Delta | None = None,
) -> int:
    """Copy the used cells of one partition, each checked by reading it back from the target.

    The read-back follows each write at once (O_DIRECT, so it comes from the device, not the
    page cache) and is compared byte for byte: no second pass over the disk and no hashing.
    """
    sp = c.stream
    progress.step(f"copying partition {c.number} ({sp.fstype or 'unknown'})", sp.used_bytes)
    reader = SourceReader(
        src_fd,
        disk,
        sp.start,
        CELL_SIZE,
        ask=ask,
        overlay=sp.overlay,
        zeroed=stream_zeroed(sp, src_fd),
    )

    def work(cell: Cell) -> int:
        buf = reader.read_cell(cell)
        pos = c.target_start + cell.number * CELL_SIZE
        try:
            writer.write(buf, pos)
            same = writer.matches(buf, pos)
        except OSError as e:
            raise blockio.write_failed(writer.fallback_fd, pos, e) from e
        if not same:
            raise IntegrityError(
                f"partition {c.number} on {target} differs from the source at bytes "
                f"{cell.number * CELL_SIZE}-{cell.number * CELL_SIZE + cell.size - 1} after "
                "copying: the target disk or its connection is unreliable"
            )
        progress.advance(cell.used)
        return cell.size

    copied = 0
    todo: Iterator[Cell] = iter(cells(stream_extents(sp, src_fd), CELL_SIZE, sp.size))
    if c.shrinks:  # only the front: the next partition may lie beyond (docs/SHRINK.md)
        todo = _front_cells(todo, c.target_size)
    # An ext partition's first cell, with its superblock, is copied last (delta.py's
    # hold_superblock), unless nothing is copied into it at all.
    held: Cell | None = None
    if sp.fstype in EXT_FSTYPES and not (delta is not None and delta.untouched(sp.id)):
        held = next(todo, None)
        if held is not None and held.number != 0:
            todo, held = itertools.chain([held], todo), None
    if delta is not None:
        todo = (cell for cell in todo if delta.writes(sp.id, cell.number))
    with contextlib.closing(reader):
        if held is not None:
            hold_superblock(writer.fallback_fd, c.target_start)
        with contextlib.closing(in_order(work, todo, COPY_WORKERS, "clone", cancel)) as done:
            for _, size in done:
                copied += size
        if held is not None:
            blockio.flush(writer.fallback_fd, target)
            copied += work(held)
    if reader.unreadable:
        for line in describe_unreadable(disk, sp, reader.unreadable):
            progress.log(line)
            notes.append(line)
    return copied
