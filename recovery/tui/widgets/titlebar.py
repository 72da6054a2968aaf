"""The line at the top of every screen: where the person is, e.g. ``Disk Backup > Location``,
and on the right the machine's network address (or "no network") when the app watches the
network.

Textual's Header draws an icon the Linux console font lacks and a clock (which would make
snapshots depend on the time), so the TUI uses this instead. The address is the app's
(:attr:`RecoveryApp.network_summary`), read when the bar is mounted and pushed to every bar when
it changes, so it updates by itself when DHCP answers.
"""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static


class TitleBar(Static):
    DEFAULT_CSS = """
    TitleBar {
        dock: top;
        height: 1;
        background: $primary;
        color: $text;
        text-style: bold;
        padding: 0 1;
    }
    """

    network: reactive[str] = reactive("")
    """Shown at the right end; empty shows nothing."""

    def __init__(self, *parts: str) -> None:
        super().__init__(markup=False)
        self.where = " > ".join(("recovery", *parts))

    def on_mount(self) -> None:
        self.network = getattr(self.app, "network_summary", "")

    def render(self) -> Text:
        right = f"net: {self.network}" if self.network else ""
        width = self.content_size.width
        left = self.where
        if right and len(left) + len(right) + 2 > width:
            left = left[: max(0, width - len(right) - 3)] + "~"
        gap = max(1, width - len(left) - len(right)) if right else 0
        return Text(left + " " * gap + right, no_wrap=True, overflow="ellipsis")
