"""``recovery disks [--json]``: the disks of this machine, as a table or as JSON.

Called by :mod:`recovery.cli`. The JSON form is a contract (PRODUCT.md): ``{"disks": [...]}``,
each disk with path, size, model, serial, transport, removable, table and partitions (path,
number, start, size, fstype, label, uuid, partlabel, parttype, mountpoint), sizes in bytes;
more fields may be added, none renamed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from recovery.core.units import human_size
from recovery.devices.model import Disk, Partition

if TYPE_CHECKING:
    from recovery.engine.volumes import VolumeGroupInfo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print the disks as JSON (sizes in bytes)"
    )


def run(args: argparse.Namespace) -> int:
    from recovery.devices.disks import list_disks  # pyudev loads libudev: only when asked

    disks = list_disks()
    groups = volume_groups(disks)
    if args.json:
        out = []
        for d in disks:
            record = d.to_json()
            for p in record["partitions"]:
                if p["path"] in groups:
                    p["volume_group"] = groups[p["path"]].to_json()
            out.append(record)
        json.dump({"disks": out}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if not disks:
        print("No disks found. Plug in a disk, or check that it shows in 'lsblk'.")
        return 0
    sys.stdout.write(render(disks, groups))
    return 0


def volume_groups(disks: Sequence[Disk]) -> dict[str, VolumeGroupInfo]:
    """The LVM volume group of each partition that is a PV, by partition path."""
    from recovery.engine import api

    out = {}
    for d in disks:
        for p in d.partitions:
            if p.fstype == "LVM2_member":
                vg = api.lvm_volume_group(p.path, p.size)
                if vg is not None:
                    out[p.path] = vg
    return out


def _flags(disk: Disk) -> str:
    flags = []
    if disk.boot_medium:
        flags.append("boot medium")
    if disk.mounted:
        flags.append("mounted")
    if disk.removable:
        flags.append("removable")
    if disk.read_only:
        flags.append("read-only")
    return ", ".join(flags)


def _disk_row(disk: Disk) -> list[str]:
    model = disk.model or (f"file {disk.backing_file}" if disk.backing_file else "")
    table = disk.table or (disk.fstype or "")
    return [disk.path, human_size(disk.size), model, disk.transport or "", table, _flags(disk)]


def _partition_row(part: Partition) -> list[str]:
    fstype = "extended" if part.extended else (part.fstype or "")
    label = part.label or (f"[{part.partlabel}]" if part.partlabel else "")
    return [
        f"  {part.number:>2} {part.path}",
        human_size(part.size),
        fstype,
        label,
        part.mountpoint or "",
    ]


def _align(rows: Sequence[Sequence[str]], right: frozenset[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def render(disks: Sequence[Disk], groups: dict[str, VolumeGroupInfo] | None = None) -> str:
    """The human table: one line per disk, then its partitions indented under it.

    Disk lines and partition lines are aligned as two tables of their own, so a long model
    name does not push the partition columns apart.
    """
    disk_lines = _align(
        [["DEVICE", "SIZE", "MODEL", "TRAN", "TABLE", "FLAGS"], *(_disk_row(d) for d in disks)],
        right=frozenset({1}),
    )
    part_rows = [_partition_row(p) for d in disks for p in d.partitions]
    part_lines = iter(_align(part_rows, right=frozenset({1})) if part_rows else [])
    out = [disk_lines[0]]
    for disk, line in zip(disks, disk_lines[1:], strict=True):
        out.append(line)
        if disk.mountpoint:
            out.append(f"     (whole disk mounted on {disk.mountpoint})")
        for part in disk.partitions:
            out.append(next(part_lines))
            vg = (groups or {}).get(part.path)
            if vg is not None:
                out.extend(_volume_lines(vg))
    return "\n".join(out) + "\n"


def _volume_lines(vg: VolumeGroupInfo) -> list[str]:
    lines = [f"       volume group {vg.name}:"]
    for lv in vg.volumes:
        what = lv.fstype or (lv.kind if lv.kind != "striped" else "unknown content")
        label = f" {lv.label}" if lv.label else ""
        active = " (active: in use)" if lv.active else ""
        lines.append(f"         {lv.name:<12} {human_size(lv.size):>9}  {what}{label}{active}")
    return lines
