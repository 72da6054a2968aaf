"""The location picker's table (Backups > Location, Disk Backup > Location, Open > Copy to) fits
its columns at 80x25 the moment its rows change (issue 12: refilled after disks changed, it drew
"/dev/loop", "vf", "not sea" on the console), and cuts only what does not fit."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from rich.cells import cell_len
from textual.pilot import Pilot

from recovery.engine.locations import Location
from recovery.tui.app import RecoveryApp
from recovery.tui.messages import DisksUpdated
from recovery.tui.screens.location import LocationScreen
from recovery.tui.widgets.fitted_table import CUT, FittedTable, cut, fit_widths
from tests.pilot import settle
from tests.unit.tui_fakes import FakeLocations, fake_backends

GiB = 1024**3
MiB = 1024**2

LONG = [
    Location("/dev/loop12p1", "EFI system", "vfat", 40 * MiB, None, None),
    Location("/dev/loop12p2", "root", "ext4", 300 * MiB, None, None),
    Location("/dev/nvme0n1p12", "Microsoft basic data", "crypto_LUKS", 1900 * GiB, None, None),
    Location(
        "/dev/sdc1",
        "T7",
        "exfat",
        931 * GiB,
        "/run/recovery/mnt/sdc1",
        512 * GiB,
        ("/run/recovery/mnt/sdc1/office/laptop/recovery-backups",),
    ),
]


@dataclass
class ChangingLocations(FakeLocations):
    """The fake's three partitions first; after disks change, the LONG ones."""

    changed: bool = False

    def candidates(self, disks: list[Any]) -> list[Location]:
        return list(LONG) if self.changed else super().candidates(disks)


def test_fit_widths_gives_way_in_order_never_below_the_heading() -> None:
    headings = ["Partition", "Label", "FS"]
    rows = [["/dev/nvme0n1p12", "Microsoft basic data", "crypto_LUKS"]]
    assert fit_widths(headings, rows, 100, shrink=[1, 0]) == [15, 20, 11]
    assert fit_widths(headings, rows, 40, shrink=[1, 0]) == [15, 14, 11]
    assert fit_widths(headings, rows, 30, shrink=[1, 0]) == [14, 5, 11]
    assert fit_widths(headings, rows, 10, shrink=[1, 0]) == [9, 5, 11]  # headings stay whole
    assert cut("Microsoft basic data", 14) == "Microsoft bas" + CUT
    assert cut("root", 4) == "root"
    assert cell_len(cut("日本語のラベル", 6)) <= 6


def look_at_rows_before_idle(size: tuple[int, int]) -> list[tuple[str, int, list[str]]]:
    """Backups > Location, then disks change: (heading, width, cells) of each column, read
    right after the new rows are set, before the table has been idle once."""
    locations = ChangingLocations()
    app = RecoveryApp(fake_backends(locations=locations), cursor_blink=False)
    seen: list[tuple[str, int, list[str]]] = []

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            await pilot.press("5")
            await settle(pilot)
            screen = app.screen
            assert isinstance(screen, LocationScreen)
            locations.changed = True
            table = screen.query_one("#locations", FittedTable)
            screen.post_message(DisksUpdated([]))
            await app.workers.wait_for_complete()
            # The worker's result is a message; take the table as soon as it has been shown.
            for _ in range(100):
                if table.row_count == len(LONG) + 1:
                    break
                await asyncio.sleep(0.01)
            for column in table.ordered_columns:
                cells = [str(c) for c in table.get_column(column.key)]
                seen.append((str(column.label), column.get_render_width(table), cells))

    asyncio.run(main())
    return seen


@pytest.mark.parametrize("size", [(80, 25), (120, 40)])
def test_columns_fit_their_cells_as_soon_as_the_rows_change(size: tuple[int, int]) -> None:
    seen = look_at_rows_before_idle(size)
    table_width = size[0] - 2  # the table's margin
    assert sum(width for _, width, _ in seen) <= table_width
    for heading, width, cells in seen:
        for cell in [heading, *cells]:
            assert cell_len(cell) <= width - 2, (heading, width, cell)  # 1 of padding each side
    columns = {heading: cells for heading, _, cells in seen}
    # What must be read whole is whole; only a long label or location path is cut.
    assert columns["Partition"][:3] == ["/dev/loop12p1", "/dev/loop12p2", "/dev/nvme0n1p12"]
    assert columns["FS"][:3] == ["vfat", "ext4", "crypto_LUKS"]
    assert columns["Backups"][:3] == ["not searched"] * 3
    assert columns["Size"][2] == "1.86 TiB"
    if size[0] >= 120:
        assert columns["Label"][2] == "Microsoft basic data"
        assert not any(CUT in c for _, _, cells in seen for c in cells)


def after_disks_changed(locations: ChangingLocations) -> Any:
    async def run(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        await pilot.press("5")
        await settle(pilot)
        locations.changed = True
        pilot.app.screen.post_message(DisksUpdated([]))
        await settle(pilot)

    return run


@pytest.mark.parametrize("console", [False, True], ids=["80x25", "linux_console"])
def test_location_picker_after_disks_changed(snap_compare: Any, console: bool) -> None:
    """Every column readable at 80x25; the long label is the one cut."""
    locations = ChangingLocations()
    app = RecoveryApp(fake_backends(locations=locations), console=console, cursor_blink=False)
    assert snap_compare(app, terminal_size=(80, 25), run_before=after_disks_changed(locations))
