"""The table of disks every disk picker shows; keeps the cursor on the same disk when the list
changes (hot-plug)."""

from __future__ import annotations

from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist

from recovery.devices.model import Disk
from recovery.tui.formatting import human_size


def disk_kind(disk: Disk) -> str:
    if disk.transport == "usb":
        return "USB"
    if disk.removable:
        return "removable"
    return disk.transport or ""


def disk_notes(disk: Disk) -> str:
    if disk.boot_medium:
        return "this stick"
    if disk.mounted:
        return "mounted"
    return ""


class DiskTable(DataTable[str]):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False)
        self._disks: dict[str, Disk] = {}

    def on_mount(self) -> None:
        self.add_column("Device", key="device")
        self.add_column("Model", key="model")
        self.add_column("Size", key="size")
        self.add_column("Table", key="table")
        self.add_column("Parts", key="parts")
        self.add_column("Bus", key="bus")
        self.add_column("Notes", key="notes")

    def show(self, disks: list[Disk], select: str | None = None) -> None:
        """Replace the rows; the cursor stays on ``select`` or on the disk it was on."""
        keep = select or self.selected_path
        self.clear()
        self._disks = {d.path: d for d in disks}
        for d in disks:
            self.add_row(
                d.path,
                (d.model or "")[:20],
                human_size(d.size),
                d.table or "-",
                str(len(d.partitions)),
                disk_kind(d),
                disk_notes(d),
                key=d.path,
            )
        if keep is not None and keep in self._disks:
            self.move_cursor(row=self.get_row_index(keep))

    @property
    def selected_path(self) -> str | None:
        if not self._disks or self.row_count == 0:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except CellDoesNotExist:
            return None
        return key.value

    @property
    def selected(self) -> Disk | None:
        path = self.selected_path
        return self._disks.get(path) if path else None

    def disk(self, path: str) -> Disk | None:
        return self._disks.get(path)
