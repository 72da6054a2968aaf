"""Partition tables as plain data, and the layout of a table on a disk of another size.

The device layer reads tables with ``sfdisk --json`` (libfdisk parses GPT, protective MBR and
MBR with extended/logical partitions) and writes them with an sfdisk script; both are turned
into / made from :class:`Table` here. Nothing here touches a device.

Layout rule (restore and clone onto a larger disk): the *main* partition (the largest one whose
file system we can grow) takes the extra space; every partition that starts after it moves by the
same amount towards the end, keeping its size, its order and its alignment; an extended
partition that contains the main one grows with it. On a smaller disk the layout is kept when
every partition still fits; otherwise :mod:`recovery.core.layout` shrinks the main one.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, replace
from typing import Any

from recovery.core.units import human_size
from recovery.errors import RecoveryError, Refused

GPT_BACKUP_SECTORS = 33  # backup entries (32 sectors of 128 x 128 bytes) + backup header
ALIGN = 1 << 20

# MBR types that are containers, not file systems.
EXTENDED_TYPES = {"5", "f", "85", "0x5", "0xf", "0x85"}


@dataclass(frozen=True)
class Entry:
    number: int
    start: int
    """In sectors."""
    size: int
    """In sectors."""
    type: str
    uuid: str | None = None
    name: str | None = None
    attrs: str | None = None
    bootable: bool = False

    @property
    def end(self) -> int:
        return self.start + self.size

    @property
    def extended(self) -> bool:
        return self.type.lower() in EXTENDED_TYPES


@dataclass(frozen=True)
class Table:
    label: str
    """``gpt`` or ``dos``."""
    id: str | None
    sector_size: int
    first_lba: int | None
    last_lba: int | None
    entries: tuple[Entry, ...] = field(default_factory=tuple)

    def entry(self, number: int) -> Entry:
        for e in self.entries:
            if e.number == number:
                return e
        raise KeyError(number)

    @property
    def data_entries(self) -> tuple[Entry, ...]:
        """Partitions that hold data (not MBR extended containers), in disk order."""
        return tuple(sorted((e for e in self.entries if not e.extended), key=lambda e: e.start))

    def to_json(self) -> dict[str, Any]:
        parts = []
        for e in self.entries:
            p: dict[str, Any] = {
                "number": e.number,
                "start": e.start,
                "size": e.size,
                "type": e.type,
            }
            if e.uuid:
                p["uuid"] = e.uuid
            if e.name:
                p["name"] = e.name
            if e.attrs:
                p["attrs"] = e.attrs
            if e.bootable:
                p["bootable"] = True
            parts.append(p)
        return {
            "label": self.label,
            "id": self.id,
            "sectorsize": self.sector_size,
            "firstlba": self.first_lba,
            "lastlba": self.last_lba,
            "partitions": parts,
        }

    @classmethod
    def from_json(cls, d: Any) -> Table:
        """From our manifest form or from ``sfdisk --json``'s ``partitiontable`` object.

        The input is untrusted (a manifest from a backup location, names from a disk): every
        field is checked, and anything impossible raises :class:`InvalidTable`.
        """
        if not isinstance(d, dict):
            raise InvalidTable("the partition table is not an object")
        label = d.get("label")
        if label not in ("gpt", "dos"):
            raise InvalidTable(f"unknown partition table kind {label!r}")
        parts = d.get("partitions", [])
        if not isinstance(parts, list) or len(parts) > 256:
            raise InvalidTable("the partition list is not a list of at most 256 entries")
        entries = []
        for p in parts:
            if not isinstance(p, dict):
                raise InvalidTable("a partition entry is not an object")
            number = p.get("number")
            if number is None:
                node = _text(p.get("node"), "node")
                digits = node[len(node.rstrip("0123456789")) :]
                if not digits:
                    raise InvalidTable(f"partition node {node!r} has no number")
                number = int(digits)
            entries.append(
                Entry(
                    number=_int(number, "number", 1, 256),
                    start=_int(p.get("start"), "start", 0, 2**64),
                    size=_int(p.get("size"), "size", 1, 2**64),
                    type=_text(p.get("type"), "type"),
                    uuid=_optional_text(p.get("uuid"), "uuid"),
                    name=_optional_text(p.get("name"), "name"),
                    attrs=_optional_text(p.get("attrs"), "attrs"),
                    bootable=p.get("bootable", False) is True,
                )
            )
        if len({e.number for e in entries}) != len(entries):
            raise InvalidTable("two partitions have the same number")
        sector = _int(d.get("sectorsize", 512), "sectorsize", 512, 4096)
        if sector not in (512, 1024, 2048, 4096):
            raise InvalidTable(f"sector size {sector} is not possible")
        first = d.get("firstlba")
        last = d.get("lastlba")
        return cls(
            label=label,
            id=_optional_text(d.get("id"), "id"),
            sector_size=sector,
            first_lba=None if first is None else _int(first, "firstlba", 0, 2**64),
            last_lba=None if last is None else _int(last, "lastlba", 0, 2**64),
            entries=tuple(sorted(entries, key=lambda e: e.number)),
        )


class InvalidTable(RecoveryError):
    """A partition table description is damaged or impossible."""

    exit_code = 7


def _int(v: Any, what: str, low: int, high: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        raise InvalidTable(f"partition table field {what} is not a number from {low} to {high}")
    return v


def _text(v: Any, what: str) -> str:
    if not isinstance(v, str) or len(v) > 256:
        raise InvalidTable(f"partition table field {what} is not a short text")
    return v


def _optional_text(v: Any, what: str) -> str | None:
    return None if v is None else _text(v, what)


def _script_text(v: str) -> str:
    """A value safe inside an sfdisk script line: no quotes, no control characters."""
    return "".join(ch for ch in v if ch.isprintable() and ch not in '"\\')


def partition_node(disk: str, number: int) -> str:
    """The kernel's name for partition ``number`` of ``disk`` (sda1, nvme0n1p1, loop0p1)."""
    return f"{disk}p{number}" if disk[-1].isdigit() else f"{disk}{number}"


def sfdisk_script(table: Table, disk: str) -> str:
    """The sfdisk script that writes ``table`` onto ``disk``, identifiers included."""
    lines = [f"label: {table.label}"]
    if table.id:
        lines.append(f"label-id: {_script_text(table.id)}")
    lines.append("unit: sectors")
    lines.append(f"sector-size: {table.sector_size}")
    if table.label == "gpt":
        if table.first_lba is not None:
            lines.append(f"first-lba: {table.first_lba}")
        if table.last_lba is not None:
            lines.append(f"last-lba: {table.last_lba}")
    for e in sorted(table.entries, key=lambda e: e.number):
        fields = [f"start={e.start}", f"size={e.size}", f"type={_script_text(e.type)}"]
        if table.label == "gpt":
            if e.uuid:
                fields.append(f"uuid={_script_text(e.uuid)}")
            if e.name:
                fields.append(f'name="{_script_text(e.name)}"')
            if e.attrs:
                fields.append(f'attrs="{_script_text(e.attrs)}"')
        elif e.bootable:
            fields.append("bootable")
        lines.append(f"{partition_node(disk, e.number)} : " + ", ".join(fields))
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Move:
    number: int
    old_start: int
    """Bytes."""
    new_start: int
    old_size: int
    new_size: int

    @property
    def grown(self) -> bool:
        return self.new_size > self.old_size

    @property
    def shrunk(self) -> bool:
        return self.new_size < self.old_size

    @property
    def moved(self) -> bool:
        return self.new_start != self.old_start


@dataclass(frozen=True)
class Layout:
    table: Table
    moves: tuple[Move, ...]
    """One per data partition, in disk order."""
    main: int | None
    """Number of the partition that grows, or None."""
    same_geometry: bool
    """True when every partition keeps its place and the disk has the same size: the saved
    table and gaps can be written byte for byte."""
    shrunk: int | None = None
    """Number of the partition that shrinks onto a smaller disk (core/layout.py), or None."""

    def move(self, number: int) -> Move:
        for m in self.moves:
            if m.number == number:
                return m
        raise KeyError(number)


def usable_end(label: str, disk_sectors: int) -> int:
    """First sector past the area partitions may use."""
    return disk_sectors - GPT_BACKUP_SECTORS if label == "gpt" else disk_sectors


# Small partitions with a fixed role (EFI, BIOS boot, MSR, Windows recovery) never take extra
# space, even when they hold a file system we could grow.
FIXED_ROLE_TYPES = {
    "c12a7328-f81f-11d2-ba4b-00a0c93ec93b",
    "21686148-6449-6e6f-744e-656564454649",
    "e3c9e316-0b5c-4db8-817d-f92df00215ae",
    "de94bba4-06d1-4d40-a16a-bfd50179d6ac",
    "ef",
    "27",
}


def choose_main(table: Table, growable: Collection[int]) -> int | None:
    """The partition that takes extra space: the largest one holding an operating system or
    data, if we can grow its file system (its number is in ``growable``). When the largest
    cannot be grown (encrypted, unknown), nothing grows: a smaller partition taking the space
    would surprise the person."""
    candidates = [
        e for e in table.data_entries if e.type.lower().removeprefix("0x") not in FIXED_ROLE_TYPES
    ]
    if not candidates:
        return None
    main = max(candidates, key=lambda e: (e.size, -e.number))
    return main.number if main.number in growable else None


def plan_layout(
    table: Table,
    source_size: int,
    target_size: int,
    growable: Collection[int],
    grow: bool = True,
    fill: bool = False,
) -> Layout:
    """Lay ``table`` (from a disk of ``source_size`` bytes) out on a disk of ``target_size``.

    ``growable``: the numbers of the partitions whose file system can grow (the engine asks the
    file systems' homes, :func:`recovery.filesystems.base.growable_numbers`; core knows none).

    ``fill``: the main partition takes all the room after the last partition, not only what the
    larger disk adds (a system clone, whose table lost the data partitions, uses this).
    """
    ss = table.sector_size
    src_sectors = source_size // ss
    dst_sectors = target_size // ss
    src_end = usable_end(table.label, src_sectors)
    dst_end = usable_end(table.label, dst_sectors)
    last_used = max((e.end for e in table.entries), default=0)
    main = choose_main(table, growable) if grow else None

    delta = 0
    align = ALIGN // ss
    if fill and main is not None and dst_end > last_used:
        delta = (dst_end - last_used) // align * align
    elif dst_end > src_end and main is not None and src_end >= last_used:
        # Partitions after the main one keep their distance to the disk's end.
        delta = (dst_end - src_end) // align * align
    if dst_end < last_used:
        need = last_used * ss + (GPT_BACKUP_SECTORS * ss if table.label == "gpt" else 0)
        raise Refused(
            f"the target disk is too small: the image's partitions need {need} bytes "
            f"({human_size(need)}), the target has {target_size} ({human_size(target_size)}); "
            "choose a larger disk"
        )

    main_entry = table.entry(main) if main is not None and delta else None
    new_entries = []
    for e in table.entries:
        start, size = e.start, e.size
        if main_entry is not None:
            contains_main = e.extended and e.start <= main_entry.start < e.end
            if e.number == main_entry.number or contains_main:
                size += delta
            elif e.start > main_entry.start:
                start += delta
        new_entries.append(replace(e, start=start, size=size))
    new_table = replace(
        table,
        entries=tuple(new_entries),
        last_lba=(dst_end - 1) if table.label == "gpt" else table.last_lba,
    )
    moves = tuple(
        Move(e.number, e.start * ss, n.start * ss, e.size * ss, n.size * ss)
        for e, n in zip(table.entries, new_entries, strict=True)
        if not e.extended
    )
    moves = tuple(sorted(moves, key=lambda m: m.old_start))
    same = (
        (dst_sectors == src_sectors)
        and delta == 0
        and all(m.old_start == m.new_start and m.old_size == m.new_size for m in moves)
    )
    return Layout(new_table, moves, main if delta else None, same)
