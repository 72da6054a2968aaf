"""The Network screen: the wired interfaces, their link state and addresses, "ask DHCP again"
for one of them, and setting its address by hand (``s``: :mod:`.static_address`).

Reached from the home screen (``n``). It shows what the app reads every few seconds
(:meth:`RecoveryApp.refresh_network`), so an address that arrives while it is open appears by
itself. The live system asks DHCP on every wired interface at boot; this screen never waits for
an answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.widget import Widget
from textual.widgets import DataTable, Static

from recovery.devices.network import Interface
from recovery.tui.messages import NetworkUpdated
from recovery.tui.screens.base import StepScreen


class NetworkScreen(StepScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("r", "renew", "Ask DHCP again"),
        Binding("s", "set_address", "Set address"),
        Binding("f5", "refresh", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__("Network")
        self._names: list[str] = []
        self._told = False
        """The status line says something about a renewal; the summary no longer replaces it."""

    def compose_body(self) -> Iterable[Widget]:
        yield Static(
            "Wired network interfaces. Each one asks for an address by DHCP by itself; plug "
            "in a cable and its address appears here. r asks again on the highlighted one; "
            "s sets its address by hand.",
            id="intro",
            markup=False,
        )
        yield DataTable(id="interfaces", cursor_type="row")
        yield Static("", id="status", markup=False)

    def on_mount(self) -> None:
        table = self.query_one("#interfaces", DataTable)
        table.add_column("Interface", key="name")
        table.add_column("Link", key="link")
        table.add_column("MAC", key="mac")
        table.add_column("Addresses", key="addresses")
        self.show(self.rapp.interfaces)
        table.focus()
        self.rapp.refresh_network()

    def on_network_updated(self, message: NetworkUpdated) -> None:
        self.show(message.interfaces)

    def show(self, interfaces: list[Interface]) -> None:
        table = self.query_one("#interfaces", DataTable)
        cursor = table.cursor_row
        table.clear()
        self._names = [i.name for i in interfaces]
        for i in interfaces:
            addresses = ", ".join(i.addresses) or ("waiting for DHCP" if i.up else "-")
            table.add_row(i.name, "up" if i.up else "no cable", i.mac, addresses, key=i.name)
        if interfaces:
            table.move_cursor(row=min(cursor, len(interfaces) - 1))
        status = self.query_one("#status", Static)
        if not interfaces:
            status.update("No wired network interface found.")
        elif not self._told:
            status.update(f"Network: {self.rapp.network_summary or 'not known yet'}.")

    def selected(self) -> str | None:
        table = self.query_one("#interfaces", DataTable)
        if not self._names or not 0 <= table.cursor_row < len(self._names):
            return None
        return self._names[table.cursor_row]

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_renew()

    def action_renew(self) -> None:
        name = self.selected()
        source = self.rapp.backends.network
        if name is None or source is None:
            return
        self._told = True
        self.query_one("#status", Static).update(f"Asking for an address on {name} again...")
        self.run_job(f"renew:{name}", source.renew, name)

    def action_set_address(self) -> None:
        from recovery.tui.screens.static_address import StaticAddressScreen

        name = self.selected()
        interface = next((i for i in self.rapp.interfaces if i.name == name), None)
        if interface is None or self.rapp.backends.network is None:
            return
        self.app.push_screen(StaticAddressScreen(interface))

    def tell(self, text: str) -> None:
        """A line about what was just done, kept until something else is said."""
        self._told = True
        self.query_one("#status", Static).update(text)

    def action_refresh(self) -> None:
        self.rapp.refresh_network()

    def job_done(self, tag: str, result: object) -> None:
        name = tag.partition(":")[2]
        self.query_one("#status", Static).update(
            f"Asked DHCP again on {name}; the address appears here when the server answers."
        )
        self.rapp.refresh_network()

    def job_failed(self, tag: str, error: BaseException) -> None:
        super().job_failed(tag, error)
        self.query_one("#status", Static).update("")
