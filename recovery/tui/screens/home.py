"""The first screen: every task one key away, each with a line saying what it does, and the
disks this machine has."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widget import Widget
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from recovery.tui.formatting import human_size
from recovery.tui.messages import DisksUpdated
from recovery.tui.screens.base import StepScreen
from recovery.tui.widgets.disk_table import disk_kind, disk_notes

# (key, action, name, what it does)
TASKS: tuple[tuple[str, str, str, str], ...] = (
    ("1", "system_backup", "System Backup", "Save the system disk's boot and OS partitions"),
    ("2", "disk_backup", "Disk Backup", "Save a whole disk, or chosen partitions, as an image"),
    ("3", "restore", "Restore", "Write an image back onto a disk, old or new"),
    ("4", "clone", "Clone", "Copy a disk, or only its system, to another disk"),
    ("5", "backups", "Backups", "See, verify, restore or remove saved images"),
    ("6", "file_backup", "File Backup", "Save chosen folders and files, e.g. documents"),
    ("n", "network", "Network", "Interfaces and addresses; ask DHCP again"),
    ("s", "shell", "Shell", "A root command line; type 'exit' to come back"),
    ("r", "reboot", "Reboot", "Restart the machine"),
    ("p", "power_off", "Power off", "Switch the machine off"),
    ("q", "quit", "Quit", "Leave this program"),
)


class HomeScreen(StepScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        *(Binding(key, action, name, show=key == "q") for key, action, name, _ in TASKS),
        Binding("escape", "noop", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()

    def compose_body(self) -> Iterable[Widget]:
        options = []
        # On the Linux console bold black is dark grey: the key would be grey on light grey.
        key_style = "reverse" if self.rapp.console_mode else "bold reverse"
        for key, action, name, what in TASKS:
            prompt = Text.assemble((f" {key} ", key_style), "  ", (f"{name:<15}", "bold"), what)
            options.append(Option(prompt, id=action))
        yield Static("What do you want to do? Press a key or pick with the arrows.", id="intro")
        yield OptionList(*options, id="tasks")
        yield Static("", id="disks-summary", markup=False)

    def on_mount(self) -> None:
        self.show_disks()

    def on_disks_updated(self, message: DisksUpdated) -> None:
        self.show_disks()

    def show_disks(self) -> None:
        app = self.rapp
        summary = self.query_one("#disks-summary", Static)
        if not app.disks_loaded:
            summary.update("Looking for disks...")
            return
        if not app.disks:
            summary.update("No disks found. Connect one; it appears here by itself.")
            return
        lines = [f"Disks found ({len(app.disks)}):"]
        for d in app.disks[:6]:
            notes = ", ".join(x for x in (disk_kind(d), disk_notes(d)) if x)
            model = (d.model or "")[:24]
            lines.append(f"  {d.path:<14} {human_size(d.size):>9}  {model:<24}  {notes}".rstrip())
        if len(app.disks) > 6:
            lines.append(f"  ... and {len(app.disks) - 6} more")
        if not app.backends.privileged:
            lines.append("Not running as root: disks cannot be read or written. Use sudo.")
        summary.update("\n".join(lines))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            getattr(self, f"action_{event.option.id}")()

    def action_noop(self) -> None:
        pass

    def action_system_backup(self) -> None:
        from recovery.tui.flows import start_system_backup

        start_system_backup(self.rapp)

    def action_disk_backup(self) -> None:
        from recovery.tui.flows import start_disk_backup

        start_disk_backup(self.rapp)

    def action_restore(self) -> None:
        from recovery.tui.flows import start_restore

        start_restore(self.rapp)

    def action_clone(self) -> None:
        from recovery.tui.flows import start_clone

        start_clone(self.rapp)

    def action_backups(self) -> None:
        from recovery.tui.flows import start_backups

        start_backups(self.rapp)

    def action_file_backup(self) -> None:
        from recovery.tui.flows import start_file_backup

        start_file_backup(self.rapp)

    def action_network(self) -> None:
        from recovery.tui.screens.network import NetworkScreen

        self.app.push_screen(NetworkScreen())

    def action_shell(self) -> None:
        from recovery.tui.flows import open_shell

        open_shell(self.rapp)

    def action_reboot(self) -> None:
        from recovery.tui.flows import power

        power(self.rapp, reboot=True)

    def action_power_off(self) -> None:
        from recovery.tui.flows import power

        power(self.rapp, reboot=False)

    def action_quit(self) -> None:
        self.rapp.action_quit_app()
