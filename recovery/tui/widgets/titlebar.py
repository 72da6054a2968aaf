"""The line at the top of every screen: where the person is, e.g. ``Disk Backup > Location``.

Textual's Header draws an icon the Linux console font lacks and a clock (which would make
snapshots depend on the time), so the TUI uses this instead.
"""

from __future__ import annotations

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

    def __init__(self, *parts: str) -> None:
        super().__init__(" > ".join(("recovery", *parts)), markup=False)
