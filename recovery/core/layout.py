"""A partition table laid out on a disk too small for it: the main partition shrinks.

Called by :mod:`recovery.engine.shrink` when :func:`recovery.core.table.plan_layout` finds that
the partitions do not fit the target unchanged (docs/SHRINK.md). Pure: the engine passes in what
it measured (the main file system's minimum size, the target's alignment grain).

Rule: the main partition keeps its start and loses ``cut`` sectors, the smallest multiple of
the alignment grain that lets the last partition end before the target's usable end; every
partition after it moves by ``cut`` towards the start (keeping size, order, identifiers and the
alignment it had), and an MBR extended container holding the main partition shrinks with it.
Every refusal names the smallest target that would work.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from recovery.core.table import GPT_BACKUP_SECTORS, Layout, Move, Table, usable_end
from recovery.core.units import human_size
from recovery.errors import Refused


@dataclass(frozen=True)
class Alignment:
    """Where partitions should start on a disk, in sectors: ``offset + k * grain``."""

    grain: int
    offset: int = 0

    def up(self, sector: int) -> int:
        return self.offset + -(-(sector - self.offset) // self.grain) * self.grain


def fits_unchanged(table: Table, target_size: int) -> bool:
    """Whether every partition of ``table`` fits on a disk of ``target_size`` bytes as it is."""
    last_used = max((e.end for e in table.entries), default=0)
    return last_used <= usable_end(table.label, target_size // table.sector_size)


def smallest_unchanged(table: Table) -> int:
    """Bytes of the smallest disk that holds ``table``'s partitions unchanged."""
    last_used = max((e.end for e in table.entries), default=0)
    backup = GPT_BACKUP_SECTORS if table.label == "gpt" else 0
    return (last_used + backup) * table.sector_size


def plan_shrunk_layout(
    table: Table,
    target_size: int,
    main: int,
    main_minimum: int,
    alignment: Alignment,
    what: str,
) -> Layout:
    """Lay ``table`` out on a disk of ``target_size`` bytes by shrinking partition ``main``.

    ``main_minimum``: the fewest bytes the main partition's file system can shrink to (its
    tool's figure). ``what`` names the target in refusals ("/dev/sdb").
    """
    ss = table.sector_size
    dst_end = usable_end(table.label, target_size // ss)
    last_used = max((e.end for e in table.entries), default=0)
    main_entry = table.entry(main)
    short = last_used - dst_end
    if short <= 0:
        raise ValueError("the partitions fit unchanged: nothing to shrink")
    # The first partition after the main one (or the main one's end, when it is the last)
    # lands on the target's alignment; the ones after it keep their distances.
    after = [e.start for e in table.entries if e.start > main_entry.start and not e.extended]
    edge = min(after) if after else main_entry.end
    cut = short + (edge - short - alignment.offset) % alignment.grain
    new_main = main_entry.size - cut
    minimum = max(1, -(-main_minimum // ss))
    if new_main < minimum:
        missing = -(-(minimum - new_main) // alignment.grain) * alignment.grain
        need = target_size + missing * ss
        raise Refused(
            f"{what} is too small: partition {main}'s file system cannot shrink below "
            f"{human_size(main_minimum)} and would get {human_size(max(new_main, 0) * ss)}; "
            f"the smallest target that works has {need} bytes ({human_size(need)}); "
            "choose a larger disk; nothing was written"
        )
    new_entries = []
    for e in table.entries:
        start, size = e.start, e.size
        contains_main = e.extended and e.start <= main_entry.start < e.end
        if e.number == main or contains_main:
            size -= cut
        elif e.start > main_entry.start:
            start -= cut
        new_entries.append(replace(e, start=start, size=size))
    if any(e.end > dst_end for e in new_entries):
        # Only a table whose partitions overlap gets here: one before the main one reaches
        # past the target's end, which no shrink of the main one can cure.
        raise Refused(
            f"{what} is too small: the partitions before partition {main} reach beyond its "
            "end; choose a larger disk; nothing was written"
        )
    new_table = replace(
        table,
        entries=tuple(new_entries),
        last_lba=(dst_end - 1) if table.label == "gpt" else table.last_lba,
    )
    moves = tuple(
        sorted(
            (
                Move(e.number, e.start * ss, n.start * ss, e.size * ss, n.size * ss)
                for e, n in zip(table.entries, new_entries, strict=True)
                if not e.extended
            ),
            key=lambda m: m.old_start,
        )
    )
    return Layout(new_table, moves, None, False, shrunk=main)
