"""Pick a disk: the table of disks, kept current as disks are plugged in or removed."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.widget import Widget
from textual.widgets import DataTable, Static

from recovery.devices.model import Disk
from recovery.tui.messages import DisksUpdated
from recovery.tui.screens.base import StepScreen
from recovery.tui.screens.dialogs import InfoScreen
from recovery.tui.widgets.disk_table import DiskTable


class DiskPickerScreen(StepScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("enter", "pick", "Choose", show=True),
        Binding("f5", "refresh", "Refresh"),
    ]

    def __init__(
        self,
        title: tuple[str, ...],
        intro: str,
        on_pick: Callable[[Disk], None],
        *,
        select: str | None = None,
        refuse: Callable[[Disk], str | None] | None = None,
    ) -> None:
        super().__init__(*title)
        self._intro = intro
        self._on_pick = on_pick
        self._select = select
        self._refuse = refuse

    def compose_body(self) -> Iterable[Widget]:
        yield Static(self._intro, id="intro", markup=False)
        yield DiskTable(id="disks")
        yield Static("", id="status", markup=False)

    def on_mount(self) -> None:
        self.show_disks(self.rapp.disks)
        self.query_one(DiskTable).focus()

    def on_disks_updated(self, message: DisksUpdated) -> None:
        self.show_disks(message.disks)

    def show_disks(self, disks: list[Disk]) -> None:
        table = self.query_one(DiskTable)
        table.show(disks, select=self._select)
        self._select = None
        status = self.query_one("#status", Static)
        if not self.rapp.disks_loaded:
            status.update("Looking for disks...")
        elif not disks:
            status.update("No disks found. Connect one; it appears here by itself.")
        else:
            status.update(f"{len(disks)} disk(s). Connect or remove a disk and this list follows.")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_pick()

    def action_pick(self) -> None:
        disk = self.query_one(DiskTable).selected
        if disk is None:
            return
        reason = self._refuse(disk) if self._refuse else None
        if reason:
            self.app.push_screen(InfoScreen(f"Not {disk.path}", [reason]))
            return
        self._on_pick(disk)

    def action_refresh(self) -> None:
        self.rapp.refresh_disks()
