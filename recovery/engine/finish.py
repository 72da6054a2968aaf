"""What follows writing partitions, for restore and clone alike: recreate swap, grow the main
file system into its larger partition (never an NTFS that holds a hibernated Windows), point
moved NTFS and FAT boot sectors at their new start, check every file system, and report each
in one line. What each of those means for one file system is its home's business
(:class:`recovery.filesystems.base.Kind`); this module only runs them in order.

Lines that start with ``FAILED`` are failures; the callers turn them into a non-zero result.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from recovery.core.table import partition_node
from recovery.devices import blockio
from recovery.devices.partitions import udev_probing
from recovery.devices.tools import Need
from recovery.engine.progress import Progress
from recovery.errors import DeviceError
from recovery.filesystems.base import Kind, kind_of


@dataclass(frozen=True)
class Written:
    """One partition that was written and now needs finishing."""

    number: int
    """0 for a disk without a partition table (the file system is on the whole disk)."""
    fstype: str | None
    method: str
    """How its stream was imaged; finishing follows ``fstype`` (a swap-header stream is swap)."""
    grows: bool
    uuid: str | None = None
    label: str | None = None
    old_start: int = 0
    """Byte offset of the partition on the source disk."""
    new_start: int = 0
    """Byte offset on the target disk."""
    unchanged: bool = False
    """A delta restore or clone wrote nothing into it: every byte it must hold was measured to
    be there already (engine/delta.py), so it is left as it is, neither finished nor checked."""


def wait_node(node: str) -> None:
    for _ in range(100):
        if blockio.is_block_device(node):
            return
        time.sleep(0.05)
    raise DeviceError(
        f"{node} did not appear after writing the table: the kernel did not take "
        "the new partitions; reconnect the disk and check it with 'recovery disks'"
    )


def finish(disk: str, written: list[Written], progress: Progress) -> list[str]:
    """Finish every written partition through its file system's home, and refresh udev.

    For each, in this order: fix what names the old start (a moved NTFS or FAT), recreate what
    was not imaged (swap), grow it when its partition grew and it can; then check each, while
    udev probes the disk. A partition a delta run did not write (:attr:`Written.unchanged`) is
    only reported. The lines come partition by partition.
    """
    lines: list[list[str]] = []
    to_check: list[tuple[list[str], Kind, str]] = []

    def step(what: str) -> None:
        progress.step(what, 0)

    for w in written:
        node = disk if w.number == 0 else partition_node(disk, w.number)
        wait_node(node)
        kind = kind_of(w.fstype)
        lines.append(mine := [])
        if w.unchanged:
            # Checking it would only say again what the last check of it said: this run did
            # not touch it (a large data partition beside a changed system one takes minutes).
            mine.append(f"{node}: {w.fstype or 'partition'} already held the image, not written")
            continue
        if w.old_start != w.new_start:
            mine.extend(kind.after_move(node, w.new_start))
        mine.extend(kind.after_write(node, w.uuid, w.label))
        if w.grows and kind.can_grow:
            mine.extend(kind.grow(node, step))
        to_check.append((mine, kind, node))
    # Nothing writes the disk any more: udev probes it while the checks (which only read) run.
    with udev_probing(disk):
        for mine, kind, node in to_check:
            mine.extend(kind.check(node, step))
    return [line for mine in lines for line in mine]


def finish_needs(parts: Iterable[tuple[str | None, bool]], writes_table: bool) -> list[Need]:
    """The programs writing a table and finishing ``parts`` (TYPE, grows) will run.

    For plans to pass to :func:`recovery.devices.tools.require` before they are accepted.
    """
    needs = []
    if writes_table:
        why = "to write the partition table"
        needs += [Need("sfdisk", why), Need("partx", "to tell the kernel about the partitions")]
    for fstype, grows in parts:
        needs += kind_of(fstype).finish_needs(grows)
    return needs
