"""A progress bar drawn with background colour only (spaces), with the percentage on it.

Textual's ProgressBar draws with heavy lines and half-line glyphs the Linux console font lacks;
coloured spaces look the same everywhere and survive 8 and 16 colour modes.
"""

from __future__ import annotations

from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip
from textual.widget import Widget


class Meter(Widget):
    DEFAULT_CSS = """
    Meter {
        height: 1;
        background: $panel;
        color: $foreground;
    }
    Meter > .meter--done {
        background: $success;
        color: $background;
    }
    """
    COMPONENT_CLASSES: ClassVar[set[str]] = {"meter--done"}

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._done = 0
        self._total = 0

    def update(self, done: int, total: int) -> None:
        self._done, self._total = done, total
        self.refresh()

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if self._total > 0:
            fraction = min(1.0, max(0.0, self._done / self._total))
            text = f"{fraction * 100:.0f}%"
        else:
            fraction = 0.0
            text = ""
        line = text.center(width)[:width]
        cut = int(fraction * width)
        base = self.rich_style
        done_style = self.get_component_rich_style("meter--done")
        todo = Style(color=base.color, bgcolor=base.bgcolor)
        done = Style(color=done_style.color, bgcolor=done_style.bgcolor)
        return Strip([Segment(line[:cut], done), Segment(line[cut:], todo)], width)
